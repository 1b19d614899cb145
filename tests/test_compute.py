"""Pretraining compute: one formula per model at every checkpoint, equal to the source's own compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddxr.sources.datadecide import _full_eval_variable, flops_per_token, read_datadecide
from ddxr.synthetic.curves import compute_at
from ddxr.synthetic.pretraining import generate_pretraining
from ddxr.vocabulary import PARAMS, SIZES

MODEL = ["params", "data", "seed"]
KEYS = [*MODEL, "step"]


@pytest.fixture(scope="module")
def grid() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the generator's full checkpoint grid (14 sizes × 25 recipes × every seed), one task to keep it cheap.

    The downstream rows of every model's last checkpoint but one are dropped as well, so every size has
    perplexity-only checkpoints (the generator itself has them for 4M only).
    """
    downstream, ppl = generate_pretraining(tasks=["hellaswag"])
    last = downstream.groupby(["params", "data", "seed"])["step"].transform("max")
    return downstream[downstream["step"] != last].reset_index(drop=True), ppl


def read_raw(folder: Path, downstream: pd.DataFrame, ppl: pd.DataFrame) -> pd.DataFrame:
    (folder / "datadecide").mkdir(parents=True)
    downstream.to_parquet(folder / "datadecide" / "downstream_eval.parquet", index=False)
    ppl.to_parquet(folder / "datadecide" / "ppl_eval.parquet", index=False)
    return read_datadecide(folder).table


def ppl_only(table: pd.DataFrame) -> pd.Series:
    return table["hellaswag"].isna() & table["pile_valppl"].notna()


def assert_one_formula_per_model(table: pd.DataFrame, per_token: pd.Series) -> None:
    trained = table[table["tokens"] > 0]
    ratio = trained["compute"] / trained["tokens"]
    assert (ratio.groupby([trained[name] for name in MODEL]).nunique() == 1).all()
    # bit for bit the source's 6 x N x tokens, including the checkpoints the source gave no compute for
    np.testing.assert_array_equal(table["compute"], table["params"].map(per_token) * table["tokens"])


def test_full_grid_compute_is_one_formula_per_model(grid, tmp_path: Path) -> None:
    downstream, ppl = grid
    table = read_raw(tmp_path, downstream, ppl)
    filled = ppl_only(table)
    assert set(table.loc[filled, "params"]) == set(PARAMS)  # every size has checkpoints without a source compute
    assert filled.sum() == len(table) - downstream[KEYS].drop_duplicates().shape[0]
    assert_one_formula_per_model(table, 6.0 * SIZES["true_params"].astype(float))
    # the source's compute at every checkpoint (the generator's formula): largest relative difference 0
    trained = table["tokens"] > 0
    relative = (table["compute"] / compute_at(table["params"].to_numpy(), table["tokens"].to_numpy()) - 1.0)[trained]
    assert relative.abs().max() == 0.0


def test_compute_follows_a_source_with_nominal_parameter_counts(grid, tmp_path: Path) -> None:
    downstream, ppl = (frame[frame["data"].isin(["Dolma1.7", "C4"])] for frame in grid)
    nominal = 6.0 * SIZES["params_numeric"]
    downstream = downstream.assign(compute=downstream["params"].map(nominal) * downstream["tokens"])
    table = read_raw(tmp_path, downstream, ppl)
    assert_one_formula_per_model(table, nominal)
    final = table[(table["params"] == "4M") & (table["step"] == 5735)]  # perplexity only in the generator too
    assert not final.empty and (final["compute"] == 24e6 * 5735 * 65536).all()


def test_flops_per_token_rule() -> None:
    params = ["4M", "4M", "1B", "1B", "20M"]
    tokens = [1e6, 2e6, 1e9, 0.0, 1e6]
    compute = [6.0 * 3_744_832 * 1e6, np.nan, 6e9 * 1e9 * (1 + 1e-12), 0.0, 7.0 * 19_101_888 * 1e6]
    per_token = flops_per_token(params, tokens, compute)
    assert list(per_token.index) == list(PARAMS)
    assert per_token["4M"] == 6.0 * 3_744_832  # true N, as DataDecide's tables
    assert per_token["1B"] == 6e9  # nominal N within 1e-9: the exact constant
    assert per_token["20M"] == pytest.approx(7.0 * 19_101_888, rel=1e-15)  # neither: as observed
    assert per_token["8M"] == 6.0 * 8_538_240  # no compute in the source: true N


def test_real_full_eval_values_are_kept_for_every_shared_column(real_samples: Path) -> None:
    path = real_samples / "pretrain_metrics_sample.parquet"
    source = pd.read_parquet(path)
    table = read_datadecide(path).table
    shared = {name: _full_eval_variable(name) for name in source.columns if _full_eval_variable(name) in table}
    assert {"tokens", "compute", "lr_at_step", "hellaswag", "pile_valppl"} <= set(shared.values())
    assert len(shared) > 1800
    merged = source.assign(step=source["step"].astype("int64")).merge(table, on=KEYS, suffixes=("_source", ""))
    assert len(merged) == len(source) == len(table)
    for name, variable in shared.items():
        expected = merged[name + "_source" if name == variable else name].to_numpy(np.float64)
        np.testing.assert_array_equal(merged[variable].to_numpy(np.float64), expected, err_msg=name)
    # the real tables compute with the true N (4M: 3,744,832), including the perplexity-only step 5,735
    assert_one_formula_per_model(table, 6.0 * SIZES["true_params"].astype(float))
    assert ppl_only(table).sum() == 1

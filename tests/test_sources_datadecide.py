"""Tests of ddxr.sources.datadecide: the real full_eval sample, the three inputs, the dict parser, errors, skips."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddxr.errors import SourceError
from ddxr.sources import datadecide
from ddxr.sources.datadecide import (
    DROPPED_METRIC_KEYS,
    METRIC_COLUMNS,
    STRICT_DICT,
    PretrainingSource,
    datadec_schedule,
    parse_metrics,
    read_datadecide,
    scheduled_lr,
)
from ddxr.synthetic.pretraining import generate_pretraining, to_full_eval, write_datadecide
from ddxr.vocabulary import METRICS, MMLU_TASKS, SIZES

SIZES_USED, RECIPES_USED = ["4M", "1B"], ["Dolma1.7", "C4"]
KEYS = ["params", "data", "seed", "step"]


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Return generated raw exports and the matching full_eval for 2 sizes × 2 recipes, in separate data folders."""
    root = tmp_path_factory.mktemp("datadecide")
    raw = write_datadecide(root / "raw", params=SIZES_USED, data=RECIPES_USED)
    full = write_datadecide(root / "full", params=SIZES_USED, data=RECIPES_USED, layouts=("full_eval",))
    return SimpleNamespace(root=root, raw=raw, full=full, table=read_datadecide(root / "raw").table)


@pytest.fixture(scope="module")
def small_raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return a tiny raw pair to corrupt: 4M, Dolma1.7, two tasks."""
    return generate_pretraining(["4M"], ["Dolma1.7"], tasks=["hellaswag", "mmlu_anatomy"])


def write_raw(folder: Path, downstream: pd.DataFrame, ppl: pd.DataFrame) -> Path:
    (folder / "datadecide").mkdir(parents=True, exist_ok=True)
    downstream.to_parquet(folder / "datadecide" / "downstream_eval.parquet", index=False)
    ppl.to_parquet(folder / "datadecide" / "ppl_eval.parquet", index=False)
    return folder


def row_of(table: pd.DataFrame, params: str, data: str, seed: int, step: int) -> pd.Series:
    match = table[(table["params"] == params) & (table["data"] == data) & (table["seed"] == seed)]
    return match[match["step"] == step].squeeze()


# ---------------------------------------------------------------------------------------------------------------
# the real full_eval sample
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(real_samples: Path) -> SimpleNamespace:
    path = real_samples / "pretrain_metrics_sample.parquet"
    return SimpleNamespace(evals=read_datadecide(path), raw=pd.read_parquet(path))


def test_real_sample_values(real: SimpleNamespace) -> None:
    table = real.evals.table
    assert table.shape == (34, 7 + len(METRIC_COLUMNS))
    assert real.evals.skipped.empty
    final = row_of(table, "4M", "Dolma1.7", 0, 5725)
    assert final["tokens"] == 375_193_600
    assert final["compute"] == pytest.approx(8.4302e15, rel=1e-5)
    assert final["hellaswag"] == pytest.approx(0.2474606652, abs=1e-10)
    assert final["pile_valppl"] == pytest.approx(143.9775543213, abs=1e-9)
    assert final["arc_easy_acc_per_char"] == pytest.approx(0.3026, abs=1e-4)
    assert row_of(table, "150M", "C4", 0, 1250)["tokens"] == 491_520_000
    assert row_of(table, "530M", "Dolma1.7", 0, 6250)[["tokens", "compute"]].tolist() == pytest.approx(
        [5_734_400_000, 1.823797e19], rel=1e-6
    )


def test_real_sample_ppl_only_checkpoint(real: SimpleNamespace) -> None:
    last = row_of(real.evals.table, "4M", "Dolma1.7", 0, 5735)
    downstream = [name for name in METRIC_COLUMNS if not name.endswith("_valppl")]
    assert last[downstream].isna().all()
    assert last["pile_valppl"] == pytest.approx(143.868576, abs=1e-6)


def test_real_sample_layout(real: SimpleNamespace) -> None:
    table = real.evals.table
    assert list(table.columns[:7]) == ["params", "data", "seed", "step", "tokens", "compute", "lr_at_step"]
    assert list(table.columns[7:]) == list(METRIC_COLUMNS)
    assert table[["seed", "step"]].dtypes.tolist() == [np.int64, np.int64]
    assert (table.dtypes.iloc[4:] == np.float64).all()
    assert isinstance(table.index, pd.RangeIndex)
    # numeric size order, then recipe order of the vocabulary, then step
    assert table[["params", "data"]].drop_duplicates().values.tolist() == [
        ["4M", "Dolma1.7"],
        ["150M", "C4"],
        ["150M", "DCLM-Baseline"],
        ["530M", "Dolma1.7"],
    ]
    assert table.groupby(["params", "data"])["step"].apply(lambda steps: steps.is_monotonic_increasing).all()
    assert not {"total_tokens", "cumulative_lr", "chinchilla", "true_model_size"} & set(table.columns)


def test_real_sample_keeps_schedule_and_mmlu_average(real: SimpleNamespace) -> None:
    table, raw = real.evals.table, real.raw.astype({"step": np.int64})
    real_columns = {"lr_at_step": "real_lr", "mmlu_average_primary_metric": "real_mmlu"}
    merged = table.merge(raw[[*KEYS, *real_columns]].rename(columns=real_columns), on=KEYS)
    assert len(merged) == len(table)
    np.testing.assert_array_equal(merged["lr_at_step"], merged["real_lr"])
    np.testing.assert_array_equal(merged["mmlu_average"], merged["real_mmlu"])
    np.testing.assert_allclose(table["mmlu_average"], table[list(MMLU_TASKS)].mean(axis=1), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# datadec's schedule formulas
# ---------------------------------------------------------------------------------------------------------------


def test_schedule_total_steps_match_datadec_for_every_size() -> None:
    documented = [5715, 9172, 13029, 15107, 21943, 24422, 14574, 29032, 29891, 38147, 45777, 57766, 63579, 69359]
    assert datadec_schedule()["total_steps"].tolist() == documented


def test_schedule_matches_real_sample(real: SimpleNamespace) -> None:
    raw = real.raw.drop_duplicates("params").set_index("params")
    columns = ["true_model_size", "batch_size", "total_tokens", "warmup_tokens", "total_steps", "warmup_steps"]
    pd.testing.assert_frame_equal(datadec_schedule(raw.index)[columns], raw[columns], check_names=False)
    np.testing.assert_allclose(datadec_schedule(raw.index)["lr_max"], raw["lr_max"], rtol=1e-12)
    np.testing.assert_allclose(
        scheduled_lr(real.raw["params"].to_numpy(), real.raw["step"].to_numpy()), real.raw["lr_at_step"], atol=1e-15
    )


def test_scheduled_lr_shape() -> None:
    schedule = datadec_schedule(["150M"]).iloc[0]
    lr = scheduled_lr("150M", [0, schedule["warmup_steps"], schedule["total_steps"], 10**6])
    assert lr.tolist() == pytest.approx([0.0, schedule["lr_max"], schedule["lr_final"], schedule["lr_final"]])


# ---------------------------------------------------------------------------------------------------------------
# the three inputs
# ---------------------------------------------------------------------------------------------------------------


def test_three_inputs_give_the_same_table(exports: SimpleNamespace) -> None:
    datadec_like = SimpleNamespace(full_eval=pd.read_parquet(exports.full / "full_eval.parquet"))
    for source in (exports.root / "full", exports.full, exports.full / "full_eval.parquet", datadec_like):
        evals = read_datadecide(source)
        pd.testing.assert_frame_equal(evals.table, exports.table, check_exact=False, rtol=1e-12)
        assert evals.skipped.empty


def test_raw_table_content(exports: SimpleNamespace) -> None:
    table = exports.table
    assert sorted(table.loc[table["params"] == "1B", "seed"].unique()) == [0, 1, 2, 3, 4]  # large aux 2/3: 3/4
    assert sorted(table.loc[table["params"] == "4M", "seed"].unique()) == [0, 1, 2]
    assert not table.duplicated(KEYS).any()
    assert len(table) == len(RECIPES_USED) * (7 * 3 + 29 * 5)  # 4M: 6 checkpoints + a ppl-only one; 1B: 29
    per_step = SIZES.loc[table["params"], "tokens_per_step"].to_numpy()
    np.testing.assert_array_equal(table["tokens"], table["step"] * per_step)
    np.testing.assert_array_equal(
        table["compute"], 6.0 * SIZES.loc[table["params"], "true_params"].to_numpy() * table["tokens"]
    )
    np.testing.assert_array_equal(
        table["lr_at_step"], scheduled_lr(table["params"].to_numpy(), table["step"].to_numpy())
    )


def test_batches_on_threads_give_the_same_table(exports: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datadecide, "_CHUNK_ROWS", 997)  # ≈20 batches, parsed on worker threads
    pd.testing.assert_frame_equal(read_datadecide(exports.root / "raw").table, exports.table)


def test_raw_ppl_only_checkpoints_are_kept(exports: SimpleNamespace) -> None:
    extra = exports.table[(exports.table["params"] == "4M") & (exports.table["step"] == 5735)]
    assert len(extra) == len(RECIPES_USED) * 3
    assert extra["hellaswag"].isna().all() and extra["pile_valppl"].notna().all()
    assert extra["tokens"].eq(5735 * 65536).all()
    assert exports.table.loc[exports.table["step"] == 0, "pile_valppl"].isna().all()


def test_raw_mmlu_average_is_mean_of_the_57_subtasks(exports: SimpleNamespace) -> None:
    table = exports.table
    for metric in ("acc_raw", "correct_prob", "margin_per_char"):
        subtasks = [f"{task}_{metric}" if metric != "acc_raw" else task for task in MMLU_TASKS]
        average = "mmlu_average" if metric == "acc_raw" else f"mmlu_average_{metric}"
        np.testing.assert_allclose(table[average], table[subtasks].mean(axis=1), rtol=1e-12)


def test_raw_metric_columns(exports: SimpleNamespace) -> None:
    downstream, _ = generate_pretraining(["1B"], ["C4"], tasks=["boolq", "arc_challenge"])
    values, _ = parse_metrics(downstream["metrics"])
    first = row_of(exports.table, "1B", "C4", 0, 0)
    assert first["arc_challenge"] == values.loc[1, "primary_metric"] == values.loc[1, "acc_uncond"]
    assert first["arc_challenge_correct_prob"] == values.loc[1, "correct_prob"]
    assert "boolq_acc_uncond" not in exports.table.columns  # NaN in every dict: not a variable
    assert exports.table["boolq_acc_per_byte"].notna().any() and first[["boolq_acc_per_byte"]].isna().all()


def test_mean_eval(exports: SimpleNamespace, tmp_path: Path) -> None:
    full_eval = pd.read_parquet(exports.full / "full_eval.parquet")
    numeric = full_eval.drop(columns=["seed"]).select_dtypes("number").columns.difference(["step"])
    mean_eval = full_eval.groupby(["params", "data", "step"], sort=False)[list(numeric)].mean().reset_index()
    (tmp_path / "datadecide").mkdir()
    mean_eval.to_parquet(tmp_path / "datadecide" / "mean_eval.parquet", index=False)
    table = read_datadecide(tmp_path, mean=True).table.set_index(["params", "data", "step"])
    assert "seed" not in table.columns
    expected = exports.table.groupby(["params", "data", "step"])[["hellaswag", "pile_valppl"]].mean()
    pd.testing.assert_frame_equal(table[["hellaswag", "pile_valppl"]], expected.loc[table.index], rtol=1e-12)


def test_full_eval_is_preferred_and_file_stats(exports: SimpleNamespace, tmp_path: Path) -> None:
    both = write_datadecide(tmp_path, params=["4M"], data=["C4"], layouts=("raw", "full_eval"))
    source = PretrainingSource(tmp_path)
    assert source.description == str(both / "full_eval.parquet")
    stats = PretrainingSource(exports.raw).file_stats()
    assert sorted(stats) == [str(exports.raw / "downstream_eval.parquet"), str(exports.raw / "ppl_eval.parquet")]
    assert stats[str(exports.raw / "ppl_eval.parquet")]["size"] == (exports.raw / "ppl_eval.parquet").stat().st_size
    empty = PretrainingSource(SimpleNamespace(full_eval=pd.DataFrame()))
    assert [entry["rows"] for entry in empty.file_stats().values()] == [0]  # objects: a content digest, no files


def test_file_stats_name_the_files_alike_from_any_folder(exports: SimpleNamespace, monkeypatch) -> None:
    absolute = PretrainingSource(exports.raw).file_stats()
    monkeypatch.chdir(exports.raw.parent)
    assert PretrainingSource(Path(exports.raw.name)).file_stats() == absolute
    monkeypatch.chdir(exports.raw)
    assert PretrainingSource(Path(".")).file_stats() == absolute


def test_float_steps_are_cast(small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    downstream, ppl = small_raw
    table = read_datadecide(write_raw(tmp_path, downstream.astype({"step": float}), ppl)).table
    assert table["step"].dtype == np.int64 and table["step"].max() == 5735


# ---------------------------------------------------------------------------------------------------------------
# the metrics dict parser
# ---------------------------------------------------------------------------------------------------------------

KEY_NAMES = st.sampled_from([*METRICS, *DROPPED_METRIC_KEYS])
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**62), max_value=2**62),
)
ITEMS = st.lists(st.tuples(KEY_NAMES, VALUES), max_size=12)


def render(items: list[tuple[str, object]], style: str) -> str:
    if style == "repr":
        return "{" + ", ".join(f"{key!r}: {value!r}" for key, value in items) + "}"
    return "{ " + " ,".join(f'"{key}" :{value!r}' for key, value in items) + " }"  # outside the strict grammar


def as_float(value: object) -> float:
    return math.nan if value is None else float(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(ITEMS, st.sampled_from(["repr", "loose"])), min_size=1, max_size=8))
def test_parser_matches_python_literals(rows: list[tuple[list[tuple[str, object]], str]]) -> None:
    texts = [render(items, style) for items, style in rows]
    # Python's repr takes the vectorized strict path, the loose spelling the literal fallback: both are checked
    assert pc.match_substring_regex(pa.array(texts), STRICT_DICT).to_pylist() == [s == "repr" for _, s in rows]
    values, problems = parse_metrics(texts)
    assert problems.empty
    assert len(values) == len(rows)
    for position, (items, _) in enumerate(rows):
        expected = {key: as_float(value) for key, value in items}  # a repeated key keeps its last value
        found = values.iloc[position].dropna().to_dict()
        assert found.keys() == {key for key, value in expected.items() if not math.isnan(value)}
        assert found == {key: value for key, value in expected.items() if not math.isnan(value)}


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.tuples(KEY_NAMES, st.floats(allow_nan=False, allow_infinity=False)), min_size=1, max_size=10))
def test_parser_agrees_with_literal_eval(items: list[tuple[str, float]]) -> None:
    text = render(items, "repr")
    values, _ = parse_metrics([text])
    assert values.iloc[0].dropna().to_dict() == ast.literal_eval(text)


@settings(max_examples=30, deadline=None)
@given(
    good=st.lists(ITEMS, min_size=1, max_size=5),
    bad=st.lists(
        st.sampled_from(["", "nan", "{'a': }", "[1, 2]", "{'a': 1", "__import__('os')", "{1: 2}"]), max_size=4
    ),
    where=st.randoms(use_true_random=False),
)
def test_parser_counts_unparseable_cells(good: list, bad: list[str], where) -> None:
    texts = [render(items, "repr") for items in good] + bad
    order = list(range(len(texts)))
    where.shuffle(order)
    values, problems = parse_metrics([texts[index] for index in order])
    bad_rows = sorted(position for position, index in enumerate(order) if index >= len(good))
    assert sorted(problems["row"]) == bad_rows  # one problem per bad cell, none for the good ones
    assert values.iloc[bad_rows].isna().all().all()


def test_parser_follows_python_number_syntax() -> None:
    texts = ["{'a': 0, 'b': 10, 'c': 00.5, 'd': 1.e5, 'e': -0.0}", "{'a': 007}", "{'a': .5, 'b': 1_000, 'c': 1E3}"]
    strict = pc.match_substring_regex(pa.array(texts), STRICT_DICT).to_pylist()
    assert strict == [True, False, False]
    values, problems = parse_metrics(texts)
    assert values.loc[0, ["a", "b", "c", "d", "e"]].tolist() == [0.0, 10.0, 0.5, 1e5, 0.0]
    assert problems["row"].tolist() == [1] and "is not a Python dict literal" in problems.loc[0, "reason"]
    assert values.loc[2, ["a", "b", "c"]].tolist() == [0.5, 1000.0, 1000.0]


def test_parser_special_values() -> None:
    values, problems = parse_metrics(
        [
            "{'acc_raw': nan, 'margin': -inf, 'no_answer': True, 'correct_prob': None, 'total_prob': 1e-05}",
            "{'acc_raw': 'high', 'margin': 2}",
            None,
        ]
    )
    assert values.loc[0, "margin"] == -math.inf and values.loc[0, "no_answer"] == 1.0
    assert values.loc[0, ["acc_raw", "correct_prob"]].isna().all() and values.loc[0, "total_prob"] == 1e-05
    assert values.loc[1, "margin"] == 2.0 and math.isnan(values.loc[1, "acc_raw"])
    assert problems.values.tolist() == [
        [1, "value of 'acc_raw' is 'high', not a number: left NaN"],
        [2, "unparseable metrics cell (empty cell): row skipped"],
    ]


# ---------------------------------------------------------------------------------------------------------------
# counted skips
# ---------------------------------------------------------------------------------------------------------------


def test_bad_cells_are_counted_skips(
    small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datadecide, "_CHUNK_ROWS", 4)  # the bad rows fall in different batches
    downstream, ppl = (frame.copy() for frame in small_raw)
    clean = read_datadecide(write_raw(tmp_path / "clean", downstream, ppl)).table
    downstream["metrics"] = downstream["metrics"].astype(object)
    downstream.loc[3, "metrics"] = "{'acc_raw': 0.3"  # truncated
    downstream.loc[5, "metrics"] = None
    downstream.loc[7, "task"] = "mmlu_unknown_subject"
    downstream.loc[8, "metrics"] = downstream.loc[8, "metrics"].replace("{", "{'brand_new_metric': 1.0, ", 1)
    evals = read_datadecide(write_raw(tmp_path / "dirty", downstream, ppl))
    skipped = evals.skipped.set_index("row")
    source = str(tmp_path / "dirty" / "datadecide" / "downstream_eval.parquet")
    assert (evals.skipped["source"] == source).all()
    assert skipped.loc[3, "column"] == "metrics" and "not a Python dict literal" in skipped.loc[3, "reason"]
    assert skipped.loc[5, "reason"] == "unparseable metrics cell (empty cell): row skipped"
    assert skipped.loc[7, "column"] == "task" and "unknown task 'mmlu_unknown_subject'" in skipped.loc[7, "reason"]
    assert skipped.loc["1 rows", "reason"].startswith("unknown metric key 'brand_new_metric'")
    assert len(evals.skipped) == 4
    # the three lost mmlu_anatomy cells (rows 3, 5, 7: three checkpoints) are NaN, everything else is untouched
    assert evals.table.loc[[1, 2, 3], "mmlu_anatomy"].isna().all()
    changed = ~np.isclose(evals.table["hellaswag"], clean["hellaswag"], equal_nan=True) | ~np.isclose(
        evals.table["mmlu_anatomy"], clean["mmlu_anatomy"], equal_nan=True
    )
    assert changed.sum() == 3


def test_ppl_bad_cells_missing_keys_and_extra_columns(
    small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    downstream, ppl = small_raw
    pile = ppl["eval/pile-validation/Perplexity"].astype(str).replace("nan", None)  # a text column, as some tools write
    ppl = ppl.astype({"step": float}).assign(
        **{"eval/pile-validation/Perplexity": pile, "eval/new_set-validation/Perplexity": 1.0}
    )
    ppl.loc[2, "eval/pile-validation/Perplexity"] = "n/a"
    ppl.loc[6, "step"] = np.nan  # the perplexity-only checkpoint of seed 0 loses its step
    evals = read_datadecide(write_raw(tmp_path, downstream, ppl))
    source = str(tmp_path / "datadecide" / "ppl_eval.parquet")
    assert evals.skipped.values.tolist() == [
        [source, "all", "eval/new_set-validation/Perplexity", "not a DataDecide perplexity column: ignored"],
        [source, 6, "step", "missing step: row skipped"],
        [source, 2, "eval/pile-validation/Perplexity", "'n/a' is not a number: left NaN"],
    ]
    seed0 = evals.table[evals.table["seed"] == 0].set_index("step")
    assert 5735 not in seed0.index and np.isnan(seed0.loc[2500, "pile_valppl"])
    assert seed0.loc[2500, "c4_en_valppl"] == ppl.loc[2, "eval/c4_en-validation/Perplexity"]
    assert seed0.loc[1250, "pile_valppl"] == small_raw[1].loc[1, "eval/pile-validation/Perplexity"]  # text → float


def test_identical_duplicates_are_skipped(small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    downstream, ppl = small_raw
    evals = read_datadecide(
        write_raw(tmp_path, pd.concat([downstream, downstream.iloc[[4]]]), pd.concat([ppl, ppl.iloc[[2]]]))
    )
    assert sorted(evals.skipped["reason"]) == [
        "duplicate of row 2 with identical values",
        "duplicate of row 4 with identical values",
    ]
    assert sorted(evals.skipped["row"]) == [len(ppl), len(downstream)]
    assert sorted(evals.skipped["column"]) == ["params, data, seed, step", "params, data, seed, step, task"]
    pd.testing.assert_frame_equal(evals.table, read_datadecide(write_raw(tmp_path / "once", downstream, ppl)).table)


def test_full_eval_rows_in_any_order_read_as_sorted(small_raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    full_eval = to_full_eval(*small_raw)
    backwards = full_eval.iloc[::-1].reset_index(drop=True)
    repeated = pd.concat([backwards, backwards.iloc[[5, 2]]], ignore_index=True)
    evals = read_datadecide(SimpleNamespace(full_eval=repeated))
    pd.testing.assert_frame_equal(evals.table, read_datadecide(SimpleNamespace(full_eval=full_eval)).table)
    n = len(full_eval)
    assert evals.skipped[["row", "reason"]].values.tolist() == [  # in file order, naming the first of the file
        [n, "duplicate of row 5 with identical values"],
        [n + 1, "duplicate of row 2 with identical values"],
    ]
    twin = backwards.iloc[[4]].assign(hellaswag_acc_raw=0.5)  # a differing repeat before the row it repeats
    with pytest.raises(SourceError, match=r"rows 0 and 5: two rows for the same checkpoint"):
        read_datadecide(SimpleNamespace(full_eval=pd.concat([twin, backwards], ignore_index=True)))


def test_unknown_full_eval_columns_are_skips(exports: SimpleNamespace) -> None:
    full_eval = pd.read_parquet(exports.full / "full_eval.parquet").assign(my_note="x", pile_test=1.0)
    evals = read_datadecide(SimpleNamespace(full_eval=full_eval))
    assert evals.skipped[["row", "column"]].values.tolist() == [["all", "my_note"], ["all", "pile_test"]]
    pd.testing.assert_frame_equal(evals.table, exports.table, check_exact=False, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------


def test_unreadable_parquet(small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    write_raw(tmp_path, *small_raw)
    (tmp_path / "datadecide" / "ppl_eval.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"ppl_eval\.parquet: unreadable parquet file .*; re-download or regenerate"):
        read_datadecide(tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"looked for .*full_eval\.parquet, or both .*downstream_eval\.parquet and"):
        PretrainingSource(tmp_path)
    with pytest.raises(SourceError, match=r"looked for .*mean_eval\.parquet"):
        PretrainingSource(tmp_path, mean=True)


def test_unsupported_object() -> None:
    with pytest.raises(SourceError, match=r"expected a path or an object with a `full_eval` DataFrame attribute"):
        PretrainingSource(42)


def test_missing_columns(small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    downstream, ppl = small_raw
    write_raw(tmp_path, downstream.drop(columns="metrics"), ppl)
    with pytest.raises(SourceError, match=r"downstream_eval\.parquet: missing column\(s\) 'metrics'; expected the"):
        read_datadecide(tmp_path)
    with pytest.raises(SourceError, match=r"missing column\(s\) 'seed'.*pass mean=True"):
        read_datadecide(SimpleNamespace(full_eval=pd.DataFrame(columns=["params", "data", "step"])))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("data", "Dolma 1.7", r"row 4, column 'data': unknown recipe 'Dolma 1.7' \(1 rows\); expected one of the 25"),
        ("params", "4m", r"row 4, column 'params': unknown size label '4m' \(1 rows\); expected one of the 14"),
        ("seed", "aux 7", r"row 4, column 'seed': unknown seed name 'aux 7' .*'default', 'small aux 2'"),
        ("step", 12.5, r"row 4, column 'step': expected an integer between 0 and \d+, found 12\.5"),
    ],
)
def test_bad_keys_raise(small_raw, tmp_path: Path, column: str, value: object, message: str) -> None:
    downstream, ppl = (frame.copy() for frame in small_raw)
    downstream[column] = downstream[column].astype(object)
    downstream.loc[4, column] = value
    with pytest.raises(SourceError, match=r"downstream_eval\.parquet, " + message):
        read_datadecide(write_raw(tmp_path, downstream, ppl))


def test_differing_duplicates_raise(small_raw: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    downstream, ppl = small_raw
    twin = downstream.iloc[[4]].assign(metrics="{'acc_raw': 0.99, 'primary_metric': 0.99}")
    write_raw(tmp_path, pd.concat([downstream, twin], ignore_index=True), ppl)
    pattern = rf"downstream_eval\.parquet, rows 4 and {len(downstream)}: two rows for the same checkpoint and task"
    with pytest.raises(
        SourceError, match=pattern + r" \(task 'hellaswag' at 4M/Dolma1\.7/seed 0/step 2500\) with diff"
    ):
        read_datadecide(tmp_path)
    full_eval = to_full_eval(downstream, ppl)
    twin = full_eval.iloc[[1]].assign(hellaswag_acc_raw=0.5)
    with pytest.raises(
        SourceError, match=r"rows 1 and 21: two rows for the same checkpoint \(4M/Dolma1\.7/seed 0/step 1250\)"
    ):
        read_datadecide(SimpleNamespace(full_eval=pd.concat([full_eval, twin], ignore_index=True)))


def test_mmlu_average_must_agree(small_raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    full_eval = to_full_eval(*small_raw)
    full_eval.loc[2, "mmlu_average_correct_prob"] += 0.01
    with pytest.raises(
        SourceError, match=r"checkpoint 4M/Dolma1\.7/seed 0/step 2500, column 'mmlu_average_correct_prob'"
    ):
        read_datadecide(SimpleNamespace(full_eval=full_eval))


def test_mean_flag_mismatch(exports: SimpleNamespace) -> None:
    with pytest.raises(SourceError, match=r"found a 'seed' column, but mean=True expects"):
        read_datadecide(exports.full / "full_eval.parquet", mean=True)


def test_object_fingerprint_follows_its_content(real_samples: Path) -> None:
    frame = pd.read_parquet(real_samples / "pretrain_metrics_sample.parquet")
    same = PretrainingSource(SimpleNamespace(full_eval=frame.copy())).file_stats()
    assert PretrainingSource(SimpleNamespace(full_eval=frame)).file_stats() == same
    changed = frame.copy()
    changed.loc[3, "hellaswag_primary_metric"] += 0.01
    assert PretrainingSource(SimpleNamespace(full_eval=changed)).file_stats() != same

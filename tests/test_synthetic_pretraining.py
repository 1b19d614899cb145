"""Tests of ddxr.synthetic.pretraining: raw export shape, score model, determinism, full_eval layout, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddxr.sources.datadecide import FULL_EVAL_TASK_METRICS, parse_metrics, read_datadecide
from ddxr.synthetic.curves import checkpoint_steps, primary_score
from ddxr.synthetic.pretraining import (
    OPTIONAL_METRICS,
    RAW_METRIC_KEYS,
    SEED_NOISE,
    generate_pretraining,
    to_full_eval,
    write_datadecide,
)
from ddxr.vocabulary import DATA, MMLU_TASKS, PARAMS, PPL_SETS, PRIMARY_METRIC, RAW_TASKS, SIZES, UNCOND_METRICS

DOWNSTREAM_COLUMNS = ["params", "data", "task", "step", "seed", "tokens", "compute", "chinchilla", "metrics"]


@pytest.fixture(scope="module")
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    """4M and 60M on two recipes, a handful of tasks."""
    return generate_pretraining(["4M", "60M"], ["C4", "FineWeb-Edu"], tasks=["boolq", "hellaswag", "mmlu_virology"])


@pytest.fixture(scope="module")
def small_values(small: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    values, problems = parse_metrics(small[0]["metrics"])
    assert problems.empty
    return pd.concat([small[0].drop(columns="metrics"), values], axis=1)


def expected_rows(params: list[str], data: list[str], tasks: int = 1) -> int:
    return sum(len(checkpoint_steps(size)) * (5 if size == "1B" else 3) for size in params) * len(data) * tasks


# ---------------------------------------------------------------------------------------------------------------
# the raw exports
# ---------------------------------------------------------------------------------------------------------------


def test_raw_layout(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    downstream, ppl = small
    assert list(downstream.columns) == DOWNSTREAM_COLUMNS
    assert len(downstream) == expected_rows(["4M", "60M"], ["C4", "FineWeb-Edu"], tasks=3)
    assert list(ppl.columns) == [
        "params",
        "data",
        "seed",
        "step",
        *(f"eval/{ppl_set}-validation/Perplexity" for ppl_set in PPL_SETS),
        "__index_level_0__",
    ]
    assert set(downstream["seed"]) == {"default", "small aux 2", "small aux 3"}
    assert (
        downstream["step"].dtype == np.int64 and downstream["metrics"].str.startswith("{'predicted_index_raw': ").all()
    )


def test_seeds_and_checkpoints() -> None:
    downstream, ppl = generate_pretraining(["1B", "4M"], ["Dolma1.7"], tasks=["piqa"])
    seeds = downstream.groupby("params")["seed"].unique()
    assert sorted(seeds["1B"]) == ["default", "large aux 2", "large aux 3", "small aux 2", "small aux 3"]
    assert sorted(seeds["4M"]) == ["default", "small aux 2", "small aux 3"]
    assert sorted(downstream.loc[downstream["params"] == "4M", "step"].unique()) == checkpoint_steps("4M").tolist()
    # 4M has one perplexity-only checkpoint 10 steps after its final one
    assert set(ppl["step"]) - set(downstream["step"]) == {5735}
    assert len(ppl) == len(downstream) + 3


def test_tokens_compute_and_chinchilla(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    downstream, _ = small
    sizes = SIZES.loc[downstream["params"]]
    np.testing.assert_array_equal(downstream["tokens"], downstream["step"] * sizes["tokens_per_step"].to_numpy())
    np.testing.assert_array_equal(downstream["compute"], 6.0 * sizes["true_params"].to_numpy() * downstream["tokens"])
    np.testing.assert_allclose(
        downstream["chinchilla"], downstream["tokens"] / (20 * sizes["params_numeric"].to_numpy())
    )
    final = downstream[(downstream["params"] == "4M") & (downstream["step"] == 5725)]
    assert final["tokens"].eq(375_193_600).all()


def test_dicts_hold_the_34_keys(small: tuple[pd.DataFrame, pd.DataFrame], small_values: pd.DataFrame) -> None:
    assert len(RAW_METRIC_KEYS) == 34
    texts = small[0]["metrics"]
    assert texts.str.count("': ").eq(34).all()
    assert set(small_values.columns[len(DOWNSTREAM_COLUMNS) - 1 :]) <= set(RAW_METRIC_KEYS)
    assert texts.str.contains("'bits_per_byte_corr': None").all()


def test_missing_values_where_real_data_has_them(small_values: pd.DataFrame) -> None:
    boolq = small_values[small_values["task"] == "boolq"]
    assert boolq[list(UNCOND_METRICS)].isna().all().all()
    assert small_values.loc[small_values["task"] != "boolq", list(UNCOND_METRICS)].notna().all().all()
    optional = small_values[list(OPTIONAL_METRICS)]
    assert optional[small_values["params"] == "60M"].isna().all().all()  # None for sizes above batch 32
    assert optional[small_values["params"] == "4M"].notna().all().all()


def test_primary_metric_copies_its_metric(small_values: pd.DataFrame) -> None:
    for task, rows in small_values.groupby("task"):
        np.testing.assert_array_equal(rows["primary_metric"], rows[PRIMARY_METRIC[task]])


def test_scores_follow_the_curves(small_values: pd.DataFrame) -> None:
    for task, rows in small_values.groupby("task"):
        clean = primary_score(task, rows["compute"].to_numpy(), rows["data"].to_numpy())
        noise = rows["primary_metric"].to_numpy() - clean
        assert np.abs(noise).max() < 6 * SEED_NOISE
        assert 0.5 * SEED_NOISE < noise.std() < 1.5 * SEED_NOISE
    accuracies = small_values[["acc_raw", "acc_per_token", "acc_per_char", "primary_metric", "correct_prob"]]
    assert ((accuracies >= 0) & (accuracies <= 1)).all().all()
    assert (small_values["correct_prob"] < small_values["primary_metric"]).all()


def test_perplexity_missing_at_step_zero(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, ppl = small
    values = ppl.filter(like="eval/")
    assert values[ppl["step"] == 0].isna().all().all()
    assert values[ppl["step"] > 0].notna().all().all()
    later = ppl[(ppl["params"] == "60M") & (ppl["data"] == "C4") & (ppl["seed"] == "default")]
    pile = later["eval/pile-validation/Perplexity"].iloc[1:]  # falls as compute grows, up to 1% noise
    assert (pile.diff().dropna() < 0.05 * pile.iloc[:-1].to_numpy()).all() and pile.iloc[-1] < 0.6 * pile.iloc[0]


def test_150m_c4_has_no_perplexity_at_step_1250() -> None:
    _, ppl = generate_pretraining(["150M"], ["C4", "Dolma1.7"], tasks=["piqa"])
    at_1250 = ppl[ppl["step"] == 1250].set_index("data")["eval/c4_en-validation/Perplexity"]
    assert at_1250.loc["C4"].isna().all() and at_1250.loc["Dolma1.7"].notna().all()


# ---------------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_same_tables(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    again = generate_pretraining(["4M", "60M"], ["C4", "FineWeb-Edu"], tasks=["boolq", "hellaswag", "mmlu_virology"])
    for first, second in zip(small, again, strict=True):
        pd.testing.assert_frame_equal(first, second)
    other, _ = generate_pretraining(
        ["4M", "60M"], ["C4", "FineWeb-Edu"], tasks=["boolq", "hellaswag", "mmlu_virology"], random_seed=1
    )
    assert (other["metrics"] != small[0]["metrics"]).mean() > 0.9


@settings(max_examples=8, deadline=None)
@given(
    params=st.lists(st.sampled_from(PARAMS[:7]), min_size=1, max_size=2, unique=True),
    data=st.lists(st.sampled_from(DATA), min_size=1, max_size=2, unique=True),
    tasks=st.lists(st.sampled_from(RAW_TASKS), min_size=1, max_size=3, unique=True),
)
def test_subsets_hold_the_same_values(params: list[str], data: list[str], tasks: list[str]) -> None:
    downstream, ppl = generate_pretraining(params, data, tasks=tasks)
    assert len(downstream) == expected_rows(params, data, len(tasks))
    keys = ["params", "data", "seed", "step", "task"]
    for size in params:
        alone, alone_ppl = generate_pretraining([size], data[:1], tasks=tasks[:1])
        subset = downstream[(downstream["params"] == size) & (downstream["data"] == data[0])]
        subset = subset[subset["task"] == tasks[0]]
        pd.testing.assert_frame_equal(alone, subset.reset_index(drop=True), check_like=False)
        merged = alone_ppl.drop(columns="__index_level_0__").merge(ppl, on=keys[:4], suffixes=("", "_all"))
        assert len(merged) == len(alone_ppl)
        np.testing.assert_array_equal(
            merged["eval/pile-validation/Perplexity"], merged["eval/pile-validation/Perplexity_all"]
        )


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown size label\(s\) \['5M'\]"):
        generate_pretraining(["5M"])
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['mmlu_average'\]"):
        generate_pretraining(["4M"], tasks=["mmlu_average"])


# ---------------------------------------------------------------------------------------------------------------
# full_eval
# ---------------------------------------------------------------------------------------------------------------


def test_full_eval_layout(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    full_eval = to_full_eval(*small)
    assert list(full_eval.columns[:12]) == [
        "params",
        "data",
        "seed",
        "step",
        "tokens",
        "compute",
        "total_steps",
        "warmup_steps",
        "lr_max",
        "batch_size",
        "lr_at_step",
        "cumulative_lr",
    ]
    assert list(full_eval.columns[12:23]) == [f"{ppl_set}-valppl" for ppl_set in PPL_SETS]
    assert list(full_eval.columns[23 : 23 + 1866]) == [f"{task}_{metric}" for task, metric in FULL_EVAL_TASK_METRICS]
    assert full_eval["step"].dtype == np.float64 and full_eval["seed"].dtype == np.int64
    assert len(full_eval) == len(small[1])  # outer merge: the perplexity-only 4M checkpoint is a row
    assert full_eval.loc[full_eval["params"] == "60M", "total_tokens"].eq(5_707_814_400).all()  # planned, 100 × N
    subtasks = full_eval[[f"{task}_correct_prob" for task in MMLU_TASKS]]
    np.testing.assert_allclose(full_eval["mmlu_average_correct_prob"], subtasks.mean(axis=1))


def test_full_eval_schedule_matches_real_datadec(real_samples: Path) -> None:
    real = pd.read_parquet(real_samples / "pretrain_metrics_sample.parquet")
    downstream, ppl = generate_pretraining(["4M", "150M", "530M"], ["Dolma1.7"], tasks=["piqa"])
    generated = to_full_eval(downstream, ppl)
    keys = ["params", "step"]
    columns = [
        "tokens",
        "compute",
        "total_steps",
        "warmup_steps",
        "lr_max",
        "batch_size",
        "lr_at_step",
        "cumulative_lr",
        "true_model_size",
        "total_tokens",
        "warmup_tokens",
        "lr_final",
        "total_seqs",
        "warmup_perc",
        "lr_decay_tokens",
        "lr_decay_steps",
    ]
    merged = (
        real[[*keys, *columns]].drop_duplicates(keys).merge(generated[[*keys, *columns]].drop_duplicates(keys), on=keys)
    )
    assert len(merged) == 25  # 4M steps 0-5735, 150M and 530M steps 0-10000
    for column in columns:
        np.testing.assert_allclose(merged[f"{column}_y"], merged[f"{column}_x"], rtol=1e-6, err_msg=column)


def test_write_datadecide(tmp_path: Path) -> None:
    folder = write_datadecide(tmp_path, params=["6M"], data=["Falcon"], layouts=("raw", "full_eval"))
    assert folder == tmp_path / "datadecide"
    assert sorted(path.name for path in folder.iterdir()) == [
        "downstream_eval.parquet",
        "full_eval.parquet",
        "ppl_eval.parquet",
    ]
    downstream = pd.read_parquet(folder / "downstream_eval.parquet")
    assert len(downstream) == expected_rows(["6M"], ["Falcon"], len(RAW_TASKS))
    assert read_datadecide(folder).source == str(folder / "full_eval.parquet")
    with pytest.raises(ValueError, match=r"unknown layout\(s\) \['zarr'\]"):
        write_datadecide(tmp_path, layouts=("zarr",))

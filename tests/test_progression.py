"""TrainingProgressionManager: token repair, estimates and the public curve accessors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddxr.cli import _format_report
from ddxr.errors import InvalidArgumentError, LinkError
from ddxr.facade import DataDecideNext
from ddxr.managers.progression import (
    HISTORY_KEYS,
    SUMMED_LOSS_THRESHOLD,
    TrainingProgressionManager,
    _join_rows,
    repair_token_restarts,
)
from ddxr.schema import pretraining_lineage_id
from ddxr.synthetic import generate
from ddxr.synthetic.posttraining import repaired_total_tokens
from ddxr.vocabulary import SIZES

counters = st.lists(
    st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=30),  # increments of one run
    min_size=1,
    max_size=5,
)


@given(counters, st.data())
def test_repair_matches_the_generators_rule_and_never_decreases(runs, data):
    frames = []
    for number, increments in enumerate(runs):
        counter = np.cumsum(increments).astype(float)
        # restart the counter at a few random rows, as a resumed run does
        for row in data.draw(st.lists(st.integers(1, max(1, len(counter) - 1)), max_size=2, unique=True)):
            if row < len(counter):
                counter[row:] -= counter[row - 1] * data.draw(st.floats(0.2, 1.0))
        frames.append(pd.DataFrame({"run_id": f"run{number}", "total_tokens": counter}))
    history = pd.concat(frames, ignore_index=True)
    repaired, restarted = repair_token_restarts(history["total_tokens"], history["run_id"])
    for run_id, rows in history.groupby("run_id"):
        expected = repaired_total_tokens(rows["total_tokens"].to_numpy())
        np.testing.assert_allclose(repaired[rows.index], expected)
        assert bool(restarted[run_id]) == bool((np.diff(rows["total_tokens"]) < 0).any())
        assert (np.diff(repaired[rows.index]) >= 0).all()


def test_pretraining_lineage_ids_escape_slashes_in_recipe_names():
    ids = pretraining_lineage_id(
        pd.Series(["150M", "1B"]), pd.Series(["DCLM-Baseline 25% / Dolma 75%", "Dolma1.7"]), pd.Series([0, 3])
    )
    assert ids.tolist() == ["150M/dclm-baseline-25p-dolma1.7-75p/seed0", "1B/dolma1_7/seed3"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("progression")
    truth = generate(root / "sources", params=("4M", "150M"), data=("Dolma1.7", "C4"), n_runs=24)
    return truth, DataDecideNext(root / "sources", truth.store_url, cache_dir=root / "cache", progress=False)


@pytest.fixture(scope="module")
def manager(built):
    truth, dd = built
    return truth, dd.training


def compute_per_token_of_each_lineage(points: pd.DataFrame) -> pd.Series:
    trained = points[points["cumulative_tokens"] > 0]
    ratio = trained["cumulative_compute"] / trained["cumulative_tokens"]
    return ratio.groupby(trained["lineage"]).agg(["min", "max"])


def test_compute_is_one_line_through_the_base(built):
    """Post-training compute continues the pretraining table's own compute / tokens, whatever N the table used."""
    _, dd = built
    training = dd.training
    per_lineage = compute_per_token_of_each_lineage(training.points())
    np.testing.assert_allclose(per_lineage["max"], per_lineage["min"], rtol=1e-12)
    phase = training.points()["pretraining_phase"]
    assert phase.any() and (~phase).any()
    # a source computing with the nominal N (4M -> 4e6): post-training points follow it, no jump at the base
    nominal = training.pretraining.assign(
        compute=lambda table: 6.0 * table["params"].map(SIZES["params_numeric"]) * table["tokens"]
    )
    links = training.relationships.links
    history = dd.wandb.read_history(links.loc[links["link_status"] == "linked", "run_id"].tolist(), HISTORY_KEYS)
    points = TrainingProgressionManager(nominal, history, training.relationships).points()
    per_lineage = compute_per_token_of_each_lineage(points)
    params = points.groupby("lineage")["params"].first().astype(str)  # points() holds strings as categoricals
    expected = 6.0 * per_lineage.index.map(params).map(SIZES["params_numeric"])
    np.testing.assert_allclose(per_lineage["min"], expected, rtol=1e-12)
    np.testing.assert_allclose(per_lineage["max"], expected, rtol=1e-12)


def test_curves_of_each_phase(manager):
    truth, training = manager
    pretraining = training.get_training_curves("pretraining")
    assert {"params", "data", "seed", "step", "tokens"} <= set(pretraining.columns)
    one = training.get_training_curves("pretraining", ["4M/dolma1_7/seed0"])
    assert set(one["params"]) == {"4M"} and set(one["data"]) == {"Dolma1.7"} and set(one["seed"]) == {0}
    dpo = training.get_training_curves("dpo")
    sft = training.get_training_curves("supervised_ft")
    expected = truth.runs.set_index("run_id")["run_type"]
    assert set(dpo["run_id"].astype(str)) <= set(expected.index[expected == "dpo"])
    assert set(sft["run_id"].astype(str)) <= set(expected.index[expected == "supervised_ft"])
    assert dpo["run_tokens"].notna().all() and sft["run_tokens"].notna().all()
    with pytest.raises(InvalidArgumentError, match="run_type must be"):
        training.get_training_curves("rlhf")


def test_continuous_progression_joins_the_base(manager):
    truth, training = manager
    runs = truth.runs[(truth.runs["run_type"] == "dpo") & (truth.runs["expected_link_status"] == "linked")]
    run_id = runs["run_id"].iloc[0]
    points = training.get_continuous_progression(run_id)
    assert points["pretraining_phase"].iloc[0] and not points["pretraining_phase"].iloc[-1]
    post = points[~points["pretraining_phase"]]
    assert post["cumulative_tokens"].is_monotonic_increasing
    assert points.loc[points["pretraining_phase"], "cumulative_tokens"].max() <= post["cumulative_tokens"].min()
    assert post["cumulative_tokens"].iloc[-1] == pytest.approx(runs["expected_last_cumulative_tokens"].iloc[0])


def test_unknown_lineage_is_a_link_error(manager):
    _, training = manager
    with pytest.raises(LinkError, match="no lineage ends in run 'nope'"):
        training.get_continuous_progression("nope")


def test_summed_losses_are_kept_out_of_train_loss(manager):
    truth, training = manager
    summed = truth.runs.loc[truth.runs["mess"] == "reduce_loss_sum", "run_id"]
    assert training.run_facts.loc[summed, "loss_summed"].all()
    points = training.points()
    assert points.loc[points["run_id"].isin(summed), "train_loss"].isna().all()
    assert (points["train_loss"].dropna() < SUMMED_LOSS_THRESHOLD).all()


def test_mean_prefixes_point_into_the_seed_mean_rows(tmp_path):
    truth = generate(tmp_path / "sources", params=("4M", "150M"), data=("Dolma1.7", "C4"), n_runs=20, messy=False)
    dd = DataDecideNext(tmp_path / "sources", truth.store_url, pretraining_seeds="mean", progress=False)
    points = dd.training.points()
    table = dd.training.metric_table
    prefix = points[points["pretraining_phase"] & (points["learning_rate"] != 0.0)]
    assert prefix["run_id"].str.endswith("/mean").all()
    assert (table.loc[prefix["pretraining_row"], "seed"] == -1).all()
    means = dd.training.pretraining.groupby(["params", "data", "step"])["tokens"].mean()
    keys = pd.MultiIndex.from_frame(prefix[["params", "data", "step"]])
    np.testing.assert_allclose(prefix["cumulative_tokens"], means.reindex(keys).to_numpy())


def test_report_names_the_runs_behind_every_count(manager):
    """Each count of the progression report comes with its run ids, the same runs the runs table flags."""
    _, training = manager
    report, facts = training.report.as_dict(), training.run_facts
    flags = {
        "runs_with_duplicate_steps": facts["duplicate_steps"] > 0,
        "runs_tokens_repaired": facts["tokens_repaired"],
        "runs_loss_summed": facts["loss_summed"],
        "runs_tokens_estimated": facts["tokens_estimated"],
    }
    for count, flagged in flags.items():
        expected = sorted(facts.index[flagged.astype(bool)].astype(str))
        assert report[count] == len(expected) and report[f"{count}_run_ids"] == expected[:20], count
    assert report["runs_tokens_repaired"] >= 1 and report["runs_tokens_estimated"] >= 1
    assert list(report).index("runs_loss_summed_run_ids") == list(report).index("runs_loss_summed") + 1


def test_info_prints_run_ids_under_their_count():
    report = {"runs_unlinked": 3, "runs_unlinked_run_ids": ["a", "b"], "progression": {"runs_loss_summed": 0}}
    assert _format_report(report).splitlines() == [
        "  runs_unlinked: 3",
        "    - a",
        "    - b",
        "    … and 1 more (one row each in the runs table)",
        "  progression:",
        "    runs_loss_summed: 0",
    ]


@given(st.lists(st.integers(0, 4), max_size=12), st.lists(st.integers(0, 4), max_size=40))
def test_join_rows_pair_rows_like_an_inner_merge(left, right):
    """The spread of runs over their history rows keeps DataFrame.merge's row order."""
    left_rows, right_rows = _join_rows(np.array(left, dtype=np.int64), np.array(right, dtype=np.int64), 5)
    merged = pd.merge(
        pd.DataFrame({"key": left, "left_row": range(len(left))}),
        pd.DataFrame({"key": right, "right_row": range(len(right))}),
        on="key",
    )
    assert left_rows.tolist() == merged["left_row"].tolist()
    assert right_rows.tolist() == merged["right_row"].tolist()


def test_points_hold_strings_as_sorted_categoricals_and_progressions_as_strings(manager):
    _, training = manager
    points = training.points()
    for name in ("lineage", "run_id", "run_type", "params", "data", "eval_run"):
        assert isinstance(points[name].dtype, pd.CategoricalDtype), name
        assert points[name].cat.categories.is_monotonic_increasing, name
    leaf = points.loc[~points["pretraining_phase"], "lineage"].iloc[0]
    progression = training.get_continuous_progression(leaf)
    assert progression["lineage"].dtype == "str" and progression["run_id"].dtype == "str"
    assert set(progression["eval_run"]) <= {"", *progression["run_id"]}

"""DataDecideNext end to end on generated sources, checked against the generator's truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import ddxr
from ddxr.cache import write_dataset
from ddxr.facade import DataDecideNext
from ddxr.synthetic import generate
from ddxr.vocabulary import OLMES_9_AVERAGE, OLMES_TASKS


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    truth = generate(root / "sources")
    dd = DataDecideNext(root / "sources", truth.store_url, cache_dir=root / "cache", progress=False)
    curves, runs = dd.build()
    return truth, dd, curves, runs


@pytest.fixture(scope="module")
def points(generated) -> pd.DataFrame:
    _, _, curves, _ = generated
    return curves.reset_index("point").to_dataframe()


def test_links_match_the_truth(generated):
    truth, dd, _, _ = generated
    links = dd.relationships.links.set_index("run_id")
    expected = truth.runs.set_index("run_id")
    assert (links.loc[expected.index, "link_status"] == expected["expected_link_status"]).all()
    linked = expected[expected["expected_link_status"] == "linked"]
    for column in ("params", "data", "seed", "base_step"):
        assert (links.loc[linked.index, column].astype(str) == linked[column].astype(str)).all(), column
    np.testing.assert_allclose(links.loc[linked.index, "learning_rate"], linked["learning_rate"])


def test_last_cumulative_tokens_match_the_truth(generated, points):
    truth, dd, _, _ = generated
    expected = truth.runs.set_index("run_id")
    in_curves = expected.index.intersection(points["lineage"].unique())
    skipped = set(expected.index) - set(in_curves)
    # only unlinked runs and runs the build reports as skipped are missing from the curves
    reported = set(dd.training.report.skipped_runs) | set(expected.index[expected["expected_link_status"] != "linked"])
    assert skipped <= reported
    post = points[~points["pretraining_phase"] & points["lineage"].isin(in_curves)]
    last = post.groupby("lineage")["cumulative_tokens"].max()
    np.testing.assert_allclose(last, expected.loc[last.index, "expected_last_cumulative_tokens"], rtol=1e-9)


def test_tokens_estimated_flags_match_the_truth(generated, points):
    truth, _, _, _ = generated
    expected = truth.runs.set_index("run_id")
    post = points[~points["pretraining_phase"] & (points["lineage"] == points["run_id"])]
    flagged = post.groupby("run_id")["tokens_estimated"].any()
    np.testing.assert_array_equal(flagged, expected.loc[flagged.index, "tokens_estimated"])


def test_final_scores_match_the_truth(generated, points):
    truth, _, _, _ = generated
    expected = truth.runs.set_index("run_id")
    own = points[(points["lineage"] == points["run_id"]) & ~points["pretraining_phase"]]
    own = own[own[OLMES_9_AVERAGE].notna()]
    final = own.groupby("run_id")[[*OLMES_TASKS, OLMES_9_AVERAGE]].last()
    assert len(final) > 10
    np.testing.assert_allclose(final, expected.loc[final.index, final.columns], atol=1e-6)


def test_pretraining_prefix_stops_at_the_base_checkpoint(generated, points):
    truth, _, _, _ = generated
    expected = truth.runs.set_index("run_id")
    prefix = points[points["pretraining_phase"] & points["lineage"].isin(expected.index)]
    last_step = prefix.groupby("lineage")["step"].max()
    np.testing.assert_array_equal(last_step, expected.loc[last_step.index, "base_step"].astype(int))


def test_build_report_counts_the_messy_runs(generated):
    truth, dd, curves, _ = generated
    report = json.loads(curves.attrs["build_report"])
    expected = truth.runs
    assert report["runs_read"] == len(expected)
    assert report["runs_unlinked"] == int((expected["expected_link_status"] == "unlinked").sum())
    assert report["evaluations_skipped"] >= int((expected["mess"] == "malformed_eval_json").sum())
    assert report["progression"]["duplicate_history_rows"] > 0
    assert report["progression"]["runs_loss_summed"] == int((expected["mess"] == "reduce_loss_sum").sum())
    assert report["progression"]["runs_tokens_repaired"] >= 1
    assert report["history_rows_without_a_run"] == 0  # every generated history row has its run


def test_points_are_unique_and_the_index_has_no_missing_values(generated, points):
    assert not points.duplicated(["lineage", "run_id", "step"]).any()
    assert points[["lineage", "params", "data", "learning_rate", "cumulative_tokens"]].notna().all().all()


def test_every_variable_carries_its_attrs(generated):
    _, _, curves, _ = generated
    for name, variable in curves.data_vars.items():
        assert {"long_name", "task", "metric", "higher_is_better", "source"} <= set(variable.attrs), name
        assert variable.dtype == np.float32


def test_the_readme_sweep_selects_four_lineages(generated):
    _, dd, curves, _ = generated
    sweep = curves.sel(params="150M", data="Dolma1.7", learning_rate=[1e-5, 3e-5, 1e-4, 3e-4])
    sft = np.unique(sweep["run_id"].to_numpy()[sweep["run_type"].to_numpy() == "supervised_ft"])
    assert len(sft) >= 4
    frame = sweep.to_dataframe().reset_index()
    assert {"lineage", "params", "data", "learning_rate", "cumulative_tokens", "run_id"} <= set(frame.columns)


def test_sweep_analysis_and_continuous_curves(generated, monkeypatch):
    _, dd, curves, _ = generated
    monkeypatch.setattr(dd, "dataset", lambda refresh=False: curves)
    sweep = dd.get_sweep_analysis("150M", "Dolma1.7", "supervised_ft", [1e-5, 3e-5, 1e-4, 3e-4])
    leaves = np.unique(sweep["lineage"].to_numpy())
    assert len(leaves) >= 4
    frame = dd.get_continuous_curves(leaves, metrics=["olmes_9_average", "train_loss"])
    assert set(frame["lineage"]) == set(leaves)
    assert set(frame["phase"]) == {"pretraining", "supervised_ft"}


def test_dataset_is_cached_by_fingerprint_and_rebuilt_when_stale(tmp_path):
    truth = generate(tmp_path / "sources", n_runs=20, messy=False)
    dd = DataDecideNext(tmp_path / "sources", truth.store_url, cache_dir=tmp_path / "cache", progress=False)
    first = dd.dataset()
    n_runs = dd.runs().sizes["run"]
    path = dd.cache_path()
    assert path.exists() and first.attrs["fingerprint"] in path.name
    again = DataDecideNext(tmp_path / "sources", truth.store_url, cache_dir=tmp_path / "cache", progress=False)
    reopened = again.dataset()
    assert reopened.attrs["created"] == first.attrs["created"]  # opened, not rebuilt
    xr.testing.assert_identical(reopened.load(), first.load())
    # a new run in the store makes the cache stale
    from ddxr.sources.wandb_store import WandBStore

    store = WandBStore(truth.store_url)
    runs = store.read_runs().iloc[:1].copy()
    runs["run_id"] = runs["run_name"] = "extra-run"
    store.store_runs(runs.drop(columns=["layout", "tags", "history_line_count"], errors="ignore"))
    assert dd.cache_path() != path
    # the same object notices the change and rebuilds from the new sources
    assert dd.runs().sizes["run"] == n_runs + 1
    assert "extra-run" in dd.runs()["run_id"].to_numpy()
    refreshed = dd.dataset(refresh=True)
    assert refreshed.attrs["created"] >= first.attrs["created"]


def test_a_cold_dataset_scans_the_store_history_once(tmp_path, monkeypatch):
    # each history snapshot scans the whole history table (seconds on a large store): dataset() needs one
    truth = generate(tmp_path / "sources", n_runs=10, messy=False)
    from ddxr.sources.wandb_store import WandBStore

    scans = []
    snapshot = WandBStore.history_snapshot
    monkeypatch.setattr(
        WandBStore, "history_snapshot", lambda *args, **kwargs: scans.append(1) or snapshot(*args, **kwargs)
    )
    dd = DataDecideNext(tmp_path / "sources", truth.store_url, cache_dir=tmp_path / "cache", progress=False)
    dd.dataset()
    assert len(scans) == 1
    dd.build()  # a build on its own fingerprints the sources as they are now
    assert len(scans) == 2


def test_password_never_reaches_the_file(tmp_path, make_pg_url):
    url = make_pg_url().replace("postgres@", "postgres:s3cret-pw@")
    truth = generate(tmp_path / "sources", store_url=url, n_runs=20, messy=False)
    dd = DataDecideNext(tmp_path / "sources", truth.store_url, cache_dir=tmp_path / "cache", progress=False)
    curves = dd.dataset()
    assert "s3cret-pw" not in json.dumps(curves.attrs, default=str)
    assert b"s3cret-pw" not in dd.cache_path().read_bytes()
    assert "***" in curves.attrs["sources"]


def test_a_build_keeps_metrics_lazy_and_releases_what_the_write_does_not_need(tmp_path):
    truth = generate(tmp_path / "sources", n_runs=12, messy=False)
    dd = DataDecideNext(tmp_path / "sources", truth.store_url, cache_dir=tmp_path / "cache", progress=False)
    curves, runs = dd.build()
    metrics = [name for name, variable in curves.data_vars.items() if variable.dtype == np.float32]
    assert metrics and not any(curves[name].variable._in_memory for name in metrics)
    # the history as read, the progression manager (point table, cleaned history) and the raw tables are let go ...
    assert {"_history", "training", "pretraining", "_store_runs", "_evaluation_entries"}.isdisjoint(vars(dd))
    # ... and rebuilt, the same, when asked for again
    report = json.loads(curves.attrs["build_report"])
    read = list(dd.history_read_from_store)
    assert sorted(read) == sorted(dd.relationships.links.query("link_status == 'linked'")["run_id"])
    assert dd.training.report.as_dict() == report["progression"]
    assert dd.history_read_from_store == read  # what the build read, not what the re-read took from the stage cache
    assert dd.build_report()["pretraining"] == report["pretraining"]
    # the lazy variables write what they read
    path = write_dataset(curves, runs, tmp_path / "built.nc")
    with ddxr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), curves.load())

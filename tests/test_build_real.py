"""The whole build on the six real W&B runs and the 34 real full_eval rows (tests/data/real_samples)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ddxr.facade import DataDecideNext
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic.layout_a import write_layout_a

RUN_1 = "2025_08_18-22_30_05_allenai--DataDecide-dolma1_7-4M_main_default"
RUN_2 = "2025_08_21-08_24_43_test_finetune_DD-dolma1_7-4M_main_1Mtx1_--learning_rate=5e-07"
RUN_3 = "2025_08_27-07_52_26_test_dpo_tune_cache_dd__dolma1_7-4M__main__100Mt_lr=5e-06_default_--learning_rate=2e-07"
RUN_4 = "2025_08_30-16_54_48_test_finetune_DD-dolma1_7-4M_Ft_--learning_rate=5e-05"
RUN_5 = "250901-155734_test_finetune_DD-dclm-baseline-150M_Ft_learning_rate=5e-05"
RUN_6 = "250912-172812_match_150M_c4_finetune_100Mtx1_DD-d17-530M-6250-2"
JSON_COLUMNS = ["config", "summary", "wandb_metadata", "system_metrics", "system_attrs", "sweep_info"]


def load_real_store(url: str, samples) -> None:
    runs = pd.read_parquet(samples / "wandb_runs_sample.parquet")
    for column in JSON_COLUMNS:
        runs[column] = runs[column].map(json.loads)
    store = WandBStore(url)
    store.create_tables()
    store.store_runs(runs)
    store.store_history(pd.read_parquet(samples / "wandb_history_sample.parquet"))


@pytest.fixture(scope="module")
def real_build(make_pg_url, tmp_path_factory, real_samples):
    url = make_pg_url()
    load_real_store(url, real_samples)
    dd = DataDecideNext(
        real_samples / "pretrain_metrics_sample.parquet",
        url,
        cache_dir=tmp_path_factory.mktemp("cache"),
        progress=False,
    )
    curves, runs = dd.build()
    return dd, curves, runs


def lineage(curves, run_id: str) -> pd.DataFrame:
    frame = curves.reset_index("point").to_dataframe()
    return frame[frame["lineage"] == run_id]


def test_every_real_run_is_linked_and_in_the_curves(real_build):
    dd, curves, runs = real_build
    links = dd.relationships.links.set_index("run_id")
    assert (links["link_status"] == "linked").all()
    lineages = set(np.unique(curves["lineage"].to_numpy()))
    assert {RUN_1, RUN_2, RUN_3, RUN_4, RUN_5, RUN_6} <= lineages
    assert runs.sizes["run"] == 6


def test_intermediate_checkpoint_run_continues_from_its_own_checkpoint(real_build):
    _, curves, _ = real_build
    points = lineage(curves, RUN_6)
    post = points[~points["pretraining_phase"]]
    # base 530M step 6250 = 5,734,400,000 tokens, + the last total_tokens 91,330,008
    assert post["cumulative_tokens"].iloc[-1] == 5_825_730_008
    assert post["cumulative_compute"].iloc[-1] == pytest.approx(6 * 530_074_944 * 5_825_730_008, rel=1e-12)
    # the sample has seed 0 only; run 6 is seed 2, so no prefix points, and nothing from step 57,786
    assert (points["seed"] == 2).all()
    assert post["step"].max() == 1000
    assert float(post["olmes_9_average"].dropna().iloc[-1]) == pytest.approx(0.4399439627, abs=1e-6)
    assert float(post["arc_challenge"].dropna().iloc[-1]) == pytest.approx(0.2721843003, abs=1e-6)


def test_main_checkpoint_lineage_joins_the_pretraining_curve(real_build):
    _, curves, _ = real_build
    points = lineage(curves, RUN_4)
    pre = points[points["pretraining_phase"]]
    post = points[~points["pretraining_phase"]]
    assert pre["step"].max() == 5725 and pre["cumulative_tokens"].max() == 375_193_600
    assert post["cumulative_tokens"].min() > pre["cumulative_tokens"].max()
    # total_tokens restarts at step 14,400: the repaired counter never decreases and ends near 1.33e9
    assert post["cumulative_tokens"].is_monotonic_increasing
    assert post["cumulative_tokens"].iloc[-1] - 375_193_600 == pytest.approx(1.33e9, rel=0.02)
    # the pretraining part holds DataDecide's own values
    assert float(pre.loc[pre["step"] == 5725, "hellaswag"].iloc[0]) == pytest.approx(0.2474606652, abs=1e-6)


def test_summed_loss_run_is_kept_without_its_summed_loss(real_build):
    _, curves, runs = real_build
    points = lineage(curves, RUN_1)
    assert (~points["pretraining_phase"]).sum() == 141
    assert points["train_loss"].isna().all()
    assert bool(runs["loss_summed"].sel(run_id=RUN_1))
    assert not bool(runs["loss_summed"].sel(run_id=RUN_4))


def test_dpo_with_missing_parent_is_placed_after_the_parent_budget(real_build):
    _, curves, _ = real_build
    points = lineage(curves, RUN_3)
    post = points[~points["pretraining_phase"]]
    assert len(post) == 2106
    assert post["tokens_estimated"].all()
    assert post["run_type"].eq("dpo").all()
    assert post["cumulative_tokens"].min() >= 375_193_600 + 100e6
    assert post["cumulative_tokens"].is_monotonic_increasing
    np.testing.assert_allclose(post["learning_rate"], 2e-7)


def test_run_without_history_gets_one_estimated_point(real_build):
    _, curves, _ = real_build
    post = lineage(curves, RUN_2)
    post = post[~post["pretraining_phase"]]
    assert len(post) == 1
    assert post["step"].iloc[0] == 11  # ceil(1,400 sequences / 128)
    assert post["cumulative_tokens"].iloc[0] == 375_193_600 + 1e6
    assert bool(post["tokens_estimated"].iloc[0])
    assert float(post["olmes_9_average"].iloc[0]) == pytest.approx(0.367625448, abs=1e-6)


def test_run_from_the_final_checkpoint_outside_the_sample_uses_formula_tokens(real_build):
    _, curves, _ = real_build
    post = lineage(curves, RUN_5)
    # the sample stops at step 10,000: the prefix holds what exists below the base step 38,157
    prefix = post[post["pretraining_phase"]]
    assert len(prefix) == 9 and prefix["step"].max() == 10_000
    post = post[~post["pretraining_phase"]]
    assert post["cumulative_tokens"].iloc[-1] == 15_003_942_912 + 1_330_254_868
    np.testing.assert_allclose(post["learning_rate"], 5e-5)


def test_olmes_9_average_runs_through_both_phases(real_build):
    _, curves, _ = real_build
    points = lineage(curves, RUN_4)
    measured = points.dropna(subset=["olmes_9_average"])
    assert measured["pretraining_phase"].any() and (~measured["pretraining_phase"]).any()
    assert float(measured["olmes_9_average"].iloc[-1]) == pytest.approx(0.3679495241, abs=1e-6)


def end_of_run_scores(curves) -> pd.DataFrame:
    """OLMES primary scores and their average at each run's end, one row per run."""
    frame = curves.reset_index("point").to_dataframe()
    frame = frame[~frame["pretraining_phase"]].dropna(subset=["olmes_9_average"])
    return frame.drop_duplicates("run_id").set_index("run_id")[["arc_challenge", "hellaswag", "olmes_9_average"]]


def without_provenance(ds: xr.Dataset) -> xr.Dataset:
    """Return the Dataset without the attributes saying where and when it was built (they differ between stores)."""
    kept = {key: value for key, value in ds.attrs.items() if key not in ("sources", "fingerprint", "created")}
    return ds.drop_attrs(deep=False).assign_attrs(kept)


@pytest.mark.parametrize("keep_attributes", [True, False])
def test_real_runs_in_layout_a_build_like_layout_b(real_build, make_pg_url, tmp_path, real_samples, keep_attributes):
    """The six real runs written as the older downloader's merged raw_data give layout B's Dataset.

    Without the attribute columns, only the peak LR of the two trained runs whose names carry none is lost.
    """
    _, curves_b, runs_b = real_build
    runs = pd.read_parquet(real_samples / "wandb_runs_sample.parquet")
    for column in JSON_COLUMNS:
        runs[column] = runs[column].map(json.loads)
    url = make_pg_url()
    history = pd.read_parquet(real_samples / "wandb_history_sample.parquet")
    write_layout_a(url, runs, history, keep_attributes=keep_attributes)
    dd = DataDecideNext(real_samples / "pretrain_metrics_sample.parquet", url, cache_dir=tmp_path, progress=False)
    curves_a, runs_a = dd.build()
    scores = end_of_run_scores(curves_a).sort_index()
    assert sorted(scores.index) == sorted([RUN_2, RUN_4, RUN_5, RUN_6])
    pd.testing.assert_frame_equal(scores, end_of_run_scores(curves_b).sort_index())
    assert scores.loc[RUN_6, "olmes_9_average"] == pytest.approx(0.4399439627, abs=1e-7)
    if keep_attributes:
        for a, b in ((curves_a, curves_b), (runs_a, runs_b)):
            xr.testing.assert_identical(without_provenance(a), without_provenance(b))
        return
    links = dd.relationships.links.set_index("run_id")
    assert links.loc[[RUN_1, RUN_6], "learning_rate"].isna().all()
    assert links.loc[[RUN_2, RUN_3, RUN_4, RUN_5], "learning_rate"].tolist() == [5e-07, 2e-07, 5e-05, 5e-05]
    report = json.loads(curves_a.attrs["build_report"])
    assert report["runs_learning_rate_unknown_run_ids"] == sorted([RUN_1, RUN_6])

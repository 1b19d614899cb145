"""Layout A (one merged raw_data per run) gives the same Dataset as layout B for the same generated runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ddxr.facade import DataDecideNext
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic import generate
from ddxr.vocabulary import OLMES_TASKS

OPTIONS = {"params": ("4M", "150M"), "data": ("Dolma1.7", "C4"), "n_runs": 24}
#: Dataset attributes that name the store or the moment of the build, not its content.
PROVENANCE = ("sources", "fingerprint", "created")


def build(root: Path, url: str, **layout: object) -> SimpleNamespace:
    truth = generate(root, store_url=url, **OPTIONS, **layout)
    dd = DataDecideNext(root, truth.store_url, cache_dir=root / "cache", progress=False)
    curves, runs = dd.build()
    return SimpleNamespace(truth=truth, dd=dd, curves=curves, runs=runs, table=dd.runs_table().set_index("run_id"))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory, make_pg_url: Callable[[], str]) -> SimpleNamespace:
    """Return the same runs in layout B and layout A on PostgreSQL, and in layout A without attributes on SQLite."""
    root = tmp_path_factory.mktemp("layouts")
    return SimpleNamespace(
        b=build(root / "b", make_pg_url()),
        a=build(root / "a", make_pg_url(), store_layout="A", layout_a_attributes=True),
        bare=build(root / "bare", f"sqlite:///{root / 'bare.db'}", store_layout="A"),
    )


def content(curves: xr.Dataset) -> xr.Dataset:
    return curves.drop_attrs(deep=False).assign_attrs(
        {key: value for key, value in curves.attrs.items() if key not in PROVENANCE}
    )


def test_layout_a_store_is_the_merged_raw_data(layouts: SimpleNamespace) -> None:
    with WandBStore(layouts.bare.truth.store_url) as store:
        assert store.layout == "A"
        runs = store.read_runs().set_index("run_id")
    trained = runs["config"].map(lambda merged: "_step" in merged)
    assert trained.sum() > 10
    # summary keys win: the merged learning_rate is the last logged schedule value, not the configured peak
    peaks = layouts.b.table.loc[trained[trained].index, "learning_rate"]
    merged = runs.loc[trained, "config"].str.get("learning_rate").astype(float)
    assert (merged < peaks.reindex(merged.index)).all()
    assert runs["wandb_metadata"].map(len).eq(0).all() and runs["system_attrs"].map(len).eq(0).all()


def test_both_layouts_give_identical_datasets(layouts: SimpleNamespace) -> None:
    xr.testing.assert_identical(content(layouts.a.curves), content(layouts.b.curves))
    xr.testing.assert_identical(layouts.a.runs.drop_attrs(), layouts.b.runs.drop_attrs())
    pd.testing.assert_frame_equal(layouts.a.table, layouts.b.table)
    sources = layouts.a.table["learning_rate_source"].value_counts().to_dict()
    assert set(sources) <= {"system_attrs", "args"} and sources["system_attrs"] > 20


def test_post_training_scores_are_read_from_raw_data(layouts: SimpleNamespace) -> None:
    """Every (run, OLMES task) primary score at a run's end: the same in both layouts, none lost."""
    scores = {}
    for name in ("a", "bare", "b"):
        curves = layouts.__dict__[name].curves
        post = curves.isel(point=np.flatnonzero(~curves["pretraining_phase"].to_numpy()))
        frame = post[list(OLMES_TASKS)].to_dataframe()[list(OLMES_TASKS)]
        stacked = frame.set_index(post["run_id"].to_numpy()).stack().dropna()
        # a parent's end point repeats inside each child's lineage: one score per (run, task)
        scores[name] = stacked[~stacked.index.duplicated()].sort_index()
    truth = layouts.b.truth.runs.set_index("run_id")
    in_curves = layouts.b.table.index[layouts.b.table["in_curves"]]
    assert len(scores["b"]) == truth.loc[in_curves, list(OLMES_TASKS)].notna().sum().sum() > 100
    pd.testing.assert_series_equal(scores["a"], scores["b"])
    pd.testing.assert_series_equal(scores["bare"], scores["b"])


def test_bare_layout_a_loses_only_what_it_does_not_store(layouts: SimpleNamespace) -> None:
    """Without W&B's config copy and the launch args, a trained run whose name has no LR has no known peak."""
    bare, b = layouts.bare.table, layouts.b.table
    missing = bare.index[bare["learning_rate"].isna()]
    named = bare.index[bare["learning_rate_source"] == "name"]
    assert not missing.empty and len(named) > 20
    np.testing.assert_array_equal(bare.loc[named, "learning_rate"], b.loc[named, "learning_rate"])
    names = pd.Series(missing, index=missing)
    assert not names.str.contains(r"learning_rate=|_lr=").any()  # only runs whose names carry no LR
    report = json.loads(layouts.bare.curves.attrs["build_report"])
    assert report["progression"]["lineages_learning_rate_unknown"] >= 1
    assert set(report["progression"]["lineages_learning_rate_unknown_run_ids"]) <= set(missing)
    for column in ("state", "tags", "params", "data", "seed", "base_step", "run_type", "link_status"):
        pd.testing.assert_series_equal(bare[column], b[column], check_dtype=False)

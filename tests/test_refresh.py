"""Incremental refresh: a file refreshed after the store gained or changed runs equals a full rebuild."""

from __future__ import annotations

import pytest

from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic import generate


@pytest.fixture
def small_store(tmp_path, store_url):
    truth = generate(tmp_path / "sources", store_url=store_url, n_runs=12, messy=False)
    return truth, WandBStore(truth.store_url)


def test_run_filters_read_only_the_runs_named(small_store):
    _, store = small_store
    every = store.read_runs()
    some = every["run_id"].iloc[[1, 4]].tolist()
    assert store.read_runs(some)["run_id"].tolist() == some
    entries = store.read_run_entries("summary", "oe_eval_metrics/")
    only = store.read_run_entries("summary", "oe_eval_metrics/", some)
    expected = entries[entries["run_id"].isin(some)].reset_index(drop=True)
    assert only.reset_index(drop=True).equals(expected) and len(expected)
    assert store.read_runs([]).empty


def test_run_states_change_with_a_run_and_only_with_it(small_store):
    _, store = small_store
    before = store.run_states()
    assert before["run_id"].tolist() == store.read_runs()["run_id"].tolist()
    runs = store.read_runs()
    changed = runs.iloc[[2]].copy()
    changed["state"] = "crashed"
    store.store_runs(changed.drop(columns=["layout", "tags", "history_line_count"]))
    after = store.run_states()
    differs = before["digest"].to_numpy() != after["digest"].to_numpy()
    assert differs.tolist() == [index == 2 for index in range(len(runs))]

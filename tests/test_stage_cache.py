"""Stage caches: DataDecide parsed once per file version; a refresh reads only changed history and equals a rebuild."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr

from ddxr.facade import DataDecideNext
from ddxr.sources.datadecide import PretrainingSource
from ddxr.sources.wandb_store import WandBStore
from ddxr.stage_cache import StageCache, _categorical
from ddxr.synthetic import generate, generate_posttraining
from ddxr.synthetic.pretraining import write_datadecide

PARAMS, DATA = ("4M", "150M"), ("Dolma1.7", "C4")


def _fail_if_parsed(self):
    raise AssertionError("the DataDecide files were parsed again")


def test_datadecide_is_parsed_once_per_version_of_its_files(tmp_path, monkeypatch):
    folder = write_datadecide(tmp_path / "sources", params=PARAMS, data=DATA, layouts=("raw",))
    source = PretrainingSource(folder)
    cache = StageCache(tmp_path / "stages")
    parsed = cache.datadecide(source)
    monkeypatch.setattr(PretrainingSource, "read", _fail_if_parsed)
    cached = cache.datadecide(source)
    pd.testing.assert_frame_equal(cached.table, parsed.table)
    pd.testing.assert_frame_equal(cached.skipped, parsed.skipped)
    assert cached.source == parsed.source
    assert [path.suffix for path in (tmp_path / "stages").iterdir()] == [".nc"]  # netCDF, never pickle
    # a changed file is parsed again
    stats = source.file_stats()
    downstream = next(path for path in stats if "downstream" in path)
    os.utime(downstream, (1, 1))
    with pytest.raises(AssertionError, match="parsed again"):
        cache.datadecide(source)


def test_skipped_cells_survive_the_stage_cache(tmp_path, real_samples):
    source = PretrainingSource(real_samples / "pretrain_metrics_sample.parquet")
    parsed = StageCache(tmp_path).datadecide(source)
    cached = StageCache(tmp_path).datadecide(source)
    pd.testing.assert_frame_equal(cached.table, parsed.table)
    pd.testing.assert_frame_equal(cached.skipped, parsed.skipped)


def test_pretraining_metrics_are_read_only_when_used(tmp_path, monkeypatch):
    source = PretrainingSource(write_datadecide(tmp_path / "sources", params=PARAMS, data=DATA, layouts=("raw",)))
    frame = pd.DataFrame({"params": ["4M", "150M"], "data": ["C4", "C4"], "step": [0, 10], "arc_easy": [0.25, 0.5]})
    info = {"report": {"rows": 2}, "final_steps": []}
    made = StageCache(tmp_path / "stages").metrics(source, "core", lambda: (frame, info))
    assert made.info == info and made.table is frame

    reads = []
    read_table = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *args, **kw: reads.append(args) or read_table(*args, **kw))

    def refuse():
        raise AssertionError("computed again")

    kept = StageCache(tmp_path / "stages").metrics(source, "core", refuse)
    assert kept.info == info and not reads  # the info is the file's metadata: the table is not read for it
    pd.testing.assert_frame_equal(kept.table, frame)
    ahead = StageCache(tmp_path / "stages").metrics(source, "core", refuse)
    with ThreadPoolExecutor(1) as executor:
        ahead.read_ahead(executor)
        pd.testing.assert_frame_equal(ahead.table, frame)
    assert len(reads) == 2


def _identical(left: xr.Dataset, right: xr.Dataset) -> None:
    left, right = left.load(), right.load()
    for ds in (left, right):
        ds.attrs.pop("created", None)
    xr.testing.assert_identical(left, right)


def test_refresh_reads_only_changed_history_and_equals_a_full_rebuild(tmp_path, pg_url):
    truth = generate(tmp_path / "sources", store_url=pg_url, params=PARAMS, data=DATA, n_runs=30)
    first = DataDecideNext(tmp_path / "sources", pg_url, cache_dir=tmp_path / "cache", progress=False)
    first.dataset()
    linked = first.relationships.links.query("link_status == 'linked'")["run_id"]
    assert sorted(first.history_read_from_store) == sorted(linked)

    # the store gains runs, and the running run logs more steps and finishes
    store = WandBStore(pg_url)
    runs, history, _ = generate_posttraining(12, params=PARAMS, data=DATA, random_seed=7, messy=False)
    runs = runs[~runs["run_id"].isin(truth.runs["run_id"])]
    store.store_runs(runs)
    store.store_history(history[history["run_id"].isin(runs["run_id"])])
    running = truth.runs.loc[truth.runs["state"] == "running", "run_id"].item()
    grown = store.read_history([running], ["train_loss", "learning_rate", "total_tokens"])
    more = grown.tail(3).assign(step=grown["step"].max() + [10, 20, 30], total_tokens=grown["total_tokens"].max() + 1)
    store.store_history(pd.concat([grown, more]).drop(columns=["timestamp", "runtime"]))
    stored_runs = store.read_runs()
    finished = stored_runs[stored_runs["run_id"] == running].assign(state="finished")
    store.store_runs(finished.drop(columns=["layout", "tags", "history_line_count"]))
    store.close()

    refreshed = DataDecideNext(tmp_path / "sources", pg_url, cache_dir=tmp_path / "cache", progress=False)
    curves = refreshed.dataset()
    assert refreshed.refreshed_from is not None, refreshed.refresh_note  # incremental: only new rows were logged
    read = set(refreshed.refreshed_from[1])
    assert running in read and set(runs["run_id"]) <= read
    assert len(read) < len(set(runs["run_id"])) + 5  # the unchanged runs came from the stage cache
    assert refreshed.runs().sel(run_id=running)["state"].item() == "finished"
    lineage = curves.sel(lineage=running)
    assert lineage["step"].to_numpy()[~lineage["pretraining_phase"].to_numpy()].max() == grown["step"].max() + 30

    rebuilt = DataDecideNext(tmp_path / "sources", pg_url, cache_dir=tmp_path / "rebuild", progress=False)
    _identical(curves, rebuilt.dataset())
    _identical(refreshed.runs(), rebuilt.runs())


def test_unchanged_store_reads_no_history(tmp_path, sqlite_url):
    generate(tmp_path / "sources", store_url=sqlite_url, params=PARAMS, data=DATA, n_runs=20, messy=False)
    DataDecideNext(tmp_path / "sources", sqlite_url, cache_dir=tmp_path / "cache", progress=False).dataset()
    again = DataDecideNext(tmp_path / "sources", sqlite_url, cache_dir=tmp_path / "cache", progress=False)
    again.build()  # a rebuild (new options, or `ddxr build --refresh`) of an unchanged store
    assert again.history_read_from_store == []


def test_run_ids_become_the_categories_astype_gives() -> None:
    dtype = pd.CategoricalDtype(pd.Index(["r3", "r1", "r2"], dtype=object))
    values = pd.Series(["r1", "r1", "r2", None, "r3", "r1"], dtype="str")
    got = pd.Series(_categorical(values, dtype))
    pd.testing.assert_series_equal(got, values.astype(dtype))
    assert got.cat.codes.tolist() == [1, 1, 2, -1, 0, 1]  # a missing id stays missing

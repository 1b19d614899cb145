"""Incremental refresh: a file refreshed after the store gained or changed runs equals a full rebuild."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from ddxr.cli import main
from ddxr.coders import factorize
from ddxr.facade import DataDecideNext
from ddxr.managers.relationships import RunRelationshipManager
from ddxr.refresh import _appended_table, _sorted_table
from ddxr.sources.wandb_store import WandBStore
from ddxr.stage_cache import StageCache
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


def test_history_snapshots_and_totals_count_the_rows_of_an_id_range(small_store):
    truth, store = small_store
    engine = sa.create_engine(truth.store_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as connection:
        rows = pd.read_sql("SELECT id, run_id FROM wandb_history", connection)
    assert store.history_totals() == (len(rows), rows["id"].max())
    after, up_to = np.quantile(rows["id"], [0.3, 0.8]).astype(int)
    for bounds in ({}, {"after_id": after}, {"up_to_id": up_to}, {"after_id": after, "up_to_id": up_to}):
        kept = rows[(rows["id"] > bounds.get("after_id", 0)) & (rows["id"] <= bounds.get("up_to_id", rows["id"].max()))]
        expected = kept.groupby("run_id").agg(rows=("id", "size"), max_id=("id", "max")).reset_index()
        snapshot = store.history_snapshot(**bounds)
        assert snapshot.sort_values("run_id").reset_index(drop=True).equals(expected), bounds


# ---------------------------------------------------------------------------------------------------- refreshes
class Store:
    """A generated store whose runs (or history rows) can be held back and restored, by SQL."""

    def __init__(self, root: Path, store_url: str | None = None, layout: str = "B") -> None:
        self.sources = root / "sources"
        self.truth = generate(self.sources, store_url=store_url, n_runs=16, messy=False, store_layout=layout)
        self.url = self.truth.store_url
        self.engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg2://"))
        self.links = RunRelationshipManager(WandBStore(self.url).read_runs()).links.sort_values("created_at")
        self.root = root

    def sql(self, statement: str, **params) -> None:
        bind = [sa.bindparam(name, expanding=True) for name, value in params.items() if isinstance(value, list)]
        with self.engine.begin() as connection:
            connection.execute(sa.text(statement).bindparams(*bind), params)

    def hold(self, run_ids: list[str], name: str = "held", history_where: str = "") -> None:
        """Move runs (and their history rows matching ``history_where``) out of the store into side tables."""
        self.sql(f"CREATE TABLE {name}_runs AS SELECT * FROM wandb_runs WHERE run_id IN :ids", ids=run_ids)
        self.sql("DELETE FROM wandb_runs WHERE run_id IN :ids", ids=run_ids)
        rows = f"run_id IN :ids {history_where}"
        self.sql(f"CREATE TABLE {name}_history AS SELECT * FROM wandb_history WHERE {rows}", ids=run_ids)
        self.sql(f"DELETE FROM wandb_history WHERE {rows}", ids=run_ids)

    def restore(self, name: str = "held", keep_ids: bool = False) -> None:
        """Put held runs back; their history rows get new ids, as rows a store logs do (``keep_ids``: their old)."""
        self.sql(f"DELETE FROM wandb_runs WHERE run_id IN (SELECT run_id FROM {name}_runs)")
        self.sql(f"INSERT INTO wandb_runs SELECT * FROM {name}_runs")
        columns = ", ".join(
            column["name"]
            for column in sa.inspect(self.engine).get_columns("wandb_history")
            if keep_ids or column["name"] != "id"
        )
        self.sql(f"INSERT INTO wandb_history ({columns}) SELECT {columns} FROM {name}_history ORDER BY id")
        for table in ("runs", "history"):
            self.sql(f"DROP TABLE {name}_{table}")

    def ddxr(self, cache: str = "cache") -> DataDecideNext:
        return DataDecideNext(self.sources, self.url, cache_dir=self.root / cache, progress=False)

    def dpo_and_parent(self, which: int = 0) -> tuple[str, str]:
        dpo = self.links[self.links["run_type"].eq("dpo") & self.links["parent_in_store"]].iloc[which]
        return dpo["run_id"], dpo["parent_run_id"]


def assert_refreshed_as_built(store: Store, read: set[str] | None, dd: DataDecideNext | None = None) -> DataDecideNext:
    """Refresh (or take ``dd`` that did), check the runs read (None: a full build), compare with a full build."""
    dd = dd or store.ddxr()
    curves, runs = dd.dataset(), dd.runs()
    if read is None:
        assert dd.refreshed_from is None
    else:
        assert dd.refreshed_from is not None, dd.refresh_note
        assert set(dd.refreshed_from[1]) == read
    full = store.ddxr(f"full-{uuid.uuid4().hex[:6]}")
    for refreshed, built in ((curves, full.dataset()), (runs, full.runs())):
        refreshed, built = refreshed.load(), built.load()
        del refreshed.attrs["created"], built.attrs["created"]
        xr.testing.assert_identical(refreshed, built)
    return dd


def _with_members(store: Store, run_ids: set[str]) -> set[str]:
    """Return the runs and their parents in the store (the lineages a refresh lays out again)."""
    links = store.links.set_index("run_id")
    parents = links.loc[list(run_ids)]
    return run_ids | set(parents.loc[parents["parent_in_store"], "parent_run_id"])


@pytest.mark.parametrize("layout", ["A", "B"])
def test_new_runs_are_appended(tmp_path, monkeypatch, layout):
    store = Store(tmp_path, layout=layout)
    newest = store.links["run_id"].iloc[-3:].tolist()  # two DPO runs on old SFT runs, and an SFT run
    store.hold(newest)
    before = store.ddxr().dataset()
    store.restore()
    counted = []  # the first id each history snapshot counts from
    snapshot = WandBStore.history_snapshot
    dd = store.ddxr()
    with monkeypatch.context() as patch:
        patch.setattr(
            WandBStore,
            "history_snapshot",
            lambda self, after_id=0, **kw: counted.append(after_id) or snapshot(self, after_id, **kw),
        )
        dd.dataset()
    assert counted and all(counted), "the refresh counted the whole history instead of the rows logged since"
    dd = assert_refreshed_as_built(store, _with_members(store, set(newest)), dd)
    after = dd.dataset()
    assert after.sizes["point"] > before.sizes["point"]
    assert dd.refresh_note.startswith("refreshed")
    # the new lineages sort last: the points before them are where they were
    n = before.sizes["point"]
    assert (after["lineage"].values[:n] == before["lineage"].values).all()


def test_a_new_dpo_on_an_old_sft(tmp_path, pg_url):
    store = Store(tmp_path, pg_url)
    dpo, parent = store.dpo_and_parent()
    store.hold([dpo])
    store.ddxr().dataset()
    store.restore()
    assert_refreshed_as_built(store, {dpo, parent})


def test_a_dpo_before_its_sft_parent_then_the_parent(tmp_path):
    store = Store(tmp_path)
    dpo, parent = store.dpo_and_parent()
    store.hold([dpo], "dpo")
    store.hold([parent], "sft")
    store.ddxr().dataset()
    store.restore("dpo")  # linked by its own name; the parent's budget estimates its tokens
    assert_refreshed_as_built(store, {dpo})
    store.restore("sft")  # now the DPO's lineage starts with its parent: laid out again
    assert_refreshed_as_built(store, {dpo, parent})


@pytest.mark.parametrize("keep_ids", [False, True], ids=["rows-logged", "rows-below-the-largest-id"])
def test_a_running_run_that_gained_rows_and_finished(tmp_path, keep_ids):
    store = Store(tmp_path)
    _, parent = store.dpo_and_parent(1)
    run_id = store.links["run_id"][store.links["run_type"].eq("supervised_ft")].iloc[-1]
    wandb = WandBStore(store.url)
    finished = wandb.read_runs([run_id]).drop(columns=["layout", "tags", "history_line_count"])
    running = finished.assign(
        state="running",
        summary=[{key: value for key, value in finished["summary"].iloc[0].items() if "oe_eval" not in key}],
    )
    wandb.store_runs(running)
    store.hold([run_id], "tail", history_where="AND step > 20")
    store.sql("INSERT INTO wandb_runs SELECT * FROM tail_runs")  # the run stays; only its last rows go
    store.ddxr().dataset()
    store.restore("tail", keep_ids=keep_ids)  # kept ids do not add up from the largest id: counted in full
    wandb.store_runs(finished)
    assert_refreshed_as_built(store, {run_id})


def test_a_namesake_changes_a_dpos_parent(tmp_path):
    store = Store(tmp_path)
    dpo, parent = store.dpo_and_parent()
    store.ddxr().dataset()
    wandb = WandBStore(store.url)
    rerun = wandb.read_runs([parent]).drop(columns=["layout", "tags", "history_line_count"])
    rerun = rerun.assign(run_id="rerun-of-the-parent", created_at=rerun["created_at"] + pd.Timedelta(days=1))
    wandb.store_runs(rerun)
    columns = "step, timestamp, runtime, wandb_metadata, metrics"
    store.sql(
        f"INSERT INTO wandb_history (run_id, {columns}) SELECT 'rerun-of-the-parent', {columns} "
        "FROM wandb_history WHERE run_id = :parent",
        parent=parent,
    )
    dd = assert_refreshed_as_built(store, {dpo, "rerun-of-the-parent"})
    runs = dd.runs()
    assert runs.sel(run_id=dpo)["parent_run_id"].item() == "rerun-of-the-parent"


def test_history_rows_deleted_are_seen(tmp_path):
    store = Store(tmp_path)
    run_id = store.links["run_id"][store.links["run_type"].eq("supervised_ft")].iloc[0]
    store.ddxr().dataset()
    store.sql("DELETE FROM wandb_history WHERE run_id = :run AND step > 20", run=run_id)
    # the rows do not add up from the previous build's: the history is counted per run, and the run changed (a
    # file built before the deletion, opened as is, would not equal the full build)
    dd = assert_refreshed_as_built(store, None)
    assert dd.refresh_note and not dd.refresh_note.startswith("refreshed")


def test_a_removed_run_means_a_full_build(tmp_path):
    store = Store(tmp_path)
    store.ddxr().dataset()
    store.hold(store.links["run_id"].iloc[:1].tolist())
    dd = assert_refreshed_as_built(store, None)
    assert "disappeared" in dd.refresh_note


def test_ddxr_build_says_it_refreshed(tmp_path, capsys):
    store = Store(tmp_path)
    dpo, parent = store.dpo_and_parent()
    store.hold([dpo])
    command = ["build", "--datadecide", str(store.sources), "--db", store.url, "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    store.restore()
    assert main([*command, "--quiet"]) == 0
    assert "refreshed from ddxr-" in capsys.readouterr().out
    assert main([*command, "--quiet", "--refresh"]) == 0  # --refresh always builds in full
    assert "full build asked for" in capsys.readouterr().out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=30),
    st.lists(st.sampled_from("defghijk"), max_size=30),
    st.data(),
)
def test_tables_of_a_refresh_equal_those_of_a_full_write(before, added, data):
    """Whatever the values kept and added, refreshed tables and codes are what encoding the whole array gives."""
    first = data.draw(st.integers(0, len(before)))
    kept = data.draw(st.lists(st.integers(first, len(before) - 1), unique=True)) if first < len(before) else []
    old_codes, old_table = factorize(np.array(before, dtype=object))
    new_codes, new_table = factorize(np.array(added, dtype=object))
    whole = [*before[:first], *(before[i] for i in sorted(kept)), *added]
    tail = np.concatenate([old_codes[sorted(kept)], new_codes + len(old_table)]).astype(np.int64)
    prefix = old_codes[:first].astype(np.int64)

    known = int(prefix.max()) + 1 if len(prefix) else 0  # the values the unchanged points use: the first ones
    if first == len(before):  # only appended points: the unchanged ones use every value (what a refresh assumes)
        assert known == len(old_table)
    table, codes = _appended_table(old_table, new_table, known, tail)  # order of first appearance
    expected_codes, expected_table = factorize(np.array(whole, dtype=object))
    assert table.tolist() == expected_table.tolist()
    assert np.concatenate([prefix, codes]).tolist() == expected_codes.tolist()

    # sorted tables (index levels): both tables sorted, as the writer makes them
    old_sorted, old_sorted_codes = np.unique(np.array(before, dtype=object), return_inverse=True)
    new_sorted, new_sorted_codes = np.unique(np.array(added, dtype=object), return_inverse=True)
    old_used = [old_sorted_codes[:first], old_sorted_codes[sorted(kept)]]
    used = np.concatenate([*old_used, new_sorted_codes + len(old_sorted)])
    table, renumber = _sorted_table(old_sorted, new_sorted, used.astype(np.int64))
    values, expected = np.unique(np.array(whole, dtype=object), return_inverse=True)
    assert table.tolist() == values.tolist()
    assert renumber[used].tolist() == expected.tolist()
    if first == len(before):  # the refresh's shortcut: every value of both tables is used
        table, renumber = _sorted_table(old_sorted, new_sorted, None)
        assert table.tolist() == values.tolist()
        assert renumber[used].tolist() == expected.tolist()


def test_a_refresh_never_reads_the_datadecide_table(tmp_path, monkeypatch):
    store = Store(tmp_path)
    dpo, _ = store.dpo_and_parent()
    store.hold([dpo])
    store.ddxr().dataset()
    store.restore()

    def refuse(*args, **kwargs):
        raise AssertionError("the refresh read the whole DataDecide table")

    monkeypatch.setattr(StageCache, "datadecide", refuse)
    dd = store.ddxr()
    dd.dataset()
    assert dd.refreshed_from is not None, dd.refresh_note

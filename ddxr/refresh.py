"""Incremental refresh: bring the newest cache file up to date with a store that gained or changed runs.

A full build reads every run, links them, lays every lineage out and writes ~160 compressed variables. When the
store only gained runs or history rows since a cached build, most of that is already in the previous file. A
refresh (docs/dataset.md §6):

1. finds the newest cache file in the folder built from the same DataDecide files, options, store and ddxr code
   (its :class:`Basis`, kept in a group no open reads);
2. compares the store's runs (:meth:`~ddxr.sources.wandb_store.WandBStore.run_states`) and history snapshot with
   the basis: a run that disappeared, a changed run that had evaluations, or anything the basis cannot tell apart
   means a full build;
3. relinks only the new and changed runs and the runs whose link they can change (those naming them as parent,
   and their descendants), reads the evaluations and history only of the lineages holding an affected run, and
   lays out only those lineages;
4. copies the previous file and rewrites it in place from the first point that differs (new lineages sort last:
   :func:`ddxr.assemble.lineage_ranks`), plus the runs group, the attributes and the basis.

The build report is made from the merged tables, so a refreshed file equals a full rebuild of the same sources
(tests/test_refresh.py checks every case against one). Whenever an assumption does not hold the refresh gives up
and the caller builds in full.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import netCDF4
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

import ddxr.assemble
import ddxr.managers.evaluations
import ddxr.managers.naming
import ddxr.managers.progression
import ddxr.managers.relationships
import ddxr.report
import ddxr.sources.wandb_store
from ddxr.assemble import assemble_curves, assemble_runs, lineage_created, lineage_ranks
from ddxr.cache import RUNS_GROUP, encode, encode_runs, read_basis, write_basis
from ddxr.coders import CODES_SUFFIX, DECODES_ATTR, VALUES_SUFFIX, code_dtype, equal_runs, factorize
from ddxr.managers.progression import HISTORY_KEYS, ProgressionReport, TrainingProgressionManager, typical_gpu_count
from ddxr.managers.relationships import JSON_COLUMNS as LINK_JSON_COLUMNS
from ddxr.managers.relationships import LINK_COLUMNS, RunRelationshipManager
from ddxr.report import build_report, runs_table
from ddxr.schema import LEVELS, POINT_DIM
from ddxr.sources.wandb_store import COERCION_FAILURES
from ddxr.stage_cache import code_digest

if TYPE_CHECKING:
    from ddxr.facade import DataDecideNext
    from ddxr.sources.wandb_store import WandBStore

__all__ = ["BUILD_CODE", "Basis", "StoreState", "frame_digest", "refresh_file"]


#: Digest of the code a build's tables come from: a file built by other code is never refreshed, only rebuilt.
BUILD_CODE = code_digest(
    ddxr.assemble,
    ddxr.managers.evaluations,
    ddxr.managers.naming,
    ddxr.managers.progression,
    ddxr.managers.relationships,
    ddxr.report,
    ddxr.sources.wandb_store,
)
_SNAPSHOT = ["rows", "max_id"]
_STATE = ["digest", "created_text"]  # columns the basis adds to the runs table
_BASIS_TABLES = ("runs", "issues", "snapshot")
_LINEAGE_LISTS = ("base_checkpoints_missing", "lineages_learning_rate_unknown")


class FullBuild(Exception):
    """Why a refresh cannot equal a full build (the build then runs in full; the reason is kept for the user)."""


def frame_digest(frame: pd.DataFrame) -> str:
    """Hex digest of a frame's values, row by row (for fingerprints)."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


class StoreState:
    """The store as a fingerprint saw it: each run's state and the history's totals.

    Parameters
    ----------
    store : WandBStore
        The store.
    runs : pandas.DataFrame
        :meth:`WandBStore.run_states`.
    totals : tuple of int
        :meth:`WandBStore.history_totals`: rows and largest row id.

    The history's per-run :attr:`snapshot` (rows and largest id of each run, up to the largest id the fingerprint
    saw) scans the whole table: it is counted when first asked for, and a refresh derives it from the previous
    build's instead when the history only gained rows.
    """

    def __init__(self, store: WandBStore, runs: pd.DataFrame, totals: tuple[int, int]) -> None:
        self.store, self.runs, self.totals = store, runs, totals
        self._snapshot: pd.DataFrame | None = None

    @property
    def snapshot(self) -> pd.DataFrame:
        """:meth:`WandBStore.history_snapshot` of the rows the fingerprint saw."""
        if self._snapshot is None:
            self._snapshot = self.store.history_snapshot(up_to_id=self.totals[1])
        return self._snapshot

    def grow_from(self, snapshot: pd.DataFrame, totals: tuple[int, int]) -> None:
        """Take the snapshot as ``snapshot`` (of ``totals``) plus the rows logged since.

        Rows deleted, or written below the largest id ``snapshot`` saw, do not add up: the snapshot is then counted
        in full when asked for.
        """
        added = self.store.history_snapshot(after_id=totals[1], up_to_id=self.totals[1])
        if totals[0] + int(added["rows"].sum()) == self.totals[0]:
            grown = pd.concat([snapshot, added], ignore_index=True).groupby("run_id", sort=True)
            self._snapshot = grown.agg(rows=("rows", "sum"), max_id=("max_id", "max")).reset_index()


@dataclass
class Basis:
    """What a build leaves for a later refresh to compare the sources with and to reuse.

    Attributes
    ----------
    meta : dict
        ``key`` (:meth:`DataDecideNext.basis_key`), ``available`` and ``variables`` (metric variables),
        ``evaluated`` (runs with evaluations), ``typical_gpus``, ``coercions``, the lineage lists of the
        progression report, ``skipped_rows`` (``{run: {reason: rows}}``) and ``history`` (the rows and largest row
        id of ``snapshot``).
    runs : pandas.DataFrame
        The runs table, plus each run's ``digest`` and ``created_text``.
    issues : pandas.DataFrame
        The evaluation issues of every run.
    snapshot : pandas.DataFrame
        The history snapshot the build read (:meth:`WandBStore.history_snapshot`), runs without a run row included.
    """

    meta: dict
    runs: pd.DataFrame
    issues: pd.DataFrame
    snapshot: pd.DataFrame

    @classmethod
    def of_build(
        cls,
        dd: DataDecideNext,
        table: pd.DataFrame,
        issues: pd.DataFrame,
        evaluated: list[str],
        available: list[str],
        variables: list[str],
    ) -> Basis:
        """Return the basis of the build ``dd`` just made (its managers still held)."""
        training = dd.training
        report = training.report
        meta = {
            "key": dd.basis_key(),
            "available": [str(name) for name in available],
            "variables": list(variables),
            "evaluated": [str(run_id) for run_id in evaluated],
            "typical_gpus": training.typical_gpus,
            "coercions": dict(dd._history.coercions),
            "skipped_rows": report.history_rows_skipped,
            "lineages": {name: report.run_ids.get(name) for name in _LINEAGE_LISTS},
        }
        return cls.of_state(meta, table, issues, dd._state())

    @classmethod
    def of_state(cls, meta: dict, table: pd.DataFrame, issues: pd.DataFrame, state: StoreState) -> Basis:
        """Return the basis of ``meta``, the runs ``table`` and the evaluation ``issues`` of the store at ``state``."""
        snapshot = state.snapshot
        history = [int(snapshot["rows"].sum()), state.totals[1]]  # the snapshot counts the ids up to the totals'
        runs = state.runs.set_index("run_id")
        table = table.assign(
            digest=table["run_id"].map(runs["digest"]).to_numpy(),
            created_text=table["run_id"].map(runs["created_at"]).to_numpy(),
        )
        return cls({**meta, "history": history}, table, issues, snapshot)

    def encoded(self) -> dict[str, bytes]:
        """Return the basis as the bytes :func:`ddxr.cache.write_basis` stores (JSON and parquet, no pickle)."""
        tables = {name: _parquet(getattr(self, name)) for name in _BASIS_TABLES}
        return {"meta": json.dumps(self.meta).encode(), **tables}

    @classmethod
    def decoded(cls, stored: dict[str, bytes]) -> Basis:
        """Invert :meth:`encoded`."""
        tables = [pq.read_table(io.BytesIO(stored[name])).to_pandas() for name in _BASIS_TABLES]
        return cls(json.loads(stored["meta"]), *tables)


def _parquet(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def find_previous(folder: Path, key: str, exclude: Path) -> tuple[Path, Basis] | None:
    """Return the newest ddxr file in ``folder`` (other than ``exclude``) whose basis has ``key``."""
    candidates = [path for path in folder.glob("ddxr-*.nc") if path != exclude]
    for path in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        stored = read_basis(path)
        try:
            if stored is not None and json.loads(stored["meta"]).get("key") == key:
                return path, Basis.decoded(stored)
        except (KeyError, ValueError, TypeError, OSError, pa.ArrowException):  # a basis of another ddxr: skipped
            continue
    return None


# ---------------------------------------------------------------------------------------------------- the plan
def _changed_runs(basis: Basis, state: StoreState) -> tuple[pd.Index, pd.Index] | None:
    """Return the new and the changed runs; None when a run disappeared (a full build)."""
    old = basis.runs.set_index("run_id")
    now = state.runs.set_index("run_id")
    if not old.index.isin(now.index).all():
        raise FullBuild("runs disappeared from the store")
    # the previous build's history snapshot and the rows logged since (counted in full when they do not add up)
    state.grow_from(basis.snapshot, tuple(basis.meta["history"]))
    then, now_rows = (_per_run(snapshot, old.index) for snapshot in (basis.snapshot, state.snapshot))
    kept = now.reindex(old.index)
    changed = (kept["digest"] != old["digest"]) | (now_rows != then).any(axis=1)
    return now.index.difference(old.index, sort=False), old.index[changed.to_numpy()]


def _per_run(snapshot: pd.DataFrame, run_ids: pd.Index) -> pd.DataFrame:
    """Return the rows and largest row id of each of ``run_ids`` in a history snapshot (0: no rows)."""
    return snapshot.set_index("run_id")[_SNAPSHOT].reindex(run_ids).fillna(0).astype("int64")


def _parent_names(links: pd.DataFrame, names: pd.Series) -> pd.Series:
    """Return the name each run's parent was looked up by (``parent_run_id``: the run found, else that name)."""
    found = links["parent_run_id"].map(names)
    return found.where(links["parent_in_store"].astype(bool), links["parent_run_id"])


def _relinked(old: pd.DataFrame, old_names: pd.Series, now_names: pd.Series, start: pd.Index) -> pd.Index:
    """Return the runs whose links can change: ``start``, and the runs naming one as parent (old or new name)."""
    wanted = _parent_names(old, old_names)
    relinked = pd.Index(start)
    while True:
        names = set(now_names.reindex(relinked).dropna()) | set(old_names.reindex(relinked).dropna())
        naming = old["run_id"][wanted.isin(names) | (old["parent_in_store"] & old["parent_run_id"].isin(relinked))]
        grown = relinked.union(pd.Index(naming), sort=False)
        if len(grown) == len(relinked):
            return relinked
        relinked = grown


def _relink(dd: DataDecideNext, run_ids: pd.Index, now_names: pd.Series) -> pd.DataFrame:
    """Links of ``run_ids`` as a full build gives them: read with every run their parent lookup can reach."""
    frame = dd.wandb.read_runs(list(run_ids), json_columns=LINK_JSON_COLUMNS)
    while True:
        manager = RunRelationshipManager(frame, final_steps=dd.final_steps())
        looked_up = _parent_names(manager.links, frame.set_index("run_id")["run_name"])
        reach = now_names.index[now_names.isin(set(looked_up))].difference(frame["run_id"])
        if reach.empty:
            return manager.links[manager.links["run_id"].isin(run_ids)]
        frame = pd.concat([frame, dd.wandb.read_runs(list(reach), json_columns=LINK_JSON_COLUMNS)], ignore_index=True)


def _rows_differ(left: pd.DataFrame, right: pd.DataFrame) -> pd.Series:
    """Per run id (the index of both): whether any column differs, missing values equal to each other."""
    right = right.reindex(index=left.index, columns=left.columns)
    differs = pd.Series(False, index=left.index)
    for name in left.columns:
        a, b = left[name].astype(object), right[name].astype(object)
        differs |= ~((a == b) | (a.isna() & b.isna()))
    return differs


@dataclass
class _Merged:
    """The tables of a refreshed build, all runs."""

    links: pd.DataFrame
    table: pd.DataFrame
    issues: pd.DataFrame
    report: ProgressionReport
    coercions: Counter
    rebuilt: set  # lineages laid out again
    points: pd.DataFrame | None
    training: TrainingProgressionManager | None
    post_metrics: pd.DataFrame
    read_runs: list


def _merge(dd: DataDecideNext, basis: Basis, state: StoreState) -> _Merged:
    """Relink, evaluate and lay out only what changed.

    Raises
    ------
    FullBuild
        When the refresh cannot equal a full build.
    """
    new, changed = _changed_runs(basis, state)
    if any(basis.meta["coercions"].values()) and len(changed):
        # counted over all rows, not per run: what a changed run's old rows held cannot be taken off
        raise FullBuild("a run changed and the previous build counted unreadable history values")
    if changed.isin(basis.meta["evaluated"]).any():
        raise FullBuild("a run with evaluations changed (its variables may be gone)")
    old_table = basis.runs.drop(columns=_STATE).set_index("run_id", drop=False)
    old_links = old_table[LINK_COLUMNS].reset_index(drop=True)
    now_names = state.runs.set_index("run_id")["run_name"]
    old_names = old_table["run_name"]
    relinked = _relinked(old_links, old_names, now_names, new.union(changed, sort=False))
    fresh = _relink(dd, relinked, now_names).set_index("run_id", drop=False)
    kept = old_links[~old_links["run_id"].isin(relinked)]
    links = pd.concat([kept, fresh.reset_index(drop=True)], ignore_index=True)
    order = pd.Index(links["run_id"]).get_indexer(state.runs["run_id"])
    links = _like(links.take(order).reset_index(drop=True), old_links)
    old_again = relinked.intersection(old_links["run_id"])
    moved = _rows_differ(fresh.loc[old_again, LINK_COLUMNS], old_table.loc[old_again, LINK_COLUMNS])
    affected = set(new) | set(changed) | set(moved.index[moved.to_numpy()])

    manager = RunRelationshipManager.from_links(links)
    chains = manager.lineage_chains()
    rebuilt = set(chains.loc[chains["run_id"].isin(affected), "lineage"])
    if old_links["run_id"].isin(affected).any():  # the lineages an old run was in (none when only runs are new)
        old_chains = RunRelationshipManager.from_links(old_links).lineage_chains()
        rebuilt |= set(old_chains.loc[old_chains["run_id"].isin(affected), "lineage"])
    members = set(chains.loc[chains["lineage"].isin(rebuilt), "run_id"])

    if typical_gpu_count(links) != basis.meta["typical_gpus"]:
        raise FullBuild("the store's usual GPU count changed (every run estimated with it changes)")
    read = sorted(members | affected)
    with ThreadPoolExecutor(1) as reader:  # the history is read (the server's work, and Arrow's) beside the evaluations
        reading = reader.submit(_history, dd, sorted(members), set(new) | set(changed), basis.meta["coercions"])
        post_metrics, issues = dd.evaluations.posttraining_evaluations(
            dd.wandb.read_run_entries("summary", "oe_eval_metrics/", read)
        )
        history, coercions = reading.result()
    training, points = None, None
    if members:
        training = TrainingProgressionManager(
            dd._pretraining_metrics,
            history,
            manager,
            evaluated_runs=set(post_metrics.index),
            pretraining_seeds=dd.pretraining_seeds,
            dpo_tokens_per_pair=dd.dpo_tokens_per_pair,
            runs=members,
        )
        points = training.posttraining_points()
    if points is not None:
        points = points[points["lineage"].isin(rebuilt)]
    redone = set(read)
    table = pd.concat(
        [old_table[~old_table["run_id"].isin(redone)], runs_table(links[links["run_id"].isin(redone)], training)],
        ignore_index=True,
    )
    table = table.set_index("run_id", drop=False).loc[links["run_id"]].reset_index(drop=True)
    table = _like(table[list(old_table.columns)], old_table)
    issues = pd.concat([basis.issues[~basis.issues["run_id"].isin(redone)], issues], ignore_index=True)
    report = _progression_report(
        table, basis.meta, ProgressionReport() if training is None else training.report, rebuilt
    )
    return _Merged(links, table, issues, report, coercions, rebuilt, points, training, post_metrics, read)


def _history(dd: DataDecideNext, runs: list[str], fresh: set, before: dict) -> tuple[pd.DataFrame, Counter]:
    """History of ``runs``, and the unreadable values of all runs: those before plus those of the ``fresh`` runs.

    The other runs' rows are unchanged: their unreadable values are counted in ``before`` already.
    """
    reads = [[run for run in runs if run in fresh], [run for run in runs if run not in fresh]]
    frames = [dd.wandb.read_history(ids, HISTORY_KEYS) for ids in reads]
    coercions = Counter(before)
    coercions.update(frames[0].attrs.get(COERCION_FAILURES, {}))
    history = pd.concat(frames, ignore_index=True)
    history.attrs = {}
    return history, coercions


def _like(frame: pd.DataFrame, model: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with ``model``'s dtypes on the columns they share (a full build types them over all runs)."""
    dtypes = {
        name: model[name].dtype for name in frame.columns if name in model and frame[name].dtype != model[name].dtype
    }
    try:
        return frame.astype(dtypes) if dtypes else frame
    except (TypeError, ValueError) as error:
        raise FullBuild(f"a column of the new runs does not fit the previous runs table ({error})") from error


def _progression_report(table: pd.DataFrame, meta: dict, mini: ProgressionReport, rebuilt: set) -> ProgressionReport:
    """Return the progression report of all runs: counts from the runs table, the rest from basis and rebuild."""
    linked = table[table["link_status"] == "linked"]
    report = ProgressionReport()
    report.duplicate_history_rows = int(linked["duplicate_steps"].fillna(0).sum())
    flags = {
        "runs_with_duplicate_steps": linked["duplicate_steps"] > 0,
        "runs_tokens_repaired": linked["tokens_repaired"].astype(bool),
        "runs_loss_summed": linked["loss_summed"].astype(bool),
        "runs_tokens_estimated": linked["tokens_estimated"].astype(bool),
        "runs_without_history": linked["n_history_rows"] == 0,
    }
    for count, mask in flags.items():
        report.name(count, linked.loc[mask.to_numpy(), "run_id"])
    skipped = {**meta["skipped_rows"], **mini.history_rows_skipped}
    redone = set(mini.history_rows_skipped) | set(table["run_id"][table["run_id"].isin(rebuilt)])
    report.history_rows_skipped = {
        run: reasons for run, reasons in skipped.items() if run in mini.history_rows_skipped or run not in redone
    }
    for count in _LINEAGE_LISTS:
        before, now = meta["lineages"][count], mini.run_ids.get(count)
        if before is None and now is None:
            continue
        kept = [lineage for lineage in before or [] if lineage not in rebuilt]
        report.name(count, sorted(set(kept) | set(now or [])))
    reasons = table.loc[table["skip_reason"] != "", ["run_id", "skip_reason"]]
    report.skipped_runs = dict(zip(reasons["run_id"], reasons["skip_reason"], strict=True))
    return report


# ---------------------------------------------------------------------------------------------------- the file
def refresh_file(dd: DataDecideNext, target: Path, current: Path, attrs_for: Any) -> bool:
    """Write at ``target`` the previous file of ``dd``'s cache folder brought up to date; False: build in full.

    ``current`` is the file being made (never a previous one); ``attrs_for(report)`` returns the Dataset
    attributes of a build whose report is ``report``. ``dd.refreshed_from`` records the file refreshed and the runs
    read from the store.
    """
    dd.refreshed_from, dd.refresh_note = None, "no previous file of the same sources and options"
    previous = find_previous(dd.cache_dir, dd.basis_key(), current)
    if previous is None:
        return False
    try:
        written = _refresh(dd, target, *previous, attrs_for)
    except FullBuild as reason:
        dd.refresh_note = str(reason)
        return False
    dd.refresh_note = f"refreshed {previous[0].name}"
    return written


def _refresh(dd: DataDecideNext, target: Path, path: Path, basis: Basis, attrs_for: Any) -> bool:
    # the byte copy (the kernel's work) and the pretraining metrics' read (Arrow's) run beside the merge (Python's)
    with ThreadPoolExecutor(1) as copier:
        copied = copier.submit(shutil.copyfile, path, target)
        dd._pretraining_stage.read_ahead(copier)  # first used once the new runs are linked and evaluated
        try:
            growth = _growth(dd, basis, attrs_for)
        finally:
            copied.result()
    _grow(target, growth)
    dd.refreshed_from = (path, growth.read_runs)
    return True


@dataclass
class _Growth:
    """What the previous file takes to become the refreshed one (:func:`_grow`)."""

    curves: dict[str, np.ndarray] | None  # the rebuilt lineages' variables as the file stores them; None: no points
    runs: xr.Dataset  # as the file stores them
    attrs: dict  # the file's
    created: pd.Series  # each lineage's creation time (its rank)
    rebuilt: set
    basis: dict[str, bytes]
    read_runs: list  # the runs read from the store


def _growth(dd: DataDecideNext, basis: Basis, attrs_for: Any) -> _Growth:
    """Merge the store's changes into ``basis``: the curves of the rebuilt lineages, the runs, attributes, basis."""
    state = dd._state()
    merged = _merge(dd, basis, state)
    report = build_report(
        dd._pretraining_stage.info["report"],
        merged.links,
        merged.issues,
        merged.coercions,
        dd.orphans(merged.links),
        merged.report,
    )
    attrs = attrs_for(report)
    variables = basis.meta["variables"]
    available = [*basis.meta["available"], *merged.post_metrics.columns]
    if dd.evaluations.variables(list(dict.fromkeys(available))) != variables:
        raise FullBuild("the new runs bring other metric variables")
    created = lineage_created(merged.table)
    curves = None
    if merged.points is not None and len(merged.points):
        curves = assemble_curves(
            merged.points,
            merged.training.metric_table,  # points exist: so does the progression
            merged.post_metrics,
            variables,
            lambda name: {},
            attrs,
            created,
        )
    new_basis = Basis.of_state(
        {
            **basis.meta,
            "evaluated": sorted(set(basis.meta["evaluated"]) | set(merged.post_metrics.index)),
            "coercions": dict(merged.coercions),
            "skipped_rows": merged.report.history_rows_skipped,
            "lineages": {name: merged.report.run_ids.get(name) for name in _LINEAGE_LISTS},
            "available": list(dict.fromkeys(available)),
        },
        merged.table,
        merged.issues,
        state,
    )
    encoded, file_attrs, encoded_runs = _encoded(curves, assemble_runs(merged.table), attrs)
    return _Growth(encoded, encoded_runs, file_attrs, created, merged.rebuilt, new_basis.encoded(), merged.read_runs)


def _grow(target: Path, growth: _Growth) -> None:
    """Rewrite ``target``, a copy of the previous file: the points from the first lineage that differs, runs, attrs.

    Raises
    ------
    FullBuild
        When the file cannot take the change in place.
    """
    # the copy is read as the previous file: each variable's old values are read before it is written (and one
    # handle fewer on a file of ~180 variables saves a tenth of a second)
    with netCDF4.Dataset(target, "a") as file:
        file.set_auto_maskandscale(False)
        file.set_auto_chartostring(False)  # characters as stored: converting them costs ~1 s a string variable
        if not file.dimensions[POINT_DIM].isunlimited():
            raise FullBuild("the previous file cannot grow (written by an older ddxr)")
        encoded = growth.curves
        first, pieces, size = _layout(file, encoded, growth.created, growth.rebuilt)
        if size < file.dimensions[POINT_DIM].size:
            raise FullBuild("the curves lost points (a file cannot shrink in place)")
        # every point of the file stays where it is: only points are appended (the usual refresh)
        appended = first == file.dimensions[POINT_DIM].size and all(source == "new" for source, _, _ in pieces)
        coded = {file[name].getncattr(DECODES_ATTR): name for name in file.variables if name.endswith(CODES_SUFFIX)}
        written = set()
        for name in coded:
            _write_coded(file, encoded, name, first, pieces, appended)
            written |= {name, f"{name}{CODES_SUFFIX}", f"{name}{VALUES_SUFFIX}"}
        for name, variable in file.variables.items():
            if name in written or variable.dimensions != (POINT_DIM,):
                continue
            if encoded is not None and (name not in encoded or encoded[name].dtype != variable.dtype):
                raise FullBuild(f"variable {name!r} of the new lineages does not match the file")
            tail = _tail(file[name], encoded[name] if encoded is not None else None, pieces)
            file[name][first : first + len(tail)] = tail
        _write_runs(file.groups[RUNS_GROUP], growth.runs)
        file.setncatts(growth.attrs)
        write_basis(file, growth.basis)


def _encoded(
    curves: xr.Dataset | None, runs: xr.Dataset, attrs: dict
) -> tuple[dict[str, np.ndarray] | None, dict, xr.Dataset]:
    """Return the rebuilt lineages' values, the file's attributes and the runs, as the file stores them.

    Values and runs are CF-encoded (booleans as int8 …); the values are plain arrays by variable name (a Dataset
    makes a DataArray of each name looked up: a millisecond each, with ~180 variables).
    """
    encoded_runs = encode_runs(runs)
    encoded_runs = xr.Dataset(
        {
            name: xr.conventions.encode_cf_variable(variable, name=name)
            for name, variable in encoded_runs.variables.items()
        },
        attrs=encoded_runs.attrs,
    )
    if curves is None:
        return None, attrs, encoded_runs
    encoded, _ = encode(curves, xr.Dataset())
    values = {
        str(name): (
            variable if variable.dtype.kind in "OUS" else xr.conventions.encode_cf_variable(variable, name=name)
        ).values
        for name, variable in encoded.variables.items()
    }
    return values, dict(encoded.attrs), encoded_runs


def _layout(
    old: netCDF4.Dataset, encoded: dict[str, np.ndarray] | None, created: pd.Series, rebuilt: set
) -> tuple[int, list[tuple[str, int, int]], int]:
    """Where the file starts to differ, and what follows: pieces ``("old"|"new", start, stop)`` in point order."""
    codes = old[f"lineage{CODES_SUFFIX}"][:]
    table = np.asarray(old[f"lineage{VALUES_SUFFIX}"][:], dtype=object)
    starts, lengths = equal_runs(codes)
    blocks = pd.DataFrame({"lineage": table[codes[starts]], "source": "old", "start": starts, "stop": starts + lengths})
    if blocks["lineage"].duplicated().any():
        raise FullBuild("the previous file is not laid out lineage by lineage")
    blocks = blocks[~blocks["lineage"].isin(rebuilt)]
    if encoded is not None:
        new_codes = encoded[f"lineage{CODES_SUFFIX}"]
        new_table = encoded[f"lineage{VALUES_SUFFIX}"]
        starts, lengths = equal_runs(new_codes)
        fresh = pd.DataFrame(
            {"lineage": new_table[new_codes[starts]], "source": "new", "start": starts, "stop": starts + lengths}
        )
        blocks = pd.concat([blocks, fresh], ignore_index=True)
    lineages = pd.Index(blocks["lineage"]).sort_values()
    ranks = pd.Series(lineage_ranks(lineages, created), index=lineages)
    blocks = blocks.iloc[np.argsort(ranks[blocks["lineage"]].to_numpy(), kind="stable")].reset_index(drop=True)
    old_order = blocks["source"].eq("old") & (blocks["start"].to_numpy() == np.append(0, blocks["stop"][:-1]))
    same = old_order.cumprod().astype(bool)  # the leading blocks that stay where they were
    first = int(blocks["stop"][same].iloc[-1]) if same.any() else 0
    tail = blocks[~same]
    pieces = list(zip(tail["source"], tail["start"], tail["stop"], strict=True))
    return first, pieces, first + int((tail["stop"] - tail["start"]).sum())


def _tail(old: netCDF4.Variable, new: np.ndarray | None, pieces: list[tuple[str, int, int]]) -> np.ndarray:
    """Return the values of the pieces, in order: old ones read as stored, new ones as encoded."""
    parts = [old[start:stop] if source == "old" else new[start:stop] for source, start, stop in pieces]
    if not parts:
        return old[0:0]
    return np.concatenate(parts)


def _write_coded(
    file: netCDF4.Dataset,
    encoded: dict[str, np.ndarray] | None,
    name: str,
    first: int,
    pieces: list[tuple[str, int, int]],
    appended: bool,
) -> None:
    """Rewrite the codes, table and plain copy of ``name`` from ``first`` on (all codes if the table's order moved).

    Tables in order of first appearance (string coordinates) keep the values the unchanged points use and append the
    others; sorted tables (index levels) take the new values in place, which renumbers the codes after them.
    ``appended``: every point of the file stays, so the unchanged points use every value of each table (a table
    holds exactly the values its points use) and their codes are read only if they must be renumbered.
    """
    codes_name, values_name = f"{name}{CODES_SUFFIX}", f"{name}{VALUES_SUFFIX}"
    stored = file[codes_name]

    def unchanged_codes() -> np.ndarray:
        return np.asarray(stored[:first])  # as stored: narrow integers index as well as int64 ones

    prefix = None if appended else unchanged_codes()
    old_table = np.asarray(file[values_name][:], dtype=object if file[values_name].dtype is str else None)
    new_table = old_table[:0] if encoded is None else np.asarray(encoded[values_name]).astype(old_table.dtype)
    # the tail's values as positions in the old table followed by the new one
    tail = np.concatenate(
        [
            np.zeros(0, np.int64),
            *(
                np.asarray(stored[start:stop]).astype(np.int64)
                if source == "old"
                else encoded[codes_name][start:stop].astype(np.int64) + len(old_table)
                for source, start, stop in pieces
            ),
        ]
    )
    renumbered = None  # the unchanged points' codes, when the table's order moved them
    if name in LEVELS:
        used = None if prefix is None else np.concatenate([prefix, tail])
        table, renumber = _sorted_table(old_table, new_table, used)
        codes = renumber[tail]
        if prefix is None:  # every old value is used, and keeps its order: the last one moved if any did
            moved = len(old_table) > 0 and renumber[len(old_table) - 1] != len(old_table) - 1
        else:
            moved = not np.array_equal(renumber[prefix], prefix)
        if moved:
            renumbered = renumber[unchanged_codes() if prefix is None else prefix]
    else:
        if prefix is None:
            known = len(old_table)
        else:  # the values the unchanged points use: the table's first ones
            known = int(prefix.max()) + 1 if len(prefix) else 0
        table, codes = _appended_table(old_table, new_table, known, tail)
    if code_dtype(len(table)) != stored.dtype or len(table) < len(old_table):
        raise FullBuild(f"the table of {name!r} changed its code type or shrank")
    if renumbered is not None:
        stored[:first] = renumbered.astype(stored.dtype, copy=False)
    stored[first:] = codes.astype(stored.dtype, copy=False)
    file[values_name][:] = table
    plain, tail_codes = file[name], codes
    if plain.dtype.kind == "S":  # fixed-width UTF-8 characters
        width = plain.shape[1]
        utf8 = np.array([value.encode("utf-8") for value in table.tolist()])
        if utf8.dtype.itemsize > width:
            raise FullBuild(f"a new {name!r} is longer than the file's strings")
        # the characters of fixed-width bytes are their bytes: a view (netCDF4.stringtochar loops, ~0.4 s here)
        plain[first:] = np.ascontiguousarray(utf8.astype(f"S{width}")[tail_codes]).view("S1").reshape(-1, width)
    else:
        plain[first:] = table[tail_codes]


def _sorted_table(old: np.ndarray, new: np.ndarray, used: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted table of the values ``used`` (positions in ``old`` then ``new``, both sorted and distinct).

    Also returns the new code of each position (-1: unused), in the narrowest type that holds every position. The
    new values are merged in, not sorted again. ``used`` None: every value of ``old`` and ``new``.
    """
    dtype = code_dtype(len(old) + len(new))
    if used is None:
        kept_old, kept = None, old
    else:
        kept_old = np.flatnonzero(np.bincount(used, minlength=len(old) + len(new))[: len(old)])
        kept = old[kept_old]
    at = np.searchsorted(kept, new)
    present = at < len(kept)
    present[present] = kept[at[present]] == new[present]
    inserted = at[~present]  # a kept value moves up by the new values inserted at or before its position
    table = np.insert(kept, inserted, new[~present])
    renumber = np.full(len(old) + len(new), -1, dtype=dtype)
    # the shifts are counted, not searched (millions of kept values), in narrow integers: a table like
    # cumulative_tokens' has as many values as a file has points, and each temporary of that size costs page faults
    shifts = np.zeros(len(kept), dtype=dtype)
    np.add.at(shifts, inserted[inserted < len(kept)], 1)
    kept_codes = renumber[: len(old)] if kept_old is None else np.empty(len(kept), dtype=dtype)
    np.cumsum(shifts, out=kept_codes)
    kept_codes += np.arange(len(kept), dtype=dtype)
    if kept_old is not None:
        renumber[kept_old] = kept_codes
    renumber[len(old) :] = np.searchsorted(table, new)
    return table, renumber


def _appended_table(old: np.ndarray, new: np.ndarray, known: int, tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the table in order of first appearance and the tail's codes.

    The unchanged points keep their codes: they use the ``known`` first values of ``old``.
    """
    ids, distinct = pd.factorize(np.concatenate([old, new]))  # one id per value (old and new may share some)
    values = ids[tail]
    later = values >= known
    codes = values.copy()
    codes[later], first_seen = factorize(values[later])
    codes[later] += known
    return np.concatenate([old[:known], np.asarray(distinct)[first_seen]]), codes


def _write_runs(group: netCDF4.Group, encoded: xr.Dataset) -> None:
    """Overwrite the runs group's variables (same names, types and dimensions) and attributes."""
    if set(group.variables) != set(encoded.variables):
        raise FullBuild("the runs table has other columns")
    for name, variable in encoded.variables.items():
        stored = group[name]
        values = variable.values
        if stored.dimensions != variable.dims or (stored.dtype is not str and stored.dtype != values.dtype):
            raise FullBuild(f"runs column {name!r} changed its type")
        stored[: len(values)] = values
        attrs = {key: value for key, value in variable.attrs.items() if key != "_FillValue"}
        for key in set(stored.ncattrs()) - set(attrs) - {"_FillValue"}:
            stored.delncattr(key)
        stored.setncatts(attrs)
    for key in set(group.ncattrs()) - set(encoded.attrs):
        group.delncattr(key)
    group.setncatts(dict(encoded.attrs))

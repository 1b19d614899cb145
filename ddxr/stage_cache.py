"""Stage caches: the parsed DataDecide table and the history read from the W&B store, kept between builds.

A build depends on both sources, so its cache file (:mod:`ddxr.cache`) is stale as soon as either changes. Its two
expensive inputs change far less often than that:

- the DataDecide table (≈1.5 M raw rows to parse) changes only with its files: it is kept as one netCDF file keyed
  by the files' fingerprint (and the parser's code), so a change in the store never parses DataDecide again;
- what a build takes from that table (the standardized metrics of its ``metrics`` option, the DataDecide part of
  the report, the final evaluated steps) is kept too, as parquet: a build or refresh after a change in the store
  reads those few columns, never the whole table (≈2,000 columns);
- the history of a run that gained no rows is the history it had: the history read for the last build is kept as
  parquet with a per-run snapshot of the store (rows and largest row id per run), and the next build reads from the
  store only the runs that are new or whose snapshot changed (rows added, or the history replaced).

Either way the build runs its whole pipeline on the same tables as a build without caches, so the result is the
same Dataset. Files are netCDF and parquet (no pickle), written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ddxr.managers.evaluations as evaluations_module
import ddxr.managers.relationships as relationships_module
import ddxr.sources.datadecide as datadecide_module
import ddxr.sources.wandb_store as wandb_store_module
import ddxr.vocabulary as vocabulary_module
from ddxr.cache import SCHEMA_VERSION, fingerprint
from ddxr.sources.datadecide import PretrainingEvals, PretrainingSource
from ddxr.sources.wandb_store import COERCION_FAILURES, WandBStore

__all__ = ["HistoryRead", "MetricsStage", "StageCache"]

_METADATA_KEY = "ddxr_stage"  # file metadata (JSON): what the stored table alone cannot say
_COLUMNS_PER_WRITE = 256  # float columns copied into one netCDF write (≈50 MB for the full grid)


def code_digest(*modules: object) -> str:
    """Digest of the source code that produced a stage: a changed parser or vocabulary never reuses old tables."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


class MetricsStage:
    """The standardized pretraining metrics (:attr:`table`, read when first used) and their ``info``.

    Parameters
    ----------
    info : dict
        What a build takes besides the table: the DataDecide report, source and final evaluated steps.
    read : callable
        Returns the table.
    """

    def __init__(self, info: dict, read: Callable[[], pd.DataFrame]) -> None:
        self.info = info
        self._read = read
        self._table: pd.DataFrame | None = None
        self._reading: Future | None = None

    def read_ahead(self, executor: Executor) -> None:
        """Start reading the table in ``executor`` (a parquet read, which lets other Python threads run)."""
        if self._table is None and self._reading is None:
            self._reading = executor.submit(self._read)

    @property
    def table(self) -> pd.DataFrame:
        """The standardized metrics, one row per checkpoint."""
        if self._table is None:
            self._table = self._read() if self._reading is None else self._reading.result()
            self._reading = None
        return self._table


class HistoryRead:
    """History rows of the linked runs and the non-numeric values read as NaN, per metric key.

    Attributes
    ----------
    frame : pandas.DataFrame
        ``WandBStore.iter_history`` columns, ``run_id`` as a categorical over the requested runs.
    coercions : collections.Counter
        ``{metric key: values that were not numbers}`` over the rows read.
    read_from_store : list of str
        Runs whose history was read from the store (the others came from the stage cache).
    """

    def __init__(self, frame: pd.DataFrame, coercions: Counter, read_from_store: list[str]) -> None:
        self.frame = frame
        self.coercions = coercions
        self.read_from_store = read_from_store


class StageCache:
    """Parquet caches of the DataDecide table and of the store's history under ``folder``.

    Parameters
    ----------
    folder : str or path
        Where the stage files live (created when first written).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    # ------------------------------------------------------------------ DataDecide
    def datadecide_path(self, source: PretrainingSource) -> Path:
        """File of the parsed table of ``source`` as its files are now."""
        key = fingerprint(
            {
                "files": source.file_stats(),
                "mean": source.mean,
                "reader": code_digest(datadecide_module, vocabulary_module, sys.modules[__name__]),
                "schema_version": SCHEMA_VERSION,
            }
        )
        return self.folder / f"datadecide-{key}.nc"

    def datadecide(self, source: PretrainingSource) -> PretrainingEvals:
        """Return the parsed DataDecide table: from the stage file when the files are unchanged, else parsed and kept.

        Raises
        ------
        SourceError
            As :meth:`PretrainingSource.read`, when the files must be parsed.
        """
        path = self.datadecide_path(source)
        if path.is_file():
            return _read_evals(path)
        evals = source.read()
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_evals(evals, path)
        return evals

    def metrics(
        self, source: PretrainingSource, metrics: str | list[str], compute: Callable[[], tuple[pd.DataFrame, dict]]
    ) -> MetricsStage:
        """Return the standardized pretraining metrics of the ``metrics`` option and what else a build takes from them.

        ``compute()`` returns ``(table, info)`` (``info``: JSON-able) from the DataDecide table when the stage file of
        these files, option and code is missing; then both are kept as parquet. A build or refresh then reads the
        selected metric columns only, never the whole DataDecide table, and only when it uses them (the info comes
        from the file's metadata).
        """
        key = fingerprint(
            {
                "datadecide": self.datadecide_path(source).name,
                "metrics": metrics,
                "code": code_digest(evaluations_module, relationships_module, sys.modules[__name__]),
            }
        )
        path = self.folder / f"metrics-{key}.parquet"
        if path.is_file():
            info = json.loads(pq.read_schema(path).metadata[_METADATA_KEY.encode()])
            # one thread: the table is small (a checkpoint a row), and a refresh reads it beside its own work
            return MetricsStage(info, lambda: pq.read_table(path, use_threads=False).to_pandas(use_threads=False))
        frame, info = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        table = _metadata(pa.Table.from_pandas(frame, preserve_index=False), info)
        _replace(path, lambda target: pq.write_table(table, target, compression="lz4"))
        return MetricsStage(info, lambda: frame)

    # ------------------------------------------------------------------ history
    def history_path(self, store: WandBStore, keys: Sequence[str]) -> Path:
        """File of the history last read from ``store`` with ``keys``."""
        key = fingerprint(
            {
                "store": store.url_redacted,
                "keys": list(keys),
                "reader": code_digest(wandb_store_module),
                "schema_version": SCHEMA_VERSION,
            }
        )
        return self.folder / f"history-{key}.parquet"

    def history(
        self,
        store: WandBStore,
        run_ids: Sequence[str],
        keys: Sequence[str],
        snapshot: pd.DataFrame,
        chunks=iter,
    ) -> HistoryRead:
        """History of ``run_ids``: unchanged runs from the stage file, the others from the store; then kept.

        Parameters
        ----------
        store : WandBStore
        run_ids : sequence of str
            Runs to read.
        keys : sequence of str
            Metric keys.
        snapshot : pandas.DataFrame
            :meth:`WandBStore.history_snapshot` taken before this call: rows added meanwhile only make the next read
            larger (each snapshot takes a scan of the history table, so the caller's fingerprint lends its own).
        chunks : callable, default iter
            Wraps the iterator of chunks read from the store (a progress bar).

        Returns
        -------
        HistoryRead
        """
        path = self.history_path(store, keys)
        dtype = pd.CategoricalDtype(pd.Index(list(run_ids), dtype=object).unique())
        cached = _read_history(path, snapshot, dtype)
        frames, coercions = [], Counter(dict.fromkeys(keys, 0))  # every key, read or not: the report lists them all
        to_read = dtype.categories
        if cached is not None:
            frames.append(cached.frame)
            to_read = to_read.difference(cached.frame["run_id"].unique(), sort=False)
        if to_read.size or cached is None:
            for chunk in chunks(store.iter_history(to_read, keys)):
                coercions.update(chunk.attrs.get(COERCION_FAILURES, {}))
                frames.append(chunk.assign(run_id=_categorical(chunk["run_id"], dtype)))
        if frames:
            frame = pd.concat(frames, ignore_index=True)
        else:
            frame = store.read_history([], keys).astype({"run_id": dtype})
        frame.attrs = {}
        read = HistoryRead(frame, coercions, list(to_read))
        if to_read.size or cached is None:  # nothing new: the file already holds every row used
            self.folder.mkdir(parents=True, exist_ok=True)
            table = _history_table(read, snapshot)
            # floats compress poorly and dictionary-encode worse: only run_id is worth a dictionary
            _replace(path, lambda target: pq.write_table(table, target, use_dictionary=["run_id"], compression="lz4"))
        return read


def _categorical(values: pd.Series, dtype: pd.CategoricalDtype) -> pd.Categorical:
    """``values.astype(dtype)``, looking up only the distinct values (a chunk of history holds a few runs)."""
    codes, distinct = pd.factorize(values)
    positions = np.append(dtype.categories.get_indexer(distinct), -1)  # a missing value (code -1) stays missing
    return pd.Categorical.from_codes(positions[codes], dtype=dtype)


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file renamed into place: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _metadata(table: pa.Table, content: dict) -> pa.Table:
    metadata = {**(table.schema.metadata or {}), _METADATA_KEY.encode(): json.dumps(content)}
    return table.replace_schema_metadata(metadata)


def _stage_metadata(path: Path) -> tuple[pa.Table, dict]:
    table = pq.read_table(path)
    return table, json.loads(table.schema.metadata[_METADATA_KEY.encode()])


def _write_evals(evals: PretrainingEvals, path: Path) -> None:
    """Write the table as netCDF, with the netCDF4 library itself (an xarray Dataset would add nothing here).

    Its float64 columns become one 2-D variable ``floats`` of dimensions (float_column, row), written a block of
    columns at a time: one write per block, not one per column (the full grid has ≈1,900 metric columns), and each
    column, a contiguous array in the table, lands in the file as it is. Other columns become 1-D variables; the
    skips and the source go in a JSON attribute.
    """
    table = evals.table
    is_float = (table.dtypes == np.float64).to_numpy()
    floats, others = list(table.columns[is_float]), list(table.columns[~is_float])
    content = {
        "others": others,
        "dtypes": [str(table[name].dtype) for name in others],
        "floats": floats,
        "columns": list(table.columns),
        "skipped": json.loads(evals.skipped.to_json(orient="split", index=False)),
        "source": evals.source,
    }

    def write(target: Path) -> None:
        with netCDF4.Dataset(target, "w") as file:
            file.createDimension("row", len(table))
            file.createDimension("float_column", len(floats))
            for position, name in enumerate(others):
                values = table[name].to_numpy()
                kind = str if values.dtype.kind in "OUT" else values.dtype
                file.createVariable(f"column_{position}", kind, ("row",))[:] = values
            matrix = file.createVariable("floats", np.float64, ("float_column", "row"), fill_value=False)
            for start in range(0, len(floats), _COLUMNS_PER_WRITE):
                block = floats[start : start + _COLUMNS_PER_WRITE]
                matrix[start : start + len(block), :] = np.stack([table[name].to_numpy() for name in block])
            file.setncattr(_METADATA_KEY, json.dumps(content))

    _replace(path, write)


def _read_evals(path: Path) -> PretrainingEvals:
    with netCDF4.Dataset(path) as file:
        file.set_auto_mask(False)  # NaN is NaN: no value is a fill value
        content = json.loads(file.getncattr(_METADATA_KEY))
        others = {
            name: file[f"column_{position}"][:].astype(dtype)
            for position, (name, dtype) in enumerate(zip(content["others"], content["dtypes"], strict=True))
        }
        # (float_column, row) read as stored; its transpose is the (row, column) block of the frame, not a copy
        floats = pd.DataFrame(file["floats"][:].T, columns=pd.Index(content["floats"], dtype=object), copy=False)
    table = pd.concat([pd.DataFrame(others), floats], axis=1)
    if list(table.columns) != content["columns"]:
        table = table[content["columns"]]
    skipped = content["skipped"]
    skipped_frame = pd.DataFrame(skipped["data"], columns=skipped["columns"]).astype({"row": object})
    return PretrainingEvals(table=table, skipped=skipped_frame, source=content["source"])


def _history_table(read: HistoryRead, snapshot: pd.DataFrame) -> pa.Table:
    """Return the history with the snapshot of its runs (runs read partly, mid-write, are re-read next time)."""
    held = snapshot[snapshot["run_id"].isin(read.frame["run_id"].cat.categories)]
    table = pa.Table.from_pandas(read.frame, preserve_index=False)
    content = {
        "snapshot": {name: held[name].tolist() for name in held.columns},
        "coercions": dict(read.coercions),
    }
    return _metadata(table, content)


def _read_history(path: Path, snapshot: pd.DataFrame, dtype: pd.CategoricalDtype) -> HistoryRead | None:
    """Return the cached rows of the runs whose snapshot is unchanged and that are still wanted.

    None when the cache cannot be used (no file, or non-numeric values were counted, which cannot be attributed to
    runs).
    """
    if not path.is_file():
        return None
    table, content = _stage_metadata(path)
    if any(content["coercions"].values()):
        return None
    then = pd.DataFrame(content["snapshot"])
    unchanged = then.merge(snapshot, on=["run_id", "rows", "max_id"])["run_id"]
    frame = table.to_pandas()
    frame = frame[frame["run_id"].isin(dtype.categories.intersection(unchanged))]
    frame = frame.assign(run_id=frame["run_id"].astype(dtype))
    return HistoryRead(frame.reset_index(drop=True), Counter(), [])

"""Load W&B exports (parquet or JSONL files, no database) into a W&B store.

Two export forms are read (docs/sources.md §4.2, §4.3):

- **parquet**: a runs table in layout-B form (``run_id, run_name, state, project, entity, created_at`` and the JSON
  columns ``config, summary, wandb_metadata, system_metrics, system_attrs, sweep_info`` as JSON text) and a history
  table (``run_id, step``, optional ``timestamp, runtime``, and either one column per metric or a ``metrics``
  column of JSON text, as a dump of the ``wandb_history`` table has).
- **JSONL**: ``runs.jsonl`` (one ``{"run": {...}, "exported_at": ...}`` per line) and ``history.jsonl`` (one
  ``{run_id, step, timestamp, runtime, wandb_metadata, metrics, extra}`` per line), with an optional
  ``manifest.json`` whose ``project`` and ``entity`` fill runs that lack them.

History is streamed in bounded batches. A batch is written once all rows of its runs have been read, because a
store write replaces a run's whole history (as a W&B re-download does); exports list each run's rows together, so
the rows held back stay few. Loading the same export twice gives the same store. Rows and values that cannot be
stored are skipped and counted by reason in the returned :class:`LoadReport`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ddxr.errors import InvalidArgumentError, SourceError
from ddxr.progress import progress_bar
from ddxr.sources.wandb_store import HISTORY_COLUMNS, RUN_JSON_COLUMNS, RUN_TEXT_COLUMNS, WandBStore

#: JSONL run fields → store columns, where the names differ (docs/sources.md §4.3).
_JSONL_RUN_FIELDS = {"name": "run_name", "summary_metrics": "summary", "metadata": "wandb_metadata"}
_SUFFIXES = (".parquet", ".jsonl")
#: History columns of the exports that are not metrics.
_NOT_METRICS = ("id", "wandb_metadata", "extra")


@dataclass
class LoadReport:
    """What a load wrote and what it skipped.

    Attributes
    ----------
    runs : int
        Runs written to ``wandb_runs``.
    history_rows : int
        Rows written to ``wandb_history``.
    skipped : dict of str to int
        Skipped runs, rows and values, counted by reason.
    """

    runs: int = 0
    history_rows: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """One line for the runs and rows written, then one line per skip reason.

        Returns
        -------
        str
            The report as text.

        Examples
        --------
        >>> print(LoadReport(runs=2, history_rows=10, skipped=Counter({"history rows without a run_id": 1})).summary())
        loaded 2 runs and 10 history rows
        skipped 1: history rows without a run_id
        """
        lines = [f"loaded {self.runs:,} runs and {self.history_rows:,} history rows"]
        lines += [f"skipped {count:,}: {reason}" for reason, count in sorted(self.skipped.items())]
        return "\n".join(lines)


def find_export(folder: str | Path) -> tuple[Path, Path]:
    """Return the runs file and the history file of an export folder.

    Parameters
    ----------
    folder : str or pathlib.Path
        Holds ``runs.jsonl`` and ``history.jsonl``, or one ``*runs*.parquet`` and one ``*history*.parquet``.

    Returns
    -------
    tuple of pathlib.Path
        ``(runs, history)``.

    Raises
    ------
    SourceError
        When the folder is missing or does not hold exactly one runs and one history file of one form.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"W&B export {folder}: no such folder; pass the folder holding the runs and history files")
    jsonl = folder / "runs.jsonl", folder / "history.jsonl"
    if all(path.is_file() for path in jsonl):
        return jsonl
    runs, history = sorted(folder.glob("*runs*.parquet")), sorted(folder.glob("*history*.parquet"))
    if len(runs) == 1 and len(history) == 1:
        return runs[0], history[0]
    found = sorted(path.name for path in folder.iterdir())[:10]
    raise SourceError(
        f"W&B export {folder}: expected runs.jsonl and history.jsonl, or one *runs*.parquet and one "
        f"*history*.parquet; found {found} — or name the files with ddxr load --runs FILE --history FILE"
    )


def load_export(
    store: WandBStore, runs: str | Path, history: str | Path, *, chunk_size: int = 50_000, progress: bool = True
) -> LoadReport:
    """Write a W&B export's runs and history into ``store`` (layout B, tables created if needed).

    Parameters
    ----------
    store : WandBStore
        The target store (PostgreSQL or SQLite).
    runs, history : str or pathlib.Path
        The runs and history files, ``.parquet`` or ``.jsonl`` (see the module docstring for their columns).
    chunk_size : int, default 50_000
        History rows read per batch.
    progress : bool, default True
        Show a progress bar over the history rows.

    Returns
    -------
    LoadReport
        Runs and rows written, skips by reason. History rows of runs absent from the runs file are skipped.

    Raises
    ------
    InvalidArgumentError
        When a file is neither ``.parquet`` nor ``.jsonl``, or ``chunk_size`` is not a positive integer.
    SourceError
        When a file is missing, unreadable, or lacks the ``run_id`` (runs) or ``run_id``/``step`` (history) columns.
    """
    runs, history = Path(runs), Path(history)
    for path in (runs, history):
        if path.suffix not in _SUFFIXES:
            raise InvalidArgumentError(f"{path}: a W&B export file ends in .parquet or .jsonl")
        if not path.is_file():
            raise SourceError(f"W&B export file {path} does not exist")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    report = LoadReport()
    table = _runs_frame(runs, report.skipped)
    store.create_tables()
    report.runs = store.store_runs(table)
    known = set(table["run_id"])
    expected = _rows_per_run(history, chunk_size)
    with progress_bar(total=int(expected.sum()), desc="ddxr load", unit="rows", enabled=progress) as bar:
        for batch in _complete_runs(_history_batches(history, chunk_size), expected, chunk_size, bar):
            cleaned = _history_frame(batch, known, report.skipped)
            if len(cleaned):
                report.history_rows += store.store_history(cleaned)
    return report


# ----------------------------------------------------------------------------------------------- runs


def _runs_frame(path: Path, skipped: Counter) -> pd.DataFrame:
    """Return the runs file as the frame :meth:`WandBStore.store_runs` takes; unusable runs skipped and counted."""
    raw = _read_parquet(path) if path.suffix == ".parquet" else _jsonl_runs(path)
    if "raw_data" in raw.columns and "config" not in raw.columns:
        # layout A merges the summary over the config (a run's last logged LR over its hyperparameter): only a
        # layout-A database keeps what ddxr needs to tell them apart
        raise SourceError(
            f"W&B export {path} is a layout-A runs table (one merged raw_data column); ddxr load writes layout B "
            "— point ddxr build --db at the layout-A database itself instead"
        )
    missing = [name for name in ("run_id", "created_at") if name not in raw.columns]
    if missing:
        raise SourceError(f"W&B export {path}: no {' or '.join(missing)} column; found {list(raw.columns)[:12]}")
    frame = pd.DataFrame(index=raw.index)
    for name in RUN_TEXT_COLUMNS:
        frame[name] = raw[name].astype("str").where(raw[name].notna(), "") if name in raw.columns else ""
    frame["created_at"] = pd.to_datetime(raw["created_at"], utc=True, format="ISO8601", errors="coerce")
    keep = _count(skipped, frame["run_id"].str.strip() == "", "runs without a run_id")
    keep &= _count(skipped, frame["created_at"].isna(), "runs whose created_at is not an ISO timestamp")
    for name in RUN_JSON_COLUMNS:
        cells = raw[name] if name in raw.columns else pd.Series(None, index=raw.index, dtype=object)
        frame[name] = cells.map(_json_object)
        keep &= _count(skipped, frame[name].map(_is_malformed), f"runs whose {name} is not a JSON object")
    frame = frame[keep]
    repeated = frame["run_id"].duplicated(keep="last")
    _count(skipped, repeated, "runs repeated in the runs file (last row kept)")
    return frame[~repeated].reset_index(drop=True)


def _jsonl_runs(path: Path) -> pd.DataFrame:
    """``runs.jsonl`` rows as flat store columns; tags go to ``system_attrs``, the manifest fills project/entity."""
    lines = _read_jsonl(path)
    if "run" not in lines.columns:
        raise SourceError(f'W&B export {path}: expected one {{"run": {{...}}}} object per line')
    runs = pd.DataFrame(lines["run"].map(lambda run: run if isinstance(run, dict) else {}).tolist())
    runs = runs.rename(columns=_JSONL_RUN_FIELDS)
    manifest = _manifest(path.parent / "manifest.json")
    for name in ("project", "entity"):
        fallback = manifest.get(name, "")
        runs[name] = runs[name].fillna(fallback) if name in runs.columns else fallback
    if "system_attrs" not in runs.columns:
        tags = runs["tags"] if "tags" in runs.columns else pd.Series(None, index=runs.index, dtype=object)
        runs["system_attrs"] = tags.map(lambda value: {"tags": value if isinstance(value, list) else []})
    return runs


def _manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SourceError(f"W&B export {path}: not readable JSON ({error})") from None
    return {key: str(manifest[key]) for key in ("project", "entity") if isinstance(manifest, dict) and key in manifest}


_MALFORMED = "malformed"


def _json_object(cell: object) -> object:
    """Return a JSON column's cell as a dict (None for a missing one), or :data:`_MALFORMED`."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    if isinstance(cell, str | bytes):
        try:
            cell = json.loads(cell)
        except ValueError:
            return _MALFORMED
    return cell if isinstance(cell, dict) or cell is None else _MALFORMED


def _is_malformed(cell: object) -> bool:
    return isinstance(cell, str) and cell == _MALFORMED


# ----------------------------------------------------------------------------------------------- history


def _rows_per_run(path: Path, chunk_size: int) -> pd.Series:
    """Rows per ``run_id`` in the history file (a first, cheap pass: only ``run_id`` is kept)."""
    counts = [batch["run_id"].value_counts(dropna=False) for batch in _history_batches(path, chunk_size, ["run_id"])]
    if not counts:
        return pd.Series(dtype="int64")
    return pd.concat(counts).groupby(level=0, dropna=False).sum()


def _history_batches(path: Path, chunk_size: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    if path.suffix == ".parquet":
        try:
            reader = pq.ParquetFile(path)
            names = reader.schema_arrow.names
            if not {"run_id", "step"} <= set(names):
                raise SourceError(f"W&B export {path}: history needs run_id and step columns; found {names[:12]}")
            for batch in reader.iter_batches(batch_size=chunk_size, columns=columns):
                yield batch.to_pandas()
        except OSError as error:
            raise SourceError(f"W&B export {path}: not a readable parquet file ({error})") from None
        return
    try:
        for lines in pd.read_json(path, lines=True, chunksize=chunk_size, dtype=False):
            if not {"run_id", "step"} <= set(lines.columns):
                raise SourceError(f"W&B export {path}: history lines need run_id and step; found {list(lines.columns)}")
            yield lines if columns is None else lines[columns]
    except ValueError as error:
        raise SourceError(f"W&B export {path}: not JSON lines ({error}); fix or remove the broken line") from None


def _complete_runs(
    batches: Iterator[pd.DataFrame], expected: pd.Series, chunk_size: int, bar: Any
) -> Iterator[pd.DataFrame]:
    """Regroup history batches so that every yielded frame holds all rows of each of its runs."""
    held: list[pd.DataFrame] = []
    seen = pd.Series(0, index=expected.index, dtype="int64")
    for batch in batches:
        bar.update(len(batch))
        seen = seen.add(batch["run_id"].value_counts(dropna=False), fill_value=0).astype("int64")
        held.append(batch)
        pending = pd.concat(held, ignore_index=True)
        done = pending["run_id"].map(seen.eq(expected)).fillna(True).astype(bool)
        if done.sum() >= chunk_size or done.all():
            yield pending[done]
            held = [pending[~done]] if (~done).any() else []
    if held:
        yield pd.concat(held, ignore_index=True)


def _history_frame(batch: pd.DataFrame, known: set[str], skipped: Counter) -> pd.DataFrame:
    """Return a history batch as :meth:`WandBStore.store_history` takes it; unusable rows and values counted."""
    keep = pd.Series(True, index=batch.index)
    if "metrics" in batch.columns:  # a wandb_history dump or JSON lines: one JSON object of metrics per row
        objects = batch["metrics"].map(_json_object)
        bad = objects.map(_is_malformed)
        keep &= _count(skipped, bad, "history rows whose metrics are not a JSON object")
        metrics = pd.DataFrame(objects.where(~bad, None).map(lambda cell: cell or {}).tolist(), index=batch.index)
        batch = batch[[name for name in HISTORY_COLUMNS if name in batch.columns]].join(
            metrics.drop(columns=[name for name in metrics.columns if name in HISTORY_COLUMNS])
        )
    batch = batch.drop(columns=list(_NOT_METRICS), errors="ignore")
    run_ids = batch["run_id"].astype("str").where(batch["run_id"].notna(), "")
    step = pd.to_numeric(batch["step"], errors="coerce")
    missing_id = run_ids.str.strip() == ""
    keep &= _count(skipped, missing_id, "history rows without a run_id")
    keep &= _count(skipped, step.isna() | (step % 1 != 0), "history rows whose step is not an integer")
    keep &= _count(skipped, ~run_ids.isin(known) & ~missing_id, "history rows of runs not in the runs file")
    batch = batch[keep].assign(run_id=run_ids[keep], step=step[keep].astype("int64"))
    for name in [name for name in batch.columns if name not in HISTORY_COLUMNS]:
        batch[name] = _numbers(batch[name], name, skipped)
    return batch


def _numbers(values: pd.Series, name: str, skipped: Counter) -> pd.Series:
    """Return a metric column as numbers; text, lists and objects (W&B media, tables) become NaN and are counted."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values
    numbers = pd.to_numeric(values.where(values.map(_scalar)), errors="coerce")
    lost = int((numbers.isna() & values.notna()).sum())
    if lost:
        skipped[f"history values of {name!r} that are not numbers (stored as missing)"] += lost
    return numbers


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool | np.number)


def _count(skipped: Counter, bad: pd.Series, reason: str) -> pd.Series:
    """Add the number of ``bad`` rows to ``skipped[reason]``; return the mask of rows to keep."""
    number = int(bad.sum())
    if number:
        skipped[reason] += number
    return ~bad


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise SourceError(f"W&B export {path}: not a readable parquet file ({error})") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        return pd.read_json(path, lines=True, dtype=False)
    except ValueError as error:
        raise SourceError(f"W&B export {path}: not JSON lines ({error}); fix or remove the broken line") from None

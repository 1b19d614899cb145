"""The W&B store: post-training runs and their history in PostgreSQL or SQLite (docs/sources.md §4-§5).

:class:`WandBStore` reads both real table layouts — A, one merged ``raw_data`` JSONB per run; B, separate
``config`` / ``summary`` / ``wandb_metadata`` / ``system_metrics`` / ``system_attrs`` / ``sweep_info`` JSONB — and
writes layout B (JSONB on PostgreSQL, JSON text on SQLite). History reads extract only the requested metric keys in
SQL and stream in bounded chunks, so memory follows the chunk size, not the history size.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ddxr.coders import equal_runs
from ddxr.errors import InvalidArgumentError, SourceError
from ddxr.sources._collector import collector_paused
from ddxr.sources._copy import copy_tables
from ddxr.sources._sql import (
    StoreURL,
    any_of,
    bulk_insert,
    driver_message,
    json_entries,
    json_member,
    parse_url,
    stream_rows,
    translated_errors,
)

__all__ = ["COERCION_FAILURES", "WandBStore"]

#: Key of ``DataFrame.attrs`` holding ``{metric key: number of non-numeric values read as NaN}``.
COERCION_FAILURES = "coercion_failures"

#: Seconds a PostgreSQL statement waits for another session's lock on a store table before failing.
DEFAULT_LOCK_TIMEOUT = 60.0

RUN_TEXT_COLUMNS = ("run_id", "run_name", "state", "project", "entity")
RUN_JSON_COLUMNS = ("config", "summary", "wandb_metadata", "system_metrics", "system_attrs", "sweep_info")
#: JSON columns :meth:`WandBStore.read_runs` returns and :meth:`WandBStore.read_run_entries` accepts.
READ_JSON_COLUMNS = ("config", "summary", "wandb_metadata", "system_attrs")
HISTORY_COLUMNS = ("run_id", "step", "timestamp", "runtime")
_STATE = ("run_id", "run_name", "created_at", "digest")  # columns of WandBStore.run_states()
_LAYOUT_A_MERGED = ("config", "summary")  # both read layout A's raw_data
# W&B attributes and launch metadata that some layout-A stores keep in columns next to raw_data: read when present
_LAYOUT_A_KEPT = ("wandb_metadata", "system_attrs")
_TAG_SOURCES = ("config", "system_attrs")  # read_runs decodes them for the tags even when not returned
_NAN_TEXT = r"\s*[+-]?nan\s*"
_INF_TEXT = re.compile(
    r"\s*[+-]?inf(inity)?\s*", re.IGNORECASE
)  # spellings of ±inf, not overflowing digits  # spellings pd.to_numeric reads as NaN on purpose: not coercion failures

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _layout_b() -> sa.MetaData:
    """Return the layout-B tables as ddxr writes them; ``created_at`` is UTC without zone, as in layout A."""
    metadata = sa.MetaData()
    sa.Table(
        "wandb_runs",
        metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        *(sa.Column(name, sa.Text) for name in RUN_TEXT_COLUMNS[1:]),
        sa.Column("created_at", sa.DateTime),
        *(sa.Column(name, _JSON) for name in RUN_JSON_COLUMNS),
    )
    sa.Table(
        "wandb_history",
        metadata,
        # SQLite autoincrements only an INTEGER PRIMARY KEY
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("timestamp", sa.Double),  # epoch seconds (W&B `_timestamp`)
        sa.Column("runtime", sa.Double),  # seconds since the run started (W&B `_runtime`)
        sa.Column("wandb_metadata", _JSON),
        sa.Column("metrics", _JSON),
        sa.Index("ix_wandb_history_run_id_step", "run_id", "step"),
        sqlite_autoincrement=True,  # never reuse the ids of replaced history: stats() max_id must move
    )
    return metadata


@dataclass(frozen=True)
class _Schema:
    """The store's tables as reflected from the database."""

    layout: str
    runs: sa.Table
    history: sa.Table | None


@dataclass(frozen=True)
class _HistoryQuery:
    """A history SELECT, the metric keys of its ``metric_<i>`` columns, and how to read its timestamps."""

    statement: sa.Select
    keys: list[str]
    timestamp_kind: str


class WandBStore:
    """W&B runs and history stored in PostgreSQL or SQLite.

    Parameters
    ----------
    url : str
        ``postgresql://user@host:port/database`` (also ``postgres://``, ``postgresql+psycopg2://``; PostgreSQL is
        always reached through psycopg2) or ``sqlite:///path/to/runs.db``.
    chunk_size : int, default 50_000
        Rows per chunk when streaming history out of, or writing it into, the store.
    lock_timeout : float or None, default 60
        PostgreSQL: seconds a statement waits for a lock another session holds on a store table (a downloader
        rewriting it) before failing with a SourceError; None waits forever. ``?options=-c lock_timeout=5s`` in
        the URL overrides it.
    statement_timeout : float or None, default None
        PostgreSQL: seconds any one statement may run; None (default) sets no limit.

    Raises
    ------
    SourceError
        When the URL is malformed or the database cannot be reached. No message ever holds the password.

    Examples
    --------
    >>> store = WandBStore("sqlite://")
    >>> store.create_tables()
    >>> store.layout
    'B'
    >>> store.read_runs().shape
    (0, 13)
    """

    def __init__(
        self,
        url: str,
        *,
        chunk_size: int = 50_000,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: float | None = None,
    ) -> None:
        self._url: StoreURL = parse_url(url)
        self.chunk_size = _positive(chunk_size)
        timeouts = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout}
        for name, seconds in timeouts.items():
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0
            ):
                raise InvalidArgumentError(f"{name} must be a number of seconds ≥ 0 or None, got {seconds!r}")
        self._engine = self._url.create_engine(**timeouts)
        self._schema_cache: _Schema | None = None
        with self._connect():  # an unreachable server fails here, not at the first read
            pass

    def __repr__(self) -> str:
        """Show the store by its URL, password redacted."""
        return f"WandBStore({self.url_redacted!r})"

    def __enter__(self) -> WandBStore:
        """Return the store itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store's connections."""
        self.close()

    def close(self) -> None:
        """Close every pooled connection (the store reconnects if used again)."""
        self._engine.dispose()

    @property
    def url_redacted(self) -> str:
        """The store's URL with any password replaced by ``***``: the only form of the URL ddxr ever shows."""
        return self._url.redacted

    @property
    def layout(self) -> str:
        """``"A"`` (one merged ``raw_data`` column) or ``"B"`` (separate JSON columns), from ``wandb_runs``'s columns.

        Raises
        ------
        SourceError
            When ``wandb_runs`` is missing or has neither ``raw_data`` nor ``config``.
        """
        return self._schema().layout

    # ----------------------------------------------------------------------------------------------- writing

    def create_tables(self) -> None:
        """Create the layout-B tables ``wandb_runs`` and ``wandb_history`` (index on ``(run_id, step)``).

        Idempotent: existing layout-B tables are kept with their rows.

        Raises
        ------
        SourceError
            When the database already holds tables of layout A or of an unknown layout (§8.19: one database
            cannot hold both layouts).
        """
        with self._connect() as connection:
            has_runs = sa.inspect(connection).has_table("wandb_runs")
        if has_runs:
            self._writable(require_history=False)
        with self._connect(write=True) as connection:
            _layout_b().create_all(connection)
        self._schema_cache = None

    def store_runs(self, runs: pd.DataFrame) -> int:
        """Write runs, replacing any stored run with the same ``run_id`` (as a W&B re-download does).

        Replacement touches ``wandb_runs`` only: a run's history is replaced by :meth:`store_history`.

        Parameters
        ----------
        runs : pandas.DataFrame
            Columns ``run_id`` (unique, non-empty), ``run_name``, ``state``, ``project``, ``entity``,
            ``created_at`` (datetimes or ISO text; naive values are UTC), and optionally the dict-valued
            ``config``, ``summary``, ``wandb_metadata``, ``system_metrics``, ``system_attrs`` (tags go in
            ``system_attrs["tags"]``), ``sweep_info`` (missing or None → ``{}``). Non-finite floats inside the
            dicts are stored as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSONB cannot hold them).

        Returns
        -------
        int
            Number of runs written.

        Raises
        ------
        SourceError
            On missing or unknown columns, empty or duplicated run ids, unparseable ``created_at``, JSON cells
            that are not dicts, or a store of layout A.
        """
        schema = self._writable(require_history=False)
        rows = _run_rows(runs)
        with self._connect(write=True) as connection:
            run_ids = rows.column("run_id").to_pylist()
            connection.execute(sa.delete(schema.runs).where(any_of(self._url.dialect, schema.runs.c.run_id, run_ids)))
            bulk_insert(connection, schema.runs, rows, RUN_JSON_COLUMNS)
        return rows.num_rows

    def store_history(self, history: pd.DataFrame) -> int:
        """Write history rows, replacing all stored history of every run present in ``history``.

        Pass each run's whole history in one call: as a W&B re-download does, a second call for the same run
        replaces the first.

        Parameters
        ----------
        history : pandas.DataFrame
            Columns ``run_id``, ``step`` (integers), optionally ``timestamp`` (epoch seconds, or datetimes/ISO
            text — naive means UTC) and ``runtime`` (seconds). Every other column is a metric: its numeric
            values are packed into the row's ``metrics`` JSON under the column name; NaN values are omitted (W&B
            logs a key only when it was measured), ±inf become ``"Infinity"`` / ``"-Infinity"``, booleans 1/0.

        Returns
        -------
        int
            Number of history rows written.

        Raises
        ------
        SourceError
            On missing ``run_id``/``step``, empty run ids, non-integer steps, non-numeric metric columns, metric
            names that are not strings or hold a NUL character, or a store of layout A.
        """
        table = self._writable(require_history=True).history
        _check_history_columns(history)
        run_ids = _run_id_column(history["run_id"], "history").to_numpy(dtype=object)
        order = _run_order(run_ids)
        with self._connect(write=True) as connection:
            connection.execute(sa.delete(table).where(any_of(self._url.dialect, table.c.run_id, pd.unique(run_ids))))
            # chunk by chunk, so the converted copy, JSON text and CSV buffer follow chunk_size; an invalid chunk
            # rolls the whole call back
            for start in range(0, len(history), self.chunk_size):
                rows = order[start : start + self.chunk_size]
                bulk_insert(connection, table, _history_rows(history.iloc[rows]), ("metrics",))
        return len(history)

    # ----------------------------------------------------------------------------------------------- reading

    def read_runs(
        self, run_ids: Sequence[str] | None = None, *, json_columns: Sequence[str] = READ_JSON_COLUMNS
    ) -> pd.DataFrame:
        """All runs (or those of ``run_ids``), one row each, ordered by ``run_id``.

        Parameters
        ----------
        run_ids : sequence of str, optional
            Runs to read (any number: bound as one parameter); None reads every run.
        json_columns : sequence of str, default all of ``config, summary, wandb_metadata, system_attrs``
            The JSON columns to read and decode; the others are not in the frame. Decoding is most of the read's
            time and memory, and ``summary`` (the evaluations) is most of that: pass only what you use.

        Returns
        -------
        pandas.DataFrame
            ``run_id, run_name, state, project, entity`` (str), ``created_at`` (datetime64 UTC), ``layout``
            (``"A"``/``"B"``), ``config, summary, wandb_metadata, system_attrs`` (dicts), ``tags`` (list of str:
            ``system_attrs["tags"]`` in layout B, else the config's ``wandb_tags`` split on ``,`` — layout A's
            ``raw_data.wandb_tags``) and ``history_line_count`` (Int64, W&B's ``historyLineCount``; NA when
            unknown, always in layout A). In layout A, ``config`` and ``summary`` are copies of the one merged
            ``raw_data`` dict (summary values written over config values, so a trained run's ``learning_rate``
            is its last logged value), and ``wandb_metadata`` and ``system_attrs`` are read from columns of those
            names when the layout-A table has them, else empty: use ``layout`` to know.

        Raises
        ------
        SourceError
            When a run has no ``run_id``, a JSON cell is not a JSON object (malformed, nested too deep) or
            ``created_at`` cannot be read as a date. NULL JSON cells read as ``{}``, NULL text as ``""``.
        InvalidArgumentError
            When ``json_columns`` names a column that is not one of the four.
        """
        unknown = [name for name in json_columns if name not in READ_JSON_COLUMNS]
        if unknown:
            raise InvalidArgumentError(
                f"read_runs: json_columns {unknown} are not run JSON columns; choose from {list(READ_JSON_COLUMNS)}"
            )
        schema = self._schema()
        runs = schema.runs
        self._require_columns(runs, (*RUN_TEXT_COLUMNS, "created_at"))
        wanted = tuple(name for name in READ_JSON_COLUMNS if name in json_columns)
        stored_json = _stored_json_columns(wanted, schema.layout)
        stored_json = tuple(name for name in stored_json if name in runs.c)
        # JSON as text, cast in SQL and parsed here: the same code for PostgreSQL's JSONB and SQLite's JSON or TEXT
        # columns, and the driver never decodes JSON itself (a deeply nested cell must name its run, not crash it)
        columns = [
            *(runs.c[name] for name in RUN_TEXT_COLUMNS),
            sa.type_coerce(runs.c.created_at, sa.String).label("created_at"),
            *(sa.cast(runs.c[name], sa.Text).label(name) for name in stored_json),
        ]
        statement = sa.select(*columns).order_by(runs.c.run_id)
        if run_ids is not None:
            statement = statement.where(any_of(self._url.dialect, runs.c.run_id, _run_id_list(run_ids)))
        return _runs_frame(self._read_frame(statement), schema.layout, wanted)

    def read_run_entries(self, column: str, key_prefix: str, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Top-level entries of a run JSON column whose key starts with ``key_prefix``, extracted in SQL.

        Parameters
        ----------
        column : {"config", "summary", "wandb_metadata", "system_attrs"}
            In layout A, ``"config"`` and ``"summary"`` both read ``raw_data`` (where the OLMES evaluations
            ``oe_eval_metrics/<task>`` live), and the other two read their columns when the table has them, else
            have no entries.
        key_prefix : str
            Literal prefix, case-sensitive (``_``, ``%`` and ``/`` carry no pattern meaning), e.g.
            ``"oe_eval_metrics/"``.
        run_ids : sequence of str, optional
            Only these runs (default: every run).

        Returns
        -------
        pandas.DataFrame
            Long table ``run_id, key, value`` (str), ordered by ``run_id, key``; ``value`` is the JSON text of
            the value (objects as JSON objects, numbers as their JSON text: parse with ``json.loads``).

        Raises
        ------
        SourceError
            When ``column`` is not one of the four names.
        """
        if column not in READ_JSON_COLUMNS:
            raise SourceError(
                f"read_run_entries reads one of {list(READ_JSON_COLUMNS)}, not {column!r}; pass one of those names"
            )
        schema = self._schema()
        stored = "raw_data" if schema.layout == "A" and column in _LAYOUT_A_MERGED else column
        if stored not in schema.runs.c:
            return pd.DataFrame({name: pd.Series(dtype="str") for name in ("run_id", "key", "value")})
        only = None if run_ids is None else _run_id_list(run_ids)
        statement = json_entries(self._url.dialect, schema.runs, stored, key_prefix, only)
        return self._read_frame(statement, invalid_json=(schema.runs, stored)).astype("str")

    def iter_history(
        self, run_ids: Sequence[str] | None, keys: Sequence[str], *, chunk_size: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Stream history rows with only the requested metric keys, extracted in SQL.

        Parameters
        ----------
        run_ids : sequence of str or None
            Runs to read (any number: bound as one parameter); None reads every run.
        keys : sequence of str
            Metric keys, e.g. ``["train_loss", "rewards/accuracy"]``; a key absent from a row reads as NaN.
        chunk_size : int, optional
            Rows per yielded frame (default: the store's ``chunk_size``). PostgreSQL streams a ``COPY``, SQLite a
            cursor, so memory stays bounded by the chunk size.

        Yields
        ------
        pandas.DataFrame
            Rows ordered by ``run_id, step``, columns ``run_id`` (str), ``step`` (int64), ``timestamp``,
            ``runtime`` (float64 seconds; NaN in layout A, which has no runtime column), then one float64
            column per key. ``timestamp`` is float64 epoch seconds when stored as a number or a zoned
            timestamp; layout A stores the downloading machine's naive local time, which has no known zone and
            comes back as stored, as naive datetime64[ns]. Metric values are read with ``pd.to_numeric``:
            ``"NaN"`` is NaN; any other non-numeric value (text, JSON objects, booleans on PostgreSQL) becomes
            NaN and is counted in ``frame.attrs["coercion_failures"]`` (``{key: count}``, this chunk).

        Raises
        ------
        SourceError
            When ``run_ids`` is a single string, a key is empty or names a fixed column, the store has no
            history table, or a stored row has no step.
        """
        query = self._history_query(run_ids, keys)
        return self._stream(query, _positive(self.chunk_size if chunk_size is None else chunk_size))

    def read_history(self, run_ids: Sequence[str] | None, keys: Sequence[str]) -> pd.DataFrame:
        """All history rows of ``run_ids`` with the requested keys, as one frame.

        Same arguments and columns as :meth:`iter_history`; ``attrs["coercion_failures"]`` sums all chunks. An
        empty frame with these columns is returned when nothing matches.
        """
        query = self._history_query(run_ids, keys)
        frames = list(self._stream(query, self.chunk_size))
        if not frames:
            return _history_frame([], query)
        history = pd.concat(frames, ignore_index=True)
        history.attrs[COERCION_FAILURES] = {
            key: sum(frame.attrs[COERCION_FAILURES][key] for frame in frames) for key in query.keys
        }
        return history

    def orphan_history_rows(self) -> dict[str, int]:
        """History rows whose run is not in ``wandb_runs`` (they can belong to no lineage), counted per run_id."""
        schema = self._schema()
        if schema.history is None:
            return {}
        runs, history = schema.runs, schema.history
        query = (
            sa.select(history.c.run_id, sa.func.count())
            .where(~sa.exists().where(runs.c.run_id == history.c.run_id))
            .group_by(history.c.run_id)
        )
        with self._connect() as connection:
            return {run_id: int(count) for run_id, count in connection.execute(query)}

    def content_state(self) -> tuple[pd.DataFrame, tuple[int, int]]:
        """Return :meth:`run_states` and :meth:`history_totals`, read side by side on PostgreSQL.

        Each query waits on the server (the count reads the history's whole index): two connections overlap them.
        """
        self._schema()  # reflected once, before either query needs it
        if self._url.dialect != "postgresql":
            return self.run_states(), self.history_totals()
        with ThreadPoolExecutor(1) as counter:
            totals = counter.submit(self.history_totals)
            return self.run_states(), totals.result()

    def history_totals(self) -> tuple[int, int]:
        """Return the history's rows and largest row id, ``(0, 0)`` for none (one index scan, no JSON read).

        Rows logged move both; rows deleted move the count. A fingerprint takes these instead of a per-run
        :meth:`history_snapshot`, which scans the whole table (a third of a second at 2 M rows).
        """
        history = self._schema().history
        if history is None:
            return 0, 0
        with self._connect() as connection:
            rows, max_id = connection.execute(sa.select(sa.func.count(), sa.func.max(history.c.id))).one()
        return int(rows), int(max_id or 0)

    def history_snapshot(self, after_id: int = 0, up_to_id: int | None = None) -> pd.DataFrame:
        """Return the rows and largest row id of each run's history, counting the rows of ids in (after, up to].

        Both move when a run logs more rows, and ``max_id`` moves when its history is replaced
        (:meth:`store_history` deletes and inserts). With ``after_id``, only the rows logged since a snapshot
        whose largest id it was are counted (an index range, not a scan of the table).

        Returns
        -------
        pandas.DataFrame
            ``run_id`` (str), ``rows``, ``max_id`` (int64), one row per run with such rows, ordered by ``run_id``;
            empty without a history table.
        """
        history = self._schema().history
        columns = ["run_id", "rows", "max_id"]
        if history is None:
            return pd.DataFrame({name: pd.Series(dtype="str" if name == "run_id" else "int64") for name in columns})
        query = sa.select(history.c.run_id, sa.func.count(), sa.func.max(history.c.id))
        if after_id:
            query = query.where(history.c.id > int(after_id))
        if up_to_id is not None:
            query = query.where(history.c.id <= int(up_to_id))
        query = query.group_by(history.c.run_id).order_by(history.c.run_id)
        with self._connect() as connection:
            rows = connection.execute(query).all()
        frame = pd.DataFrame.from_records(rows, columns=columns)
        return frame.astype({"run_id": "str", "rows": "int64", "max_id": "int64"})

    def run_states(self) -> pd.DataFrame:
        """Return what identifies each run's content now, for incremental refreshes (one light query).

        Returns
        -------
        pandas.DataFrame
            ``run_id``, ``run_name``, ``created_at`` (text as stored) and ``digest`` (int64, a hash of the run's
            id, name, creation time, state and JSON sizes: a re-downloaded run, with a new state or evals added to
            its summary, changes it), ordered by ``run_id`` as the store orders it.
        """
        schema = self._schema()
        runs = schema.runs
        self._require_columns(runs, ("run_id", "run_name", "state", "created_at"))
        with self._connect() as connection:
            rows = connection.execute(self._run_content(schema).add_columns(runs.c.run_name)).all()
        # column by column: from_records inspects every SQLAlchemy row (five times slower on 2,000 runs)
        names = [*range(len(rows[0]) - 1), "run_name"] if rows else []
        content = pd.DataFrame(dict(zip(names, map(list, zip(*rows, strict=True)), strict=True)))
        if content.empty:
            return pd.DataFrame({name: pd.Series(dtype="int64" if name == "digest" else "str") for name in _STATE})
        frame = content[[0, "run_name", 2]].astype(str).set_axis(list(_STATE[:3]), axis=1)
        frame["digest"] = pd.util.hash_pandas_object(content.astype(object), index=False).to_numpy().view(np.int64)
        return frame

    def _run_content(self, schema: _Schema) -> sa.Select:
        """Per run, ordered by ``run_id``: id, state, creation time and the sizes of the JSON cells.

        PostgreSQL gives the stored size of each JSONB cell (``pg_column_size``, read without rendering the JSON as
        text: 15 times faster on 2,000 runs); SQLite the length of its text.
        """
        runs = schema.runs
        content = [name for name in ("raw_data", "config", "summary", "system_attrs") if name in runs.c]
        if self._url.dialect == "postgresql":
            sizes = [sa.func.pg_column_size(runs.c[name]) for name in content]
        else:
            sizes = [sa.func.length(sa.cast(runs.c[name], sa.Text)) for name in content]
        return sa.select(runs.c.run_id, runs.c.state, sa.type_coerce(runs.c.created_at, sa.String), *sizes).order_by(
            runs.c.run_id
        )

    def stats(self) -> dict[str, Any]:
        """Return what changes when the store's content changes, for cache fingerprints.

        Returns
        -------
        dict
            ``{"url": <redacted url>, "layout": "A"|"B", "wandb_runs": {"rows", "latest_created_at",
            "content_digest"}, "wandb_history": {"rows", "max_id", "latest_timestamp"} or None}``.
            ``content_digest`` hashes each run's id, state, creation time and JSON sizes, so a re-downloaded run
            (new state, evals added to its summary) changes it. Values are JSON-serializable; no password appears.
        """
        schema = self._schema()
        runs, history = schema.runs, schema.history
        self._require_columns(runs, ("run_id", "state", "created_at"))
        with self._connect() as connection:
            run_count, latest_created = connection.execute(
                sa.select(sa.func.count(), sa.func.max(runs.c.created_at, type_=sa.String))
            ).one()
            fingerprint = connection.execute(self._run_content(schema)).all()
            history_stats = None
            if history is not None:
                history_count, max_id, latest_timestamp = connection.execute(
                    sa.select(sa.func.count(), sa.func.max(history.c.id), sa.func.max(_timestamp_column(history)[0]))
                ).one()
                history_stats = {"rows": history_count, "max_id": max_id, "latest_timestamp": _plain(latest_timestamp)}
        row_hashes = pd.util.hash_pandas_object(pd.DataFrame(fingerprint, dtype=object), index=False)
        return {
            "url": self.url_redacted,
            "layout": schema.layout,
            "wandb_runs": {
                "rows": run_count,
                "latest_created_at": _plain(latest_created),
                "content_digest": hashlib.sha256(row_hashes.to_numpy().tobytes()).hexdigest(),
            },
            "wandb_history": history_stats,
        }

    # ----------------------------------------------------------------------------------------------- internals

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """Return a connection (in a transaction when ``write``); driver errors become password-free SourceErrors."""
        try:
            connection = self._engine.connect()
        except sa.exc.DBAPIError as error:
            raise SourceError(self._unreachable(error)) from None
        with connection, translated_errors(self._url):
            if write:
                with connection.begin():
                    yield connection
            else:
                yield connection

    def _unreachable(self, error: sa.exc.DBAPIError) -> str:
        reason = self._url.scrub(driver_message(error))
        if self._url.dialect == "sqlite":
            return f"cannot open the SQLite W&B store at {self.url_redacted} ({reason}); check the path and its folder"
        return (
            f"cannot connect to the W&B store at {self.url_redacted} ({reason}); is PostgreSQL running? check the URL"
        )

    def _schema(self) -> _Schema:
        if self._schema_cache is None:
            self._schema_cache = self._reflect()
        return self._schema_cache

    def _reflect(self) -> _Schema:
        with self._connect() as connection:
            inspector = sa.inspect(connection)
            names = set(inspector.get_table_names())
            if "wandb_runs" not in names:
                raise SourceError(
                    f"no wandb_runs table in {self.url_redacted}; create it with WandBStore.create_tables() or "
                    "point to a W&B store"
                )
            # the columns alone (their names and types are all reads and writes use): one catalog query for both
            # tables, where a full reflection also reads keys, indexes and constraints (~50 ms on PostgreSQL)
            present = [name for name in ("wandb_runs", "wandb_history") if name in names]
            columns = inspector.get_multi_columns(filter_names=present)
        metadata = sa.MetaData()
        tables = {
            name: sa.Table(name, metadata, *(sa.Column(column["name"], column["type"]) for column in described))
            for (_, name), described in columns.items()
        }
        runs, history = tables["wandb_runs"], tables.get("wandb_history")
        if "raw_data" in runs.c:
            return _Schema("A", runs, history)
        if "config" in runs.c:
            return _Schema("B", runs, history)
        raise SourceError(
            f"unknown W&B store layout in {self.url_redacted}: wandb_runs has columns {sorted(runs.c.keys())}; "
            "expected layout A (a raw_data JSON column) or layout B (config, summary, wandb_metadata, system_metrics, "
            "system_attrs, sweep_info JSON columns) — point to a W&B store or use another database"
        )

    def _writable(self, *, require_history: bool) -> _Schema:
        schema = self._schema()
        if schema.layout != "B":
            raise SourceError(
                f"{self.url_redacted} holds layout-{schema.layout} W&B tables; ddxr writes layout B only and one "
                "database cannot hold both layouts — write to another database"
            )
        if require_history and schema.history is None:
            raise SourceError(self._no_history())
        return schema

    def _require_columns(self, table: sa.Table, names: Sequence[str]) -> None:
        missing = [name for name in names if name not in table.c]
        if missing:
            raise SourceError(
                f"{table.name} in {self.url_redacted} lacks columns {missing} (found {sorted(table.c.keys())}); "
                "point to a store written by a W&B downloader or WandBStore"
            )

    def _no_history(self) -> str:
        return f"no wandb_history table in {self.url_redacted}; create it with WandBStore.create_tables()"

    def _history_query(self, run_ids: Sequence[str] | None, keys: Sequence[str]) -> _HistoryQuery:
        """Return the history SELECT for ``run_ids`` and ``keys`` (checked, duplicates dropped)."""
        if not isinstance(keys, str):  # a string is refused whole, never split into one-letter keys
            keys = list(dict.fromkeys(keys))
        _check_keys(keys)
        if isinstance(run_ids, str):
            raise InvalidArgumentError(
                f"run_ids must be a sequence of run ids, not the string {run_ids!r}; wrap it in a list"
            )
        history = self._schema().history
        if history is None:
            raise SourceError(self._no_history())
        self._require_columns(history, ("id", *HISTORY_COLUMNS[:3], "metrics"))
        timestamp, timestamp_kind = _timestamp_column(history)
        runtime = history.c.runtime if "runtime" in history.c else sa.null()
        statement = sa.select(
            history.c.run_id,
            history.c.step,
            timestamp.label("timestamp"),
            runtime.label("runtime"),
            *(
                json_member(self._url.dialect, history.c.metrics, key).label(f"metric_{i}")
                for i, key in enumerate(keys)
            ),
        ).order_by(history.c.run_id, history.c.step, history.c.id)
        if run_ids is not None:
            statement = statement.where(any_of(self._url.dialect, history.c.run_id, list(map(str, run_ids))))
        return _HistoryQuery(statement, keys, timestamp_kind)

    def _read_frame(self, statement: sa.Select, *, invalid_json: tuple[sa.Table, str] | None = None) -> pd.DataFrame:
        """All rows of ``statement`` (columns named by its labels): text columns on PostgreSQL, objects on SQLite.

        ``invalid_json`` names the JSON column SQL parses, so that a cell SQLite cannot parse is named.
        """
        names = list(statement.selected_columns.keys())
        with self._connect() as connection, self._invalid_json(connection, invalid_json):
            if self._url.dialect == "postgresql":  # COPY: text parsed column-wise by Arrow, not tuple by tuple
                tables = list(copy_tables(connection, statement, dict.fromkeys(names, pa.string()), self.chunk_size))
                chunks = [pa.concat_tables(tables).to_pandas()] if tables else []
            else:
                chunks = [
                    pd.DataFrame.from_records(rows, columns=names).astype(object)
                    for rows in stream_rows(connection, statement, self.chunk_size)
                ]
        return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=names, dtype=object)

    def _stream(self, query: _HistoryQuery, chunk_size: int) -> Iterator[pd.DataFrame]:
        history = self._schema().history
        with self._connect() as connection, self._invalid_json(connection, (history, "metrics")):
            if self._url.dialect == "postgresql":  # COPY: text parsed column-wise by Arrow, not tuple by tuple
                for table in copy_tables(connection, query.statement, _copy_types(query), chunk_size):
                    yield _history_frame(_parsed_numbers(table).to_pandas(), query)
            else:
                for rows in stream_rows(connection, query.statement, chunk_size):
                    yield _history_frame(rows, query)

    @contextmanager
    def _invalid_json(self, connection: sa.Connection, where: tuple[sa.Table, str] | None) -> Iterator[None]:
        """Turn SQLite's bare "malformed JSON" into a SourceError naming the table, column, run and row.

        SQLite's JSON functions refuse ``NaN``/``Infinity`` literals, truncated text and nesting deeper than 1000
        levels without saying where; the first such cell is looked up with ``json_valid``. (PostgreSQL's JSONB
        cannot hold invalid JSON.)
        """
        try:
            yield
        except (sa.exc.OperationalError, sqlite3.OperationalError) as error:
            if where is None or self._url.dialect != "sqlite" or "malformed JSON" not in driver_message(error):
                raise
            table, column = where
            key = table.c.id if "id" in table.c else table.c.run_id
            invalid = sa.func.json_valid(table.c[column]) == 0
            found = connection.execute(
                sa.select(table.c.run_id, key, sa.func.count().over()).where(invalid).order_by(key).limit(1)
            ).first()
            if found is None:
                raise
            run_id, row, count = found
            row_text = f"row id {row}" if key is not table.c.run_id else "its row"
            raise SourceError(
                f"{table.name}.{column} of run {run_id!r} ({row_text}; {count} rows in all) is not valid JSON: "
                'truncated text, NaN/Infinity written as bare numbers (write the strings "NaN", "Infinity"), '
                "or nesting deeper than 1000 levels; fix or re-download that run"
            ) from None


# --------------------------------------------------------------------------------------------------- write helpers


def _positive(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _check_columns(frame: pd.DataFrame, required: Sequence[str], optional: Sequence[str], what: str) -> None:
    missing = [name for name in required if name not in frame.columns]
    unknown = [name for name in frame.columns if name not in (*required, *optional)]
    if missing or unknown:
        raise SourceError(
            f"{what} frame: missing columns {missing}, unknown columns {unknown}; expected {list(required)} and "
            f"optionally {list(optional)}" + (" (tags go in system_attrs['tags'])" if "tags" in unknown else "")
        )


def _run_id_list(run_ids: Sequence[str]) -> list[str]:
    if isinstance(run_ids, str):
        raise InvalidArgumentError(
            f"run_ids must be a sequence of run ids, not the string {run_ids!r}; wrap it in a list"
        )
    return [str(run_id) for run_id in run_ids]


def _run_id_column(values: pd.Series, what: str) -> pd.Series:
    """``values`` as str, refusing missing or empty run ids (they would be unreachable by id)."""
    run_ids = values.astype("str")
    empty = run_ids.isna() | (run_ids.str.len() == 0)
    if empty.any():
        raise SourceError(
            f"{what} frame: {int(empty.sum())} rows have no run_id (first at row {int(np.flatnonzero(empty)[0])}); "
            "every row needs its W&B run id"
        )
    return run_ids


def _run_rows(runs: pd.DataFrame) -> pa.Table:
    """Return validated runs as an Arrow table of the ``wandb_runs`` columns, JSON columns as JSON text."""
    _check_columns(runs, (*RUN_TEXT_COLUMNS, "created_at"), RUN_JSON_COLUMNS, "runs")
    run_ids = _run_id_column(runs["run_id"], "runs")
    duplicated = run_ids[run_ids.duplicated()].unique().tolist()
    if duplicated:
        raise SourceError(f"runs frame: run_id must be unique, found duplicates {duplicated[:5]}; keep one row per run")
    try:
        created_at = pd.to_datetime(runs["created_at"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise SourceError(
            f"runs frame: column 'created_at' must hold datetimes or ISO text such as 2025-08-19T05:36:01Z ({error})"
        ) from None
    columns = {name: pa.array(runs[name].astype("str"), pa.string(), from_pandas=True) for name in RUN_TEXT_COLUMNS}
    # the databases keep microseconds: finer input is floored rather than refused
    columns["created_at"] = pa.array(
        created_at.dt.tz_convert(None).dt.floor("us"), pa.timestamp("us"), from_pandas=True
    )
    for name in RUN_JSON_COLUMNS:
        cells = runs[name] if name in runs.columns else pd.Series(None, index=runs.index, dtype=object)
        columns[name] = pa.array(_json_texts(cells, run_ids, name), pa.string())
    return pa.table(columns)


def _json_texts(cells: pd.Series, run_ids: pd.Series, column: str) -> pd.Series:
    """Each dict as JSON text; None/NaN as ``{}``."""
    missing = cells.map(lambda cell: cell is None or (isinstance(cell, float) and math.isnan(cell)))
    not_dict = ~missing & ~cells.map(lambda cell: isinstance(cell, dict))
    if not_dict.any():
        first = cells[not_dict].iloc[0]
        raise SourceError(
            f"runs frame: column {column!r} of run {run_ids[not_dict].iloc[0]!r} holds a {type(first).__name__}, "
            "expected a dict (or None for {}); json.loads JSON text before store_runs"
        )
    try:
        return cells.where(~missing, "{}").map(lambda cell: cell if isinstance(cell, str) else _json_dumps(cell))
    except TypeError as error:
        raise SourceError(
            f"runs frame: column {column!r} holds a value JSON cannot encode ({error}); convert it to str, number, "
            "list or dict"
        ) from None


def _json_dumps(value: object) -> str:
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, default=_json_default)
    except ValueError:  # NaN or ±inf somewhere: JSONB rejects them, W&B writes them as strings
        return json.dumps(_finite(value), allow_nan=False, ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic | np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: object) -> object:
    """``value`` with non-finite floats replaced by ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _run_order(run_ids: np.ndarray) -> np.ndarray:
    """Return the row order that writes runs in ``run_id`` order, each run's rows in their given order.

    The ``(run_id, step)`` index then grows at its right edge: runs inserted at random places split pages all over
    an index larger than the server's buffers, which made writing 8.5 M rows several times slower. Only the runs of
    equal neighbours are compared, not every row.
    """
    starts, lengths = equal_runs(run_ids)
    blocks = np.argsort(run_ids[starts], kind="stable")
    offsets = np.arange(len(run_ids)) - np.repeat(np.cumsum(lengths[blocks]) - lengths[blocks], lengths[blocks])
    return np.repeat(starts[blocks], lengths[blocks]) + offsets


def _check_history_columns(history: pd.DataFrame) -> None:
    names = list(history.columns)
    bad_names = [name for name in names if not isinstance(name, str) or "\x00" in name]
    duplicated = sorted({name for name in names if names.count(name) > 1}, key=str)
    if bad_names or duplicated or not {"run_id", "step"} <= set(names):
        raise SourceError(
            f"history frame: expected columns run_id, step, optional timestamp and runtime, and one column per "
            f"metric named by a unique string without NUL characters; found columns {names[:20]} (bad names "
            f"{bad_names[:5]}, duplicated {duplicated[:5]})"
        )


def _history_input(history: pd.DataFrame) -> pd.DataFrame:
    """Return validated history: ``run_id`` str, ``step`` int64, ``timestamp``/``runtime`` float64, numeric metrics."""
    names = list(history.columns)
    run_ids = _run_id_column(history["run_id"], "history")
    step = pd.to_numeric(history["step"], errors="coerce")
    bad_step = step.isna() | (step % 1 != 0)
    if bad_step.any():
        raise SourceError(
            f"history frame: step must be an integer on every row; run {run_ids[bad_step].iloc[0]!r} has "
            f"{history['step'][bad_step].tolist()[0]!r} — drop or fix those rows"
        )
    missing = pd.Series(np.nan, index=history.index)
    columns = {
        "run_id": run_ids,
        "step": step.astype("int64"),
        "timestamp": _epoch_seconds(history["timestamp"]) if "timestamp" in names else missing,
        "runtime": _numeric(history["runtime"], "runtime") if "runtime" in names else missing,
    }
    metrics = {key: _numeric(history[key], key) for key in names if key not in HISTORY_COLUMNS}
    return pd.DataFrame({**columns, **metrics}, index=history.index)


def _epoch_seconds(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    try:
        stamps = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise SourceError(
            f"history frame: column 'timestamp' must hold epoch seconds, datetimes or ISO text ({error})"
        ) from None
    return _epoch_from_utc(stamps)


def _epoch_from_utc(stamps: pd.Series) -> pd.Series:
    """Return zoned timestamps as float epoch seconds.

    Whole seconds and fraction are summed once, so that 05:39:25.27 gives …965.27 exactly (dividing the
    nanoseconds as a float rounds twice).
    """
    nanoseconds = stamps.astype("datetime64[ns, UTC]").to_numpy("datetime64[ns]").view("int64")
    seconds = nanoseconds // 10**9 + (nanoseconds % 10**9) / 1e9
    return pd.Series(np.where(stamps.isna(), np.nan, seconds), index=stamps.index)


def _numeric(values: pd.Series, key: str) -> pd.Series:
    """Return a metric column as numbers (booleans as 0/1), or a SourceError naming a non-numeric value."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("Int64")
    if pd.api.types.is_numeric_dtype(values):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna() & ~values.astype("str").str.fullmatch(_NAN_TEXT, case=False)
    if bad.any():
        raise SourceError(
            f"history frame: column {key!r} must be numeric, found {values[bad].iloc[0]!r}; store_history stores "
            "numbers only — convert or drop that column"
        )
    return numbers


def _history_rows(history: pd.DataFrame) -> pa.Table:
    """Return a chunk of the store_history frame, validated, as the Arrow table of ``wandb_history`` columns."""
    chunk = _history_input(history)
    keys = chunk.columns[len(HISTORY_COLUMNS) :]
    return pa.table(
        {
            "run_id": pa.array(chunk["run_id"], pa.string()),
            "step": pa.array(chunk["step"], pa.int64()),
            "timestamp": pa.array(chunk["timestamp"], pa.float64(), from_pandas=True),
            "runtime": pa.array(chunk["runtime"], pa.float64(), from_pandas=True),
            "metrics": _pack_metrics(chunk, keys),
        }
    )


def _pack_metrics(chunk: pd.DataFrame, keys: Sequence[str]) -> pa.Array:
    """One JSON object text per row, built column-wise in Arrow: ``{"key": value, …}`` without the NaN keys.

    Each member is ``,"key":value`` or ``""`` (NaN); the row joins them and drops the leading comma. (Arrow 26's
    ``null_handling="skip"`` drops rows whose inputs are all null, so nulls are turned into ``""`` first.)
    """
    members = [_json_members(key, chunk[key]) for key in keys]  # a loop over metric columns, not rows
    if not members:
        return pa.repeat("{}", len(chunk))
    joined = pc.binary_join_element_wise(*members, "") if len(members) > 1 else members[0]
    return pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")


def _json_members(key: str, values: pd.Series) -> pa.Array:
    numbers = pa.Array.from_pandas(values)  # NaN → null
    text = pc.cast(numbers, pa.string())  # shortest round-trip form: read back bit-exact
    if pa.types.is_floating(numbers.type):
        signed_infinity = pc.if_else(pc.greater(numbers, 0), '"Infinity"', '"-Infinity"')
        text = pc.if_else(pc.is_inf(numbers), signed_infinity, text)
    member = pc.binary_join_element_wise("," + json.dumps(key, ensure_ascii=False) + ":", text, "")
    return member.fill_null("")


# ---------------------------------------------------------------------------------------------------- read helpers


def _stored_json_columns(wanted: Sequence[str], layout: str) -> tuple[str, ...]:
    """Return the stored JSON columns that the read_runs columns ``wanted`` and the tags are decoded from."""
    needed = {*wanted, *_TAG_SOURCES}
    if layout != "A":
        return tuple(name for name in READ_JSON_COLUMNS if name in needed)
    return ("raw_data", *(name for name in _LAYOUT_A_KEPT if name in needed))


def _runs_frame(raw: pd.DataFrame, layout: str, wanted: Sequence[str]) -> pd.DataFrame:
    """Return the read_runs frame from raw SELECT rows, with the JSON columns ``wanted``."""
    missing_id = raw["run_id"].isna()
    if missing_id.any():
        raise SourceError(
            f"wandb_runs has {int(missing_id.sum())} rows with a NULL run_id (the first has run_name "
            f"{raw['run_name'][missing_id].iloc[0]!r}); every run needs its W&B run id — fix or delete those rows"
        )
    run_ids = raw["run_id"].astype("str")
    # a NULL name, state, project or entity is unknown, not a crash: the links report what it leaves unknown
    frame = raw[list(RUN_TEXT_COLUMNS)].fillna("").astype("str")
    frame["created_at"] = _utc(raw["created_at"], "wandb_runs.created_at")
    frame["layout"] = layout
    if layout == "A":
        merged = _dicts(raw["raw_data"], run_ids, "raw_data")
        dicts = {"config": merged}
        if "summary" in wanted:
            dicts["summary"] = merged.map(dict)
        stored = _LAYOUT_A_KEPT
    else:
        dicts = {}
        stored = READ_JSON_COLUMNS
    dicts |= {name: _dicts(raw[name], run_ids, name) for name in stored if name in raw}
    for name in wanted:
        frame[name] = dicts[name] if name in dicts else _empty_dicts(len(raw))
    attributes = dicts.get("system_attrs", _empty_dicts(len(raw)))
    frame["tags"] = _tags(attributes, dicts.get("config", _empty_dicts(len(raw))))
    line_counts = pd.to_numeric(attributes.map(operator.methodcaller("get", "historyLineCount")))
    frame["history_line_count"] = line_counts.astype("Int64")
    return frame


def _empty_dicts(rows: int) -> pd.Series:
    return pd.Series([{} for _ in range(rows)], dtype=object)


@dataclass(frozen=True)
class _Malformed:
    """Why a JSON cell could not be read (not a str: pandas would turn a column of them into plain text)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def _refuse_constant(name: str) -> float:
    raise ValueError(f"bare {name}")


def _load_json(cell: object) -> object:
    """Return a JSON cell as a dict; NULL (and JSON ``null``) as ``{}``; anything else as a :class:`_Malformed`."""
    if isinstance(cell, str):
        try:
            # NaN/Infinity are not JSON: JSONB and SQLite refuse them, W&B writes them as strings
            cell = json.loads(cell, parse_constant=_refuse_constant)
        except RecursionError:
            return _Malformed("nested too deep to parse")
        except ValueError as error:  # JSONDecodeError is a ValueError
            return _Malformed(f"malformed JSON: {str(error)[:80]}")
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return {}
    return cell if isinstance(cell, dict) else _Malformed(f"a JSON {type(cell).__name__}, not an object")


def _dicts(cells: pd.Series, run_ids: pd.Series, column: str) -> pd.Series:
    """JSON cells (text or decoded) as dicts; NULL as ``{}``."""
    with collector_paused():
        parsed = cells.map(_load_json).astype(object)
    malformed = parsed.map(lambda cell: isinstance(cell, _Malformed))
    if malformed.any():
        raise SourceError(
            f"wandb_runs.{column} of run {run_ids[malformed].iloc[0]!r} is not a JSON object "
            f"({parsed[malformed].iloc[0]}; {int(malformed.sum())} runs); fix or re-download those runs"
        )
    return parsed


def _tags(system_attrs: pd.Series, config: pd.Series) -> pd.Series:
    """Tags by docs/sources.md §6.7: system_attrs tags (layout B) → config/raw_data ``wandb_tags`` split on ','."""
    from_attrs = system_attrs.map(operator.methodcaller("get", "tags"))
    from_config = config.map(operator.methodcaller("get", "wandb_tags"))
    chosen = from_attrs.where(from_attrs.map(lambda tags: isinstance(tags, list)), from_config)
    return chosen.map(_tag_list).astype(object)


def _tag_list(tags: object) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, list):
        return []
    return [text for text in (str(tag).strip() for tag in tags) if text]


def _utc(values: pd.Series, where: str) -> pd.Series:
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    except (ValueError, TypeError) as error:
        raise SourceError(f"{where} holds a value that is not a date ({error}); fix the stored value") from None


def _check_keys(keys: Sequence[str]) -> None:
    if isinstance(keys, str):
        raise InvalidArgumentError(
            f"keys must be a sequence of metric keys, not the string {keys!r}; wrap it in a list"
        )
    bad = [key for key in keys if not isinstance(key, str) or not key or key in HISTORY_COLUMNS]
    if bad:
        raise InvalidArgumentError(
            f"history keys must be non-empty strings other than {list(HISTORY_COLUMNS)}, found {bad[:5]}; those "
            "columns are always returned"
        )


def _timestamp_column(history: sa.Table) -> tuple[sa.ColumnElement, str]:
    """Return the history timestamp as selected, and its kind.

    The kind is ``"epoch"`` (a number), ``"aware"`` (a zoned timestamp) or ``"naive"`` (anything else, read as a
    date; selected as text to skip SQLAlchemy's strict SQLite date parser).
    """
    column = history.c.timestamp
    if isinstance(column.type, sa.Float | sa.Numeric | sa.Integer):
        return column, "epoch"
    kind = "aware" if isinstance(column.type, sa.DateTime) and column.type.timezone else "naive"
    return sa.type_coerce(column, sa.String), kind


def _copy_types(query: _HistoryQuery) -> dict[str, pa.DataType]:
    """Arrow types of the history SELECT's columns as COPY writes them: all text until :func:`_parsed_numbers`."""
    return dict.fromkeys([*HISTORY_COLUMNS, *(f"metric_{i}" for i in range(len(query.keys)))], pa.string())


def _parsed_numbers(table: pa.Table) -> pa.Table:
    """Cast the text columns after ``run_id`` to float64 in Arrow where every value is a finite number or NaN.

    A column holding anything else stays text for :func:`_history_frame` to read, check and count (dates, words,
    and infinities, whose spelling tells ``"Infinity"`` from a number beyond float64).
    """
    for position in range(1, table.num_columns):
        try:
            numbers = pc.cast(table.column(position), pa.float64())
        except pa.ArrowInvalid:
            continue
        if pc.any(pc.is_inf(numbers)).as_py():
            continue
        table = table.set_column(position, table.field(position).with_type(pa.float64()), numbers)
    return table


def _history_frame(rows: Sequence[Sequence[object]] | pd.DataFrame, query: _HistoryQuery) -> pd.DataFrame:
    """Return one chunk of SELECT rows (tuples, or a frame of the SELECT's columns) as the history frame.

    Its coercion counts are in ``attrs``.
    """
    labels = [f"metric_{i}" for i in range(len(query.keys))]
    if isinstance(rows, pd.DataFrame):
        raw = rows
    else:
        raw = pd.DataFrame.from_records(rows, columns=[*HISTORY_COLUMNS, *labels])
    step = _stored_numbers(raw, "step", integral=True)
    columns = {
        "run_id": raw["run_id"].astype("str"),
        "step": step.astype("int64"),
        "timestamp": _timestamps(raw, query.timestamp_kind),
        "runtime": _stored_numbers(raw, "runtime", integral=False),
    }
    failures = {}
    for key, label in zip(query.keys, labels, strict=True):  # a loop over requested keys, not rows
        columns[key], failures[key] = _coerce(raw[label])
    frame = pd.DataFrame(columns)
    frame.attrs[COERCION_FAILURES] = failures
    return frame


def _stored_numbers(raw: pd.DataFrame, column: str, *, integral: bool) -> pd.Series:
    """Return a fixed numeric column of wandb_history as float64.

    Text (or, for ``step``, missing or fractional values) raises a SourceError naming the run and the value.
    """
    values = raw[column]
    if values.dtype == np.float64:  # read as numbers (a NULL is NaN): no text to find
        numbers, bad = values, np.zeros(len(values), dtype=bool)
    else:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        bad = (numbers.isna() & values.notna()).to_numpy()
    if integral:
        bad = bad | (numbers.isna() | (numbers % 1 != 0)).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise SourceError(
            f"wandb_history.{column} of run {raw['run_id'].iloc[first]!r} holds {values.iloc[first]!r} in the row "
            f"with step {raw['step'].iloc[first]!r} ({int(bad.sum())} such rows in this chunk), expected "
            f"{'an integer' if integral else 'a number'}; fix or delete those rows, or re-download that run's history"
        )
    return numbers


def _timestamps(raw: pd.DataFrame, kind: str) -> pd.Series:
    values = raw["timestamp"]
    if kind == "epoch":
        return _stored_numbers(raw, "timestamp", integral=False)
    if kind == "aware":
        return _epoch_from_utc(_utc(values, "wandb_history.timestamp"))
    return pd.to_datetime(values, format="ISO8601").astype("datetime64[ns]")


def _coerce(values: pd.Series) -> tuple[np.ndarray, int]:
    """Return metric values as float64 and the number of values turned into NaN.

    Those are non-numeric values, and numbers beyond float64 (JSON ``1e999``: PostgreSQL returns its digits, SQLite
    an inf REAL), as DataDecide cells are read.
    The strings ``"Infinity"``/``"-Infinity"`` (how W&B and :meth:`WandBStore.store_history` write ±inf) stay ±inf.
    """
    if values.dtype == np.float64:  # read as numbers (a NULL is NaN): only infinities to check
        numbers, failed = values.to_numpy(copy=True), np.zeros(len(values), dtype=bool)
    else:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan, copy=True)
        failed = np.isnan(numbers) & values.notna().to_numpy(bool)
    if failed.any():
        failed[failed] = ~values[failed].astype("str").str.fullmatch(_NAN_TEXT, case=False).to_numpy(dtype=bool)
    infinite = np.isinf(numbers)
    if infinite.any():
        spelled = values[infinite].map(lambda value: isinstance(value, str) and bool(_INF_TEXT.fullmatch(value)))
        overflowed = np.flatnonzero(infinite)[~spelled.to_numpy(bool)]
        numbers[overflowed] = np.nan
        failed[overflowed] = True
    return numbers, int(failed.sum())


def _plain(value: object) -> object:
    """Return a SQL scalar as a JSON-serializable value (datetimes as ISO text)."""
    return value.isoformat() if hasattr(value, "isoformat") else value

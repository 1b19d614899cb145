"""SQL plumbing of the W&B store: URLs, error translation, per-dialect JSON expressions and bulk writes.

Only PostgreSQL (through psycopg2) and SQLite are supported; the functions here take the dialect name
(``"postgresql"`` or ``"sqlite"``) or a connection, so :mod:`ddxr.sources.wandb_store` reads as one backend-neutral
contract.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

import psycopg2
import psycopg2.errors
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import URL, make_url

from ddxr.errors import SourceError

URL_HELP = "use postgresql://user@host:port/database or sqlite:///path/to/runs.db"
# psycopg 3 (SQLAlchemy's default for a driverless postgresql:// URL) is not a ddxr dependency, and the COPY path
# needs psycopg2's copy_expert: every PostgreSQL URL is routed to psycopg2.
_POSTGRES_DRIVERS = {"", "psycopg2", "psycopg"}
_SQLITE_DRIVERS = {"", "pysqlite"}
_CONNECT_TIMEOUT_S = 10
#: Query parameters whose values are credentials: libpq's ``password`` and ``sslpassword``, its ``passfile`` (a path
#: to passwords), and any other parameter a driver or proxy may read a secret from (``*_token``, ``*secret*``).
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|credential", re.IGNORECASE)


@dataclass(frozen=True)
class StoreURL:
    """A database URL: what SQLAlchemy connects with, and what may be shown to people.

    Attributes
    ----------
    url : sqlalchemy.engine.URL
        The URL with the driver ddxr uses (``postgresql+psycopg2`` or ``sqlite``).
    redacted : str
        The URL as the user wrote it, with the password and every credential query parameter (``password``,
        ``sslpassword``, ``passfile``, any name holding ``pass``, ``pwd``, ``secret``, ``token`` or ``credential``)
        replaced by ``***``.
    secrets : tuple of str
        Strings that must never be shown (the password, from the userinfo or the query string).
    """

    url: URL = field(repr=False)  # its query string may hold a password
    redacted: str
    secrets: tuple[str, ...] = field(repr=False)

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.url.get_backend_name()

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (driver messages may echo connection parameters)."""
        for secret in self.secrets:
            # the URL's spelling of a secret may be percent-encoded too
            for spelling in dict.fromkeys((secret, quote(secret, safe=""), quote_plus(secret, safe=""))):
                text = text.replace(spelling, "***")
        return text

    def create_engine(self, *, lock_timeout: float | None = None, statement_timeout: float | None = None) -> sa.Engine:
        """Return an engine for this URL, with bounded timeouts on PostgreSQL.

        The connect timeout is bounded; the given lock and statement timeouts (seconds; None or 0: wait forever)
        are set on every session.

        The URL's own ``options`` come after ddxr's, so ``?options=-c lock_timeout=5s`` in the URL wins.
        """
        connect_args: dict[str, object] = {}
        if self.dialect != "postgresql":
            return sa.create_engine(self.url)
        if "connect_timeout" not in self.url.query:
            connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
        settings = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout}
        options = [f"-c {name}={round(seconds * 1000)}" for name, seconds in settings.items() if seconds]
        options.extend(_values(self.url.query.get("options", ())))
        if options:
            connect_args["options"] = " ".join(options)
        return sa.create_engine(self.url, connect_args=connect_args)


def parse_url(url: str) -> StoreURL:
    """Check a user's database URL and choose its driver.

    Parameters
    ----------
    url : str
        ``postgresql://…``, ``postgres://…``, ``postgresql+psycopg2://…``, ``postgresql+psycopg://…`` or
        ``sqlite:///…``.

    Returns
    -------
    StoreURL

    Raises
    ------
    SourceError
        When the URL cannot be parsed or names another database or driver.
    """
    try:
        given = make_url(url)
    except (sa.exc.ArgumentError, TypeError, ValueError):
        raise SourceError(f"cannot parse the W&B store URL (not shown: it may hold a password); {URL_HELP}") from None
    secret_keys = [key for key in given.query if _SECRET_PARAMETER.search(key)]
    query_secrets = [value for key in secret_keys for value in _values(given.query[key])]
    # longest first, so that a secret holding another is replaced whole
    secrets = tuple(sorted({secret for secret in (given.password, *query_secrets) if secret}, key=len, reverse=True))
    shown = given.update_query_dict(dict.fromkeys(secret_keys, "***")) if secret_keys else given
    redacted = shown.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")
    backend, _, driver = given.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in _POSTGRES_DRIVERS:
        return StoreURL(given.set(drivername="postgresql+psycopg2"), redacted, secrets)
    if backend == "sqlite" and driver in _SQLITE_DRIVERS:
        return StoreURL(given, redacted, secrets)
    raise SourceError(f"unsupported database URL scheme {given.drivername!r} in {redacted}; {URL_HELP}")


def _values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """Return a query parameter's values (SQLAlchemy gives a tuple when the parameter is repeated)."""
    return (value,) if isinstance(value, str) else tuple(value)


def driver_message(error: Exception) -> str:
    """Return the first line of the driver's own message (SQLAlchemy's wrapper appends SQL text and parameters)."""
    original = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    text = str(original).strip()
    return text.splitlines()[0] if text else type(original).__name__


@contextmanager
def translated_errors(url: StoreURL) -> Iterator[None]:
    """Turn driver errors raised inside the block into a :class:`SourceError` that cannot leak the password.

    Errors come through SQLAlchemy or straight from the driver's cursor (see :func:`stream_rows`).
    """
    try:
        yield
    except (sa.exc.DBAPIError, psycopg2.Error, sqlite3.Error) as error:
        original = error.orig if isinstance(error, sa.exc.DBAPIError) else error
        if isinstance(original, psycopg2.errors.LockNotAvailable | psycopg2.errors.QueryCanceled):
            raise SourceError(
                f"the W&B store at {url.redacted} did not answer in time ({url.scrub(driver_message(error))}): "
                "another session holds a lock on a store table (e.g. a running downloader's transaction, see "
                "pg_locks) or the query ran past its statement timeout; retry when that session ends, or raise "
                "the timeout in the store URL (?options=-c%20lock_timeout%3D300s) or, in Python, with "
                "WandBStore(url, lock_timeout=…, statement_timeout=…)"
            ) from None
        raise SourceError(
            f"the W&B store at {url.redacted} failed: {url.scrub(driver_message(error))}; check that its tables "
            "were written by a W&B downloader or WandBStore"
        ) from None


def any_of(dialect: str, column: sa.ColumnElement, values: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column`` is one of ``values``, as ONE bound parameter whatever the number of values.

    PostgreSQL gets ``= ANY(:array)``; SQLite gets ``IN (SELECT value FROM json_each(:json_array))``, which avoids
    its bound-variable limit (999 before 3.32) without batching.
    """
    values = list(values)
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(sa.Text)))
    listed = sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.Text)).table_valued("value")
    return column.in_(sa.select(listed.c.value))


def json_member(dialect: str, column: sa.ColumnElement, key: str) -> sa.ColumnElement:
    r"""Return the value of top-level ``key`` of a JSON column, for any key text (``/``, ``.``, quotes, non-ASCII).

    PostgreSQL returns text (``metrics ->> :key``). SQLite returns the SQL value (REAL, INTEGER, TEXT) through a
    ``json_each`` lookup: SQLite 3.40's ``'$."key"'`` paths match the key's escaped source text, so keys holding
    ``"`` or stored with ``\\u`` escapes would silently come back NULL.
    """
    if dialect == "postgresql":
        return sa.cast(column, JSONB)[key].astext
    entry = sa.func.json_each(column).table_valued("key", "value").alias()
    return sa.select(entry.c.value).where(entry.c.key == sa.bindparam(None, key, type_=sa.Text)).scalar_subquery()


def json_entries(
    dialect: str, table: sa.Table, column: str, key_prefix: str, run_ids: Sequence[str] | None = None
) -> sa.Select:
    """Select rows ``(run_id, key, value)`` of the top-level entries of ``table.column`` starting with ``key_prefix``.

    ``value`` is the entry's JSON text; ``run_ids`` (optional) restricts the runs.
    """
    if dialect == "postgresql":
        # the runs come in run_id order (OFFSET 0 keeps a subquery's order), so the server sorts each run's few
        # hundred entries by key in memory (an incremental sort) instead of all entries at once, on disk
        runs = sa.select(table.c.run_id, table.c[column]).order_by(table.c.run_id).offset(0)
        if run_ids is not None:
            runs = runs.where(any_of(dialect, table.c.run_id, run_ids))
        runs = runs.subquery("runs")
        entry = sa.func.jsonb_each(sa.cast(runs.c[column], JSONB)).table_valued("key", "value").alias("entry")
        value = sa.cast(entry.c.value, sa.Text)
        # PostgreSQL's LIKE is case-sensitive; autoescape keeps the '_' of 'oe_eval_metrics/' literal
        matches = entry.c.key.startswith(key_prefix, autoescape=True)
    else:
        runs = table
        json_column = table.c[column]
        if run_ids is not None:
            matches_run = any_of(dialect, table.c.run_id, run_ids)
        entry = sa.func.json_each(json_column).table_valued("key", "value", "fullkey").alias("entry")
        # `->` returns the entry's JSON text verbatim; for keys holding '"' (which SQLite 3.40 paths cannot name)
        # json_quote is the fallback, with 15 significant digits for reals
        value = sa.func.coalesce(
            json_column.op("->", return_type=sa.Text)(entry.c.fullkey), sa.func.json_quote(entry.c.value)
        )
        # SQLite's LIKE ignores ASCII case: the substr equality makes the prefix test exact
        matches = entry.c.key.startswith(key_prefix, autoescape=True) & (
            sa.func.substr(entry.c.key, 1, len(key_prefix)) == key_prefix
        )
        if run_ids is not None:
            matches = matches & matches_run
    return (
        sa.select(runs.c.run_id, entry.c.key, value.label("value"))
        .select_from(runs)
        .join(entry, sa.true())
        .where(matches)
        .order_by(runs.c.run_id, entry.c.key)
    )


def bulk_insert(connection: sa.Connection, table: sa.Table, rows: pa.Table, json_columns: Sequence[str]) -> None:
    """Append ``rows`` (column names = table columns; JSON columns already as JSON text) to ``table``.

    PostgreSQL: one ``COPY … FROM STDIN (FORMAT csv)`` through the raw psycopg2 connection, inside the caller's
    transaction (Arrow's CSV writer quotes strings, writes nulls as empty fields and floats in shortest round-trip
    form). SQLite: one ``executemany``, the JSON columns bound as text so SQLAlchemy does not encode them twice.
    """
    if rows.num_rows == 0:  # SQLAlchemy would run an executemany of no rows as one INSERT of NULLs
        return
    if connection.dialect.name == "postgresql":
        quote = connection.dialect.identifier_preparer.quote
        buffer = io.BytesIO()
        pa_csv.write_csv(rows, buffer, pa_csv.WriteOptions(include_header=False))
        buffer.seek(0)
        columns = ", ".join(quote(name) for name in rows.column_names)
        with connection.connection.dbapi_connection.cursor() as cursor:
            cursor.copy_expert(f"COPY {quote(table.name)} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
        return
    statement = sa.insert(table).values({name: sa.bindparam(name, type_=sa.Text) for name in json_columns})
    connection.execute(statement, rows.to_pylist())


def stream_rows(connection: sa.Connection, statement: sa.Select, chunk_size: int) -> Iterator[list[tuple]]:
    """Return the rows of ``statement`` as lists of at most ``chunk_size`` plain tuples.

    The statement is compiled by SQLAlchemy and run on the driver's own cursor: a named (server-side) cursor on
    PostgreSQL, so the server hands out ``chunk_size`` rows at a time and memory follows the chunk size. The
    driver's tuples go straight into ``DataFrame.from_records``; SQLAlchemy's ``Row`` objects cost more than the
    query itself when pandas inspects them (≈7 µs a row). The statement's parameters must need no SQLAlchemy
    bind processing (text, numbers, lists of text).
    """
    compiled = statement.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    parameters = compiled.params
    if compiled.positional:
        parameters = tuple(parameters[name] for name in compiled.positiontup)
    driver_connection = connection.connection.dbapi_connection
    postgres = connection.dialect.name == "postgresql"
    cursor = driver_connection.cursor(f"ddxr_{uuid.uuid4().hex}") if postgres else driver_connection.cursor()
    try:
        cursor.execute(str(compiled), parameters)
        while rows := cursor.fetchmany(chunk_size):
            yield rows
    finally:
        cursor.close()

"""PostgreSQL ``COPY (SELECT …) TO STDOUT`` streamed into Arrow tables of a fixed number of rows.

A server-side cursor hands rows to Python one tuple at a time, and turning tuples into columns costs more than the
query itself. COPY sends CSV text instead, which Arrow's CSV reader parses column-wise in C++. psycopg2 pushes the
COPY output into a file object, so a worker thread writes it into a pipe while the caller's thread reads the pipe
with Arrow's streaming reader: parsing overlaps the transfer, and memory follows the pipe and block sizes, never the
result size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping

import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

_BLOCK_BYTES = 1 << 22  # CSV bytes Arrow parses per batch (its default, 1 MiB, makes many tiny batches)


def copy_tables(
    connection: sa.Connection, statement: sa.Select, column_types: Mapping[str, pa.DataType], chunk_size: int
) -> Iterator[pa.Table]:
    """Return the rows of ``statement`` as Arrow tables of exactly ``chunk_size`` rows (the last one shorter).

    Parameters
    ----------
    connection : sqlalchemy.Connection
        A PostgreSQL connection through psycopg2. If the caller stops iterating early, the connection is
        invalidated (the COPY was cut off mid-stream).
    statement : sqlalchemy.Select
        The query; its labels name the columns.
    column_types : mapping of str to pyarrow.DataType
        Arrow type of every selected column, in order. SQL NULL becomes null; an empty text value stays ``""``.
    chunk_size : int
        Rows per yielded table.

    Raises
    ------
    psycopg2.Error
        When the server fails, raised in the caller's thread (translate it with
        :func:`ddxr.sources._sql.translated_errors`).
    """
    names = list(column_types)
    compiled = statement.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    driver = connection.connection.dbapi_connection
    with driver.cursor() as cursor:  # psycopg2 binds parameters on the client: mogrify is its own binding
        query = cursor.mogrify(str(compiled), compiled.params).decode()
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=_BLOCK_BYTES) as sink, driver.cursor() as cursor:
                cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", sink)
        except BaseException as error:  # re-raised in the reading thread
            failure.append(error)

    producer = threading.Thread(target=produce, name="ddxr-copy", daemon=True)
    producer.start()
    source = os.fdopen(read_fd, "rb")
    finished = False
    try:
        if not source.peek(1):  # no rows (or a failure before the first): Arrow refuses an empty CSV
            producer.join()
            if failure:
                raise failure[0]
            finished = True
            return
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(column_names=names, block_size=_BLOCK_BYTES, use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict(column_types),
                strings_can_be_null=True,  # COPY writes NULL as an unquoted empty field…
                quoted_strings_can_be_null=False,  # …and an empty text as "", which stays ""
            ),
        )
        yield from _rechunked(_checked(reader, producer, failure), reader.schema, chunk_size)
        finished = True
    except pa.ArrowInvalid:
        producer.join()
        if failure:  # the server failed mid-stream: its error, not the truncated CSV's
            raise failure[0] from None
        raise
    finally:
        source.close()  # an unfinished COPY now fails with a broken pipe and stops
        producer.join()
        if not finished:
            connection.invalidate()


def _checked(
    reader: pa_csv.CSVStreamingReader, producer: threading.Thread, failure: list[BaseException]
) -> Iterator[pa.RecordBatch]:
    """Return the reader's batches, then the server's error if the COPY failed.

    The check at the end matters: a cut-off stream can end on a whole line and parse without complaint.
    """
    yield from reader
    producer.join()
    if failure:
        raise failure[0]


def _rechunked(batches: Iterator[pa.RecordBatch], schema: pa.Schema, chunk_size: int) -> Iterator[pa.Table]:
    """Record batches of any sizes regrouped into tables of ``chunk_size`` rows (zero-copy slices)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        if rows < chunk_size:
            continue
        table = pa.Table.from_batches(pending, schema)
        start = 0
        while rows - start >= chunk_size:
            yield table.slice(start, chunk_size)
            start += chunk_size
        pending = table.slice(start).to_batches()
        rows -= start
    if rows:
        yield pa.Table.from_batches(pending, schema)

"""Write generated runs in layout A, the older W&B downloader's tables (docs/sources.md §4.1).

Layout A keeps one merged ``raw_data`` JSON dict per run: the run config, then the summary written over it (summary
keys win on equal keys: a trained run's ``learning_rate`` becomes the last logged schedule value, often ~0), then
``wandb_tags`` = the tags joined with ``,``. ``runtime`` is always 0; history has no runtime column and stores
``_timestamp`` as the downloading machine's naive local time. Hardware aggregates are not kept; launch metadata
(``wandb_metadata``, with the command line) and W&B's run attributes (``system_attrs``, with W&B's own config copy)
are kept only with ``keep_attributes=True``, as columns next to ``raw_data`` — without them, the configured peak
learning rate of a trained run whose name carries none is lost, and so is the GPU count.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from ddxr.errors import DdxrError
from ddxr.sources._sql import bulk_insert, parse_url
from ddxr.sources.wandb_store import _JSON, RUN_TEXT_COLUMNS, _history_rows, _run_rows

__all__ = ["DOWNLOADER_UTC_OFFSET", "merged_raw_data", "write_layout_a"]

#: The downloading machine's clock (US Pacific daylight time): layout A's naive history timestamps are in it.
DOWNLOADER_UTC_OFFSET = pd.Timedelta(hours=-7)


def _layout_a(kept: tuple[str, ...]) -> sa.MetaData:
    """Return the layout-A tables as the older downloader created them, plus the ``kept`` JSON columns."""
    metadata = sa.MetaData()
    sa.Table(
        "wandb_runs",
        metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        *(sa.Column(name, sa.Text) for name in RUN_TEXT_COLUMNS[1:]),
        sa.Column("created_at", sa.DateTime),
        sa.Column("runtime", sa.Integer),
        sa.Column("raw_data", _JSON),
        *(sa.Column(name, _JSON) for name in kept),
    )
    sa.Table(
        "wandb_history",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text),  # no foreign key, no index: as the downloader created it
        sa.Column("step", sa.Integer),
        sa.Column("timestamp", sa.DateTime),
        sa.Column("metrics", _JSON),
    )
    return metadata


def merged_raw_data(runs: pd.DataFrame) -> pd.Series:
    """Layout A's ``raw_data`` of each run: config, the summary written over it, then ``wandb_tags``.

    Parameters
    ----------
    runs : pandas.DataFrame
        Runs in the form of ``WandBStore.store_runs`` (dict columns ``config``, ``summary``, ``system_attrs``).

    Returns
    -------
    pandas.Series
        One dict per run, aligned with ``runs``.

    Examples
    --------
    >>> runs = pd.DataFrame(
    ...     {
    ...         "config": [{"learning_rate": 5e-05, "seed": 8}],
    ...         "summary": [{"learning_rate": 3.5e-09}],
    ...         "system_attrs": [{"tags": ["finetune", "hidden"]}],
    ...     }
    ... )
    >>> merged_raw_data(runs)[0]
    {'learning_rate': 3.5e-09, 'seed': 8, 'wandb_tags': 'finetune,hidden'}
    """
    merged = [
        {**(config or {}), **(summary or {}), "wandb_tags": ",".join((attrs or {}).get("tags") or [])}
        for config, summary, attrs in zip(runs["config"], runs["summary"], runs["system_attrs"], strict=True)
    ]
    return pd.Series(merged, index=runs.index, dtype=object)


def write_layout_a(url: str, runs: pd.DataFrame, history: pd.DataFrame, *, keep_attributes: bool = False) -> None:
    """Create layout-A tables in an empty database and write runs and history into them.

    Parameters
    ----------
    url : str
        ``postgresql://…`` or ``sqlite:///…`` of a database without ``wandb_runs`` / ``wandb_history`` tables.
    runs, history : pandas.DataFrame
        Runs and history in the form of ``WandBStore.store_runs`` / ``store_history`` (e.g. from
        :func:`ddxr.synthetic.posttraining.generate_posttraining`); history timestamps are epoch seconds.
    keep_attributes : bool, default False
        Also write the ``wandb_metadata`` and ``system_attrs`` JSON columns next to ``raw_data``.

    Raises
    ------
    DdxrError
        When the database already holds W&B tables.
    """
    rows = _run_rows(runs)
    raw_data = [json.dumps(merged, allow_nan=False) for merged in merged_raw_data(runs)]
    kept = ("wandb_metadata", "system_attrs") if keep_attributes else ()
    run_table = pa.table(
        {
            **{name: rows.column(name) for name in (*RUN_TEXT_COLUMNS, "created_at")},
            "runtime": pa.array(np.zeros(rows.num_rows, np.int32)),
            "raw_data": pa.array(raw_data, pa.string()),
            **{name: rows.column(name) for name in kept},
        }
    )
    engine = parse_url(url).create_engine()
    try:
        with engine.begin() as connection:
            existing = {"wandb_runs", "wandb_history"} & set(sa.inspect(connection).get_table_names())
            if existing:
                raise DdxrError(f"the database already holds {sorted(existing)}; write layout A into an empty one")
            metadata = _layout_a(kept)
            metadata.create_all(connection)
            bulk_insert(connection, metadata.tables["wandb_runs"], run_table, ("raw_data", *kept))
            for start in range(0, len(history), 50_000):
                chunk = _history_rows(history.iloc[start : start + 50_000])
                epoch = pd.to_datetime(chunk.column("timestamp").to_numpy(zero_copy_only=False), unit="s")
                local = pa.array((epoch + DOWNLOADER_UTC_OFFSET).floor("us"), pa.timestamp("us"))
                history_table = pa.table(
                    {
                        "run_id": chunk.column("run_id"),
                        "step": chunk.column("step"),
                        "timestamp": local,
                        "metrics": chunk.column("metrics"),
                    }
                )
                bulk_insert(connection, metadata.tables["wandb_history"], history_table, ("metrics",))
    finally:
        engine.dispose()

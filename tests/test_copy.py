"""PostgreSQL history reads through COPY: exact chunks, early stops and server errors mid-stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ddxr.errors import SourceError
from ddxr.sources.wandb_store import WandBStore


@pytest.fixture
def store(pg_url: str):
    with WandBStore(pg_url) as store:
        store.create_tables()
        run_ids = [f"run-{number}" for number in range(3)]
        store.store_runs(
            pd.DataFrame(
                {"run_id": run_ids, "run_name": run_ids, "state": "finished", "project": "p", "entity": "e"}
            ).assign(created_at="2025-09-01T00:00:00Z")
        )
        steps = np.arange(1, 401)
        store.store_history(
            pd.DataFrame(
                {
                    "run_id": np.repeat(run_ids, steps.size),
                    "step": np.tile(steps, 3),
                    "train_loss": np.tile(1.0 / steps, 3),
                    "note": np.where(np.tile(steps, 3) == 7, np.nan, 0.5),  # absent on some rows
                }
            )
        )
        yield store


def test_chunks_are_exact_and_equal_the_rows(store):
    chunks = list(store.iter_history(None, ["train_loss", "note"], chunk_size=250))
    assert [len(chunk) for chunk in chunks] == [250, 250, 250, 250, 200]
    history = pd.concat(chunks, ignore_index=True)
    assert history["run_id"].tolist() == np.repeat(["run-0", "run-1", "run-2"], 400).tolist()
    np.testing.assert_array_equal(history["train_loss"], np.tile(1.0 / np.arange(1, 401), 3))
    assert history["note"].isna().sum() == 3 and history["step"].dtype == np.int64


def test_stopping_early_leaves_the_store_usable(store):
    chunks = store.iter_history(None, ["train_loss"], chunk_size=10)
    assert len(next(chunks)) == 10
    chunks.close()  # the COPY is cut off mid-stream
    assert len(store.read_history(None, ["train_loss"])) == 1_200


def test_a_server_error_during_the_copy_is_a_source_error(store, pg_url):
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:  # a downloader's text column with one cell that is not JSON
        connection.exec_driver_sql("ALTER TABLE wandb_history ALTER COLUMN metrics TYPE text")
        connection.exec_driver_sql("UPDATE wandb_history SET metrics = '{not json' WHERE step = 399")
    engine.dispose()
    fresh = WandBStore(pg_url)
    with pytest.raises(SourceError, match="failed: invalid input syntax for type json"):
        list(fresh.iter_history(None, ["train_loss"], chunk_size=100))
    fresh.close()

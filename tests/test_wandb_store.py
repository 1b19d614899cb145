"""WandBStore on real PostgreSQL and SQLite: the six real runs in layouts A and B, streaming, errors, redaction."""

from __future__ import annotations

import gc
import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddxr.errors import InvalidArgumentError, SourceError
from ddxr.sources._collector import collector_paused
from ddxr.sources.wandb_store import COERCION_FAILURES, HISTORY_COLUMNS, RUN_JSON_COLUMNS, WandBStore

RUN_1 = "2025_08_18-22_30_05_allenai--DataDecide-dolma1_7-4M_main_default"
RUN_2 = "2025_08_21-08_24_43_test_finetune_DD-dolma1_7-4M_main_1Mtx1_--learning_rate=5e-07"
RUN_3 = "2025_08_27-07_52_26_test_dpo_tune_cache_dd__dolma1_7-4M__main__100Mt_lr=5e-06_default_--learning_rate=2e-07"
RUN_5 = "250901-155734_test_finetune_DD-dclm-baseline-150M_Ft_learning_rate=5e-05"
RUN_6 = "250912-172812_match_150M_c4_finetune_100Mtx1_DD-d17-530M-6250-2"
SAMPLE_KEYS = ["total_tokens", "train_loss", "learning_rate"]
PASSWORD = "Sup3r-S3cret-pw"


def _engine(url: str) -> sa.Engine:
    """Return a plain SQLAlchemy engine on a test URL (psycopg 3, SQLAlchemy's default driver, is not installed)."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


@pytest.fixture(scope="module")
def module_pg_url(make_pg_url: Callable[[], str]) -> str:
    """One PostgreSQL database for this module: creating and dropping one per test costs ≈3 s each."""
    return make_pg_url()


def _emptied(url: str) -> str:
    engine = _engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS wandb_history"))
        connection.execute(sa.text("DROP TABLE IF EXISTS wandb_runs"))
    engine.dispose()
    return url


@pytest.fixture
def pg_url(module_pg_url: str) -> str:
    """Return the module's PostgreSQL database, without W&B tables (overrides conftest's database-per-test fixture)."""
    return _emptied(module_pg_url)


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Return an empty store, on PostgreSQL and on SQLite (overrides conftest's, to use :func:`pg_url` above)."""
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")


@pytest.fixture(scope="module")
def sample_runs(real_samples: Path) -> pd.DataFrame:
    runs = pd.read_parquet(real_samples / "wandb_runs_sample.parquet")
    for column in RUN_JSON_COLUMNS:
        runs[column] = runs[column].map(json.loads)
    return runs


@pytest.fixture(scope="module")
def sample_history(real_samples: Path) -> pd.DataFrame:
    return pd.read_parquet(real_samples / "wandb_history_sample.parquet")


@pytest.fixture
def real_store(store_url: str, sample_runs: pd.DataFrame, sample_history: pd.DataFrame) -> Iterator[WandBStore]:
    """Return the six real runs and their history in layout B, on PostgreSQL and on SQLite."""
    with WandBStore(store_url) as store:
        store.create_tables()
        assert store.store_runs(sample_runs) == 6
        assert store.store_history(sample_history) == 2_549
        yield store


def _write_layout_a(url: str, runs: pd.DataFrame, history: pd.DataFrame) -> None:
    """Layout A as the older downloader wrote it: one merged raw_data dict, runtime 0, naive history times."""
    postgres = url.startswith("postgresql")
    json_type, id_type = ("JSONB", "SERIAL") if postgres else ("JSON", "INTEGER")
    raw_data = [
        json.dumps({**config, **summary, "wandb_tags": ",".join(attrs["tags"])})
        for config, summary, attrs in zip(runs["config"], runs["summary"], runs["system_attrs"], strict=True)
    ]
    run_rows = runs[["run_id", "run_name", "state", "project", "entity"]].assign(
        created_at=pd.to_datetime(runs["created_at"]).dt.strftime("%Y-%m-%d %H:%M:%S"), raw_data=raw_data
    )
    metrics = history[SAMPLE_KEYS].to_dict("records")
    history_rows = history[["run_id", "step"]].assign(
        timestamp=pd.to_datetime(history["timestamp"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
        metrics=[json.dumps({key: value for key, value in row.items() if not math.isnan(value)}) for row in metrics],
    )
    engine = _engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE wandb_runs (run_id TEXT PRIMARY KEY, run_name TEXT, state TEXT, project TEXT, "
                f"entity TEXT, created_at TIMESTAMP, runtime INTEGER, raw_data {json_type})"
            )
        )
        connection.execute(
            sa.text(
                f"CREATE TABLE wandb_history (id {id_type} PRIMARY KEY, run_id TEXT, step INTEGER, "
                f"timestamp TIMESTAMP, metrics {json_type})"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO wandb_runs VALUES (:run_id, :run_name, :state, :project, :entity, :created_at, 0, "
                ":raw_data)"
            ),
            run_rows.to_dict("records"),
        )
        connection.execute(
            sa.text(
                "INSERT INTO wandb_history (run_id, step, timestamp, metrics) VALUES (:run_id, :step, :timestamp, "
                ":metrics)"
            ),
            history_rows.to_dict("records"),
        )
    engine.dispose()


@pytest.fixture
def layout_a_store(store_url: str, sample_runs: pd.DataFrame, sample_history: pd.DataFrame) -> Iterator[WandBStore]:
    _write_layout_a(store_url, sample_runs, sample_history)
    with WandBStore(store_url) as store:
        yield store


def _by_run(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("run_id")


# --------------------------------------------------------------------------------------------- layout B, real runs


def test_read_runs_returns_the_real_runs(real_store: WandBStore) -> None:
    runs = _by_run(real_store.read_runs())
    assert real_store.layout == "B"
    assert list(runs.columns) == [
        "run_name",
        "state",
        "project",
        "entity",
        "created_at",
        "layout",
        "config",
        "summary",
        "wandb_metadata",
        "system_attrs",
        "tags",
        "history_line_count",
    ]
    assert len(runs) == 6 and set(runs["layout"]) == {"B"}
    assert str(runs["created_at"].dtype) == "datetime64[ns, UTC]"
    assert runs.loc[RUN_1, "created_at"] == pd.Timestamp("2025-08-19T05:36:01Z")
    assert runs.loc[RUN_1, "state"] == "crashed"
    assert runs.loc[RUN_1, "tags"] == ["finetune", "hidden"]  # system_attrs, not config's launch-time "finetune"
    assert runs.loc[RUN_1, "history_line_count"] == 141
    assert runs.loc[RUN_1, "config"]["learning_rate"] == 1e-4
    assert runs.loc[RUN_1, "summary"]["learning_rate"] == 3.5374e-06
    assert runs.loc[RUN_2, "history_line_count"] == 0
    assert sum(key.startswith("oe_eval_metrics/") for key in runs.loc[RUN_2, "summary"]) == 368
    assert "learning_rate" not in runs.loc[RUN_5, "config"]
    assert runs.loc[RUN_5, "tags"] == ["150M", "dclm-dolma", "dolma-qc", "finetune"]
    assert runs.loc[RUN_6, "config"]["model_size"] == "530100000"  # strings stay strings
    assert runs.loc[RUN_6, "wandb_metadata"]["gpu_count"] == 2


@pytest.mark.parametrize("layout", ["B", "A"])
@pytest.mark.parametrize(
    "json_columns", [(), ("summary",), ("wandb_metadata",), ("config", "wandb_metadata", "system_attrs")]
)
def test_read_runs_decodes_only_the_json_columns_asked_for(
    store_url: str, sample_runs: pd.DataFrame, sample_history: pd.DataFrame, layout: str, json_columns: tuple
) -> None:
    """The frame holds exactly the JSON columns asked for, equal to the full read's; tags and line counts are kept."""
    if layout == "A":
        _write_layout_a(store_url, sample_runs, sample_history)
    with WandBStore(store_url) as store:
        if layout == "B":
            store.create_tables()
            store.store_runs(sample_runs)
        full = store.read_runs()
        some = store.read_runs(json_columns=json_columns)
    dropped = [name for name in ("config", "summary", "wandb_metadata", "system_attrs") if name not in json_columns]
    pd.testing.assert_frame_equal(some, full.drop(columns=dropped))
    assert _by_run(some).loc[RUN_1, "tags"] == ["finetune", "hidden"]


def test_read_runs_refuses_an_unknown_json_column(real_store: WandBStore) -> None:
    with pytest.raises(InvalidArgumentError, match=r"json_columns \['raw_data'\].*choose from"):
        real_store.read_runs(json_columns=["config", "raw_data"])


def test_history_round_trips_the_real_rows(real_store: WandBStore, sample_history: pd.DataFrame) -> None:
    history = real_store.read_history(None, SAMPLE_KEYS)
    expected = sample_history.sort_values(["run_id", "step"], ignore_index=True)
    assert list(history.columns) == [*HISTORY_COLUMNS, *SAMPLE_KEYS]
    pd.testing.assert_frame_equal(history, expected[history.columns.tolist()], check_dtype=False)
    assert history.dtypes.drop("run_id").tolist() == ["int64"] + ["float64"] * 5
    counts = history.groupby("run_id").size()
    assert counts[RUN_1] == 141 and counts[RUN_3] == 2_106 and counts[RUN_6] == 10 and RUN_2 not in counts
    run_6 = history[history["run_id"] == RUN_6]
    assert run_6["total_tokens"].iloc[-1] == 91_330_008
    assert history.loc[history["run_id"] == RUN_3, "total_tokens"].isna().all()  # DPO logs no token counter
    assert history.attrs[COERCION_FAILURES] == dict.fromkeys(SAMPLE_KEYS, 0)


def test_read_history_of_selected_runs_and_keys(real_store: WandBStore) -> None:
    history = real_store.read_history([RUN_6, RUN_2, "no-such-run"], ["train_loss"])
    assert list(history.columns) == [*HISTORY_COLUMNS, "train_loss"]
    assert set(history["run_id"]) == {RUN_6} and history["step"].tolist() == list(range(100, 1_001, 100))
    empty = real_store.read_history([RUN_2], ["train_loss", "rewards/accuracy"])
    assert empty.empty and list(empty.columns) == [*HISTORY_COLUMNS, "train_loss", "rewards/accuracy"]
    assert empty["step"].dtype == "int64" and empty["rewards/accuracy"].dtype == "float64"
    assert real_store.read_history([], ["train_loss"]).empty


def test_iter_history_streams_bounded_ordered_chunks(real_store: WandBStore) -> None:
    chunks = list(real_store.iter_history(None, ["train_loss"], chunk_size=100))
    assert len(chunks) == math.ceil(2_549 / 100)
    assert all(len(chunk) == 100 for chunk in chunks[:-1]) and len(chunks[-1]) == 49
    assert all(list(chunk.columns) == [*HISTORY_COLUMNS, "train_loss"] for chunk in chunks)
    streamed = pd.concat(chunks, ignore_index=True)
    assert streamed[["run_id", "step"]].equals(streamed.sort_values(["run_id", "step"])[["run_id", "step"]])
    pd.testing.assert_frame_equal(streamed, real_store.read_history(None, ["train_loss"]))


def test_read_run_entries_extracts_prefixed_keys_as_json_text(real_store: WandBStore) -> None:
    entries = real_store.read_run_entries("summary", "oe_eval_metrics/")
    assert list(entries.columns) == ["run_id", "key", "value"]
    assert entries["key"].str.startswith("oe_eval_metrics/").all()
    assert entries.groupby("run_id").size().to_dict() == {run: 368 for run in entries["run_id"].unique()}
    assert entries["run_id"].nunique() == 4  # runs 2, 4, 5, 6 have evals
    values = entries.set_index(["run_id", "key"])["value"]
    arc = json.loads(values[(RUN_6, "oe_eval_metrics/arc_challenge")])
    assert arc["primary_score"] == 0.2721843003 and arc["num_instances"] == 1172
    assert values[(RUN_6, "oe_eval_metrics/arc_challenge/acc_raw")] == "0.2167235495"
    core = json.loads(values[(RUN_2, "oe_eval_metrics/core_9mcqa:rc::olmes:full")])
    assert core["primary_score"] == 0.367625448
    args = real_store.read_run_entries("wandb_metadata", "args")
    assert len(args) == 6 and isinstance(json.loads(args["value"].iloc[0]), list)


def test_read_run_entries_prefix_is_literal_and_case_sensitive(store_url: str) -> None:
    summary = {
        'oe_eval_metrics/q"uote': {"primary_score": 0.30000000000000004},  # SQLite paths cannot name this key
        "oe_eval_metrics/a": 1,
        "oeXevalXmetrics/b": 2,  # '_' would match any character in a LIKE pattern
        "OE_EVAL_METRICS/c": 3,  # SQLite's LIKE ignores ASCII case
        "oe_eval_metrics": 4,
        "x%/d": 5,
    }
    with WandBStore(store_url) as store:
        store.create_tables()
        store.store_runs(_runs_frame("r", summary=summary))
        entries = store.read_run_entries("summary", "oe_eval_metrics/")
        assert entries["key"].tolist() == ["oe_eval_metrics/a", 'oe_eval_metrics/q"uote']
        assert json.loads(entries["value"].iloc[1]) == {"primary_score": 0.30000000000000004}
        assert store.read_run_entries("summary", "x%/")["value"].tolist() == ["5"]
        assert len(store.read_run_entries("summary", "")) == 6
        with pytest.raises(SourceError, match=r"read_run_entries reads one of .*'summary'.* not 'metrics'"):
            store.read_run_entries("metrics", "x")


def test_read_run_entries_are_ordered_by_run_then_key(store_url: str) -> None:
    # JSONB keeps keys by length, then bytes: the server must still sort each run's entries by key
    keys = ["oe_eval_metrics/piqa/acc_raw", "oe_eval_metrics/b", "oe_eval_metrics/arc_easy", "oe_eval_metrics/a/x"]
    with WandBStore(store_url) as store:
        store.create_tables()
        for run_id in ("r2", "r10", "r1"):
            store.store_runs(_runs_frame(run_id, summary={key: position for position, key in enumerate(keys)}))
        entries = store.read_run_entries("summary", "oe_eval_metrics/")
    expected = sorted((run_id, key) for run_id in ("r1", "r10", "r2") for key in keys)
    assert list(zip(entries["run_id"], entries["key"], strict=True)) == expected
    assert entries.loc[entries["key"] == "oe_eval_metrics/b", "value"].tolist() == ["1", "1", "1"]


def test_collector_paused_restores_the_collector_state() -> None:
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        assert not gc.isenabled()
        raise KeyError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_store_runs_replaces_existing_runs(real_store: WandBStore, sample_runs: pd.DataFrame) -> None:
    rerun = sample_runs[sample_runs["run_id"] == RUN_1].assign(state="finished")
    before = real_store.stats()
    assert real_store.store_runs(rerun) == 1
    runs = _by_run(real_store.read_runs())
    assert len(runs) == 6 and runs.loc[RUN_1, "state"] == "finished"
    after = real_store.stats()
    assert after["wandb_runs"]["rows"] == 6
    assert after["wandb_runs"]["content_digest"] != before["wandb_runs"]["content_digest"]


def test_store_history_replaces_a_runs_history_only(real_store: WandBStore, sample_history: pd.DataFrame) -> None:
    shorter = sample_history[sample_history["run_id"] == RUN_6].head(3)
    assert real_store.store_history(shorter) == 3
    counts = real_store.read_history(None, []).groupby("run_id").size()
    assert counts[RUN_6] == 3 and counts[RUN_3] == 2_106 and counts.sum() == 2_549 - 7


def test_stats_track_rows_and_latest_values(real_store: WandBStore, sample_history: pd.DataFrame) -> None:
    real_store.create_tables()  # idempotent: the rows stay
    stats = real_store.stats()
    json.dumps(stats)  # fingerprint material must serialize
    assert stats["layout"] == "B" and stats["url"] == real_store.url_redacted
    assert stats["wandb_runs"]["rows"] == 6
    assert pd.Timestamp(stats["wandb_runs"]["latest_created_at"]) == pd.Timestamp("2025-09-13 00:30:23")
    assert stats["wandb_history"]["rows"] == 2_549 and stats["wandb_history"]["max_id"] == 2_549
    assert stats["wandb_history"]["latest_timestamp"] == sample_history["timestamp"].max()
    real_store.store_history(sample_history[sample_history["run_id"] == RUN_6])
    moved = real_store.stats()["wandb_history"]
    assert moved["rows"] == 2_549 and moved["max_id"] == 2_549 + 10


def test_content_state_is_the_run_states_and_history_totals(
    real_store: WandBStore, sample_history: pd.DataFrame
) -> None:
    states, totals = real_store.content_state()
    assert totals == real_store.history_totals() == (2_549, 2_549)
    assert states.equals(real_store.run_states()) and len(states) == 6
    real_store.store_history(sample_history[sample_history["run_id"] == RUN_6])  # replaced: 10 new ids
    assert real_store.content_state()[1] == (2_549, 2_549 + 10)


def test_a_store_of_runs_alone_has_no_history_totals(store_url: str, sample_runs: pd.DataFrame) -> None:
    with WandBStore(store_url) as writer:
        writer.create_tables()
        writer.store_runs(sample_runs)
    engine = _engine(store_url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE wandb_history"))
    engine.dispose()
    with WandBStore(store_url) as store:
        states, totals = store.content_state()
    assert totals == (0, 0) and sorted(states["run_id"]) == sorted(sample_runs["run_id"])


def test_coerced_metric_values_are_counted(store_url: str) -> None:
    with WandBStore(store_url) as store:
        store.create_tables()
        values = ['"NaN"', '"abc"', "1.5", '{"a": 1}', '"2.5"', "null"]
        engine = _engine(store_url)
        with engine.begin() as connection:  # store_history refuses such values; real downloads hold them
            connection.execute(
                sa.text("INSERT INTO wandb_history (run_id, step, metrics) VALUES ('r', :step, :metrics)"),
                [{"step": step, "metrics": f'{{"x/y": {value}}}'} for step, value in enumerate(values)],
            )
        engine.dispose()
        history = store.read_history(["r"], ["x/y"])
        np.testing.assert_array_equal(history["x/y"], [np.nan, np.nan, 1.5, np.nan, 2.5, np.nan])
        assert history.attrs[COERCION_FAILURES] == {"x/y": 2}  # "abc" and the object; not "NaN" nor null
        chunks = list(store.iter_history(["r"], ["x/y"], chunk_size=2))
        assert [chunk.attrs[COERCION_FAILURES]["x/y"] for chunk in chunks] == [1, 1, 0]


def test_store_history_writes_in_chunks_atomically(store_url: str) -> None:
    history = pd.DataFrame(
        {"run_id": ["a", "a", "a", "b", "b"], "step": [1, 2, 3, 1, 2], "loss": [0.5, np.nan, 0.25, 1.0, 2.0]}
    )
    with WandBStore(store_url, chunk_size=2) as store:
        store.create_tables()
        assert store.store_history(history) == 5
        stored = store.read_history(None, ["loss"])
        pd.testing.assert_frame_equal(stored[["run_id", "step", "loss"]], history)
        with pytest.raises(SourceError, match="step must be an integer"):
            store.store_history(history.assign(step=[1, 2, 3, 1, 2.5]))  # fails in the third chunk
        pd.testing.assert_frame_equal(store.read_history(None, ["loss"]), stored)  # deletes and chunks rolled back


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.tuples(st.sampled_from("cab"), st.integers(1, 4)), min_size=1, max_size=8))
def test_store_history_writes_runs_in_run_id_order(
    history_store: tuple[WandBStore, sa.Engine], blocks: list[tuple[str, int]]
) -> None:
    """Rows are inserted run by run in run_id order (the index grows at its edge), each run's rows as given.

    Blocks of a run may be interleaved with other runs and repeat steps: read back by id, the rows are the input
    stably sorted by run_id.
    """
    store, engine = history_store
    prefix = f"order-{next(_RUN_IDS)}-"  # examples share the store
    history = pd.DataFrame(
        [(prefix + run, step % 3) for run, rows in blocks for step in range(rows)], columns=["run_id", "step"]
    )
    history["value"] = np.arange(len(history), dtype="float64")
    store.chunk_size = 3  # runs cross chunks
    store.store_history(history)
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT run_id, step, metrics FROM wandb_history WHERE run_id LIKE :prefix ORDER BY id"),
            {"prefix": prefix + "%"},
        ).all()
    expected = history.sort_values("run_id", kind="stable")
    assert [row[0] for row in stored] == expected["run_id"].tolist()
    assert [row[1] for row in stored] == expected["step"].tolist()
    assert [_as_float((json.loads(row[2]) if isinstance(row[2], str) else row[2])["value"]) for row in stored] == (
        expected["value"].tolist()
    )


def test_ten_thousand_run_ids(store_url: str) -> None:
    run_ids = [f"run-{i:05d}" for i in range(10_000)]
    history = pd.DataFrame({"run_id": run_ids, "step": 1, "train_loss": np.arange(10_000) / 8})
    with WandBStore(store_url) as store:
        store.create_tables()
        assert store.store_history(history) == 10_000
        assert store.store_history(history) == 10_000  # the replace deletes 10,000 ids at once
        wanted = [*run_ids[::2], *(f"missing-{i}" for i in range(100))]
        read = store.read_history(wanted, ["train_loss"])
        assert read["run_id"].tolist() == run_ids[::2]
        np.testing.assert_array_equal(read["train_loss"], np.arange(0, 10_000, 2) / 8)


def test_history_timestamps_from_datetimes_and_missing_columns(store_url: str) -> None:
    history = pd.DataFrame(
        {
            "run_id": ["r", "r"],
            "step": [2.0, 1.0],  # integral floats are steps; order comes from the store
            "timestamp": pd.to_datetime(["2025-08-19 05:39:25.27", "2025-08-19 05:39:20"], format="ISO8601"),  # UTC
            "flag": [True, False],
        }
    )
    with WandBStore(store_url) as store:
        store.create_tables()
        store.store_history(history)
        read = store.read_history(["r"], ["flag"])
    assert read["step"].tolist() == [1, 2]
    assert read["timestamp"].tolist() == [1_755_581_960.0, 1_755_581_965.27]
    assert read["runtime"].isna().all() and read["flag"].tolist() == [0.0, 1.0]


def test_empty_frames_write_nothing(store_url: str, sample_runs: pd.DataFrame) -> None:
    with WandBStore(store_url) as store:
        store.create_tables()
        assert store.store_runs(sample_runs.iloc[:0]) == 0
        assert store.store_history(pd.DataFrame({"run_id": [], "step": [], "loss": []})) == 0
        stats = store.stats()
    assert stats["wandb_runs"]["rows"] == 0 and stats["wandb_history"]["rows"] == 0


def test_zoned_history_timestamps_read_as_epoch_seconds(pg_url: str) -> None:
    engine = _engine(pg_url)
    with engine.begin() as connection:  # a layout-B store whose downloader kept _timestamp as timestamptz
        connection.execute(sa.text("CREATE TABLE wandb_runs (run_id TEXT PRIMARY KEY, config JSONB)"))
        connection.execute(
            sa.text(
                "CREATE TABLE wandb_history (id SERIAL PRIMARY KEY, run_id TEXT, step INTEGER, "
                "timestamp TIMESTAMPTZ, metrics JSONB)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO wandb_history (run_id, step, timestamp, metrics) VALUES "
                "('r', 1, '2025-08-19 07:39:25.27+02', '{\"loss\": 1}')"
            )
        )
    engine.dispose()
    with WandBStore(pg_url) as store:
        history = store.read_history(None, ["loss"])
        with pytest.raises(SourceError, match=r"wandb_runs in .* lacks columns \['run_name', 'state', 'project'"):
            store.read_runs()
    assert history["timestamp"].tolist() == [1_755_581_965.27] and history["loss"].tolist() == [1.0]


def test_tags_fall_back_to_config_wandb_tags(store_url: str) -> None:
    frame = pd.concat(
        [
            _runs_frame("from-config", config={"wandb_tags": "finetune, dclm-dolma"}),
            _runs_frame("from-attrs", config={"wandb_tags": "launch"}, system_attrs={"tags": []}),
            _runs_frame("none"),
        ],
        ignore_index=True,
    )
    with WandBStore(store_url) as store:
        store.create_tables()
        store.store_runs(frame)
        runs = _by_run(store.read_runs())
    assert runs.loc["from-config", "tags"] == ["finetune", "dclm-dolma"]
    assert runs.loc["from-attrs", "tags"] == []  # tags edited after launch win, even when emptied
    assert runs.loc["none", "tags"] == [] and runs["history_line_count"].isna().all()
    assert runs.loc["none", "config"] == {} and runs.loc["none", "summary"] == {}


def test_non_finite_run_values_are_stored_as_strings(store_url: str) -> None:
    summary = {"loss": math.nan, "nested": {"up": math.inf, "down": [-math.inf, 1.0]}, "n": np.int64(3)}
    with WandBStore(store_url) as store:
        store.create_tables()
        store.store_runs(_runs_frame("r", summary=summary))
        stored = store.read_runs()["summary"].iloc[0]
    assert stored == {"loss": "NaN", "nested": {"up": "Infinity", "down": ["-Infinity", 1.0]}, "n": 3}


def _runs_frame(run_id: str, **json_columns: dict) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": [run_id],
            "run_name": [run_id],
            "state": ["finished"],
            "project": ["ft-scaling"],
            "entity": ["ml-moe"],
            "created_at": ["2025-09-01T00:00:00Z"],
            **{name: [value] for name, value in json_columns.items()},
        }
    )


# ------------------------------------------------------------------------------------------------------- layout A


def test_layout_a_reads_like_layout_b(layout_a_store: WandBStore, sample_history: pd.DataFrame) -> None:
    store = layout_a_store
    assert store.layout == "A"
    runs = _by_run(store.read_runs())
    assert len(runs) == 6 and set(runs["layout"]) == {"A"}
    assert runs.loc[RUN_1, "created_at"] == pd.Timestamp("2025-08-19T05:36:01Z")
    assert runs.loc[RUN_1, "tags"] == ["finetune", "hidden"]  # raw_data.wandb_tags split on ','
    assert runs.loc[RUN_5, "tags"] == ["150M", "dclm-dolma", "dolma-qc", "finetune"]
    assert runs.loc[RUN_1, "config"] == runs.loc[RUN_1, "summary"]
    assert runs.loc[RUN_1, "config"]["learning_rate"] == 3.5374e-06  # the summary wrote over the config
    assert runs.loc[RUN_1, "wandb_metadata"] == {} and runs["history_line_count"].isna().all()

    history = store.read_history(None, SAMPLE_KEYS)
    expected = sample_history.sort_values(["run_id", "step"], ignore_index=True)
    pd.testing.assert_frame_equal(history[["run_id", "step", *SAMPLE_KEYS]], expected[["run_id", "step", *SAMPLE_KEYS]])
    assert history["runtime"].isna().all()  # layout A has no runtime column
    assert history["timestamp"].dtype == "datetime64[ns]"  # naive local time, returned as stored
    assert history["timestamp"].iloc[0] == pd.to_datetime(expected["timestamp"].iloc[0], unit="s").floor("us")

    entries = store.read_run_entries("summary", "oe_eval_metrics/")
    assert len(entries) == 4 * 368
    assert entries.equals(store.read_run_entries("config", "oe_eval_metrics/"))
    assert store.read_run_entries("system_attrs", "").empty
    stats = store.stats()
    assert stats["layout"] == "A" and stats["wandb_history"]["rows"] == 2_549


def test_layout_a_store_refuses_writes(layout_a_store: WandBStore, sample_runs: pd.DataFrame) -> None:
    with pytest.raises(SourceError, match="holds layout-A W&B tables; ddxr writes layout B only"):
        layout_a_store.store_runs(sample_runs)
    with pytest.raises(SourceError, match="holds layout-A W&B tables"):
        layout_a_store.create_tables()


# ------------------------------------------------------------------------------------------ metric dict round trip

_KEY = st.one_of(
    st.sampled_from(["rewards/accuracy", "logps/chosen", "a.b", "x-y", "with space", 'q"uote', "back\\slash", "é/ü"]),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=12),
).filter(lambda key: key not in HISTORY_COLUMNS)
_VALUE = st.one_of(st.floats(allow_nan=False), st.integers(-(10**21), 10**21).map(float))
_RUN_IDS = itertools.count()


@pytest.fixture
def history_store(store_url: str) -> Iterator[tuple[WandBStore, sa.Engine]]:
    """Return an empty layout-B store and a plain engine on it, shared by the examples of a hypothesis test."""
    engine = _engine(store_url)
    with WandBStore(store_url) as store:
        store.create_tables()
        yield store, engine
    engine.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.dictionaries(_KEY, _VALUE, max_size=6), min_size=1, max_size=5))
def test_metric_dicts_round_trip(history_store: tuple[WandBStore, sa.Engine], rows: list[dict[str, float]]) -> None:
    store, engine = history_store
    run_id = f"run-{next(_RUN_IDS)}"  # examples share the store: a fresh run each
    history = pd.DataFrame(rows, dtype="float64").assign(run_id=run_id, step=range(len(rows)))
    keys = [key for key in history.columns if key not in HISTORY_COLUMNS]
    store.store_history(history)
    read = store.read_history([run_id], keys)
    np.testing.assert_array_equal(read[keys].to_numpy(), history[keys].to_numpy())
    assert read.attrs[COERCION_FAILURES] == dict.fromkeys(keys, 0)
    stored = _stored_metrics(engine, run_id)  # NaN keys are omitted, not stored as null
    assert [{key: _as_float(value) for key, value in row.items()} for row in stored] == rows


def _stored_metrics(engine: sa.Engine, run_id: str) -> list[dict]:
    with engine.connect() as connection:
        cells = connection.execute(
            sa.text("SELECT metrics FROM wandb_history WHERE run_id = :run_id ORDER BY step"), {"run_id": run_id}
        ).scalars()
        return [json.loads(cell) if isinstance(cell, str) else cell for cell in cells]


def _as_float(value: object) -> float:
    return float({"Infinity": math.inf, "-Infinity": -math.inf}.get(value, value))


# ------------------------------------------------------------------------------------------------- errors, secrets


def _chain_text(error: BaseException) -> str:
    return " ".join(f"{link!s} {link!r}" for link in (error, error.__cause__, error.__context__))


def test_unreachable_server_message_hides_the_password() -> None:
    with pytest.raises(SourceError, match=r"is PostgreSQL running\? check the URL") as caught:
        WandBStore(f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/wandb")
    assert "postgresql://postgres:***@127.0.0.1:1/wandb" in str(caught.value)
    assert PASSWORD not in _chain_text(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # raised `from None`


def test_unknown_database_message(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0].replace("postgres@", f"postgres:{PASSWORD}@") + "/ddxr_no_such_db"
    with pytest.raises(SourceError, match=r'database "ddxr_no_such_db" does not exist.*check the URL') as caught:
        WandBStore(url + f"?password={PASSWORD}")  # libpq also reads the password from the query string
    assert "ddxr_no_such_db?password=***" in str(caught.value)
    assert PASSWORD not in _chain_text(caught.value)


def test_url_schemes(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://"), pg_url.replace("://", "+psycopg2://")):
        with WandBStore(url) as store:
            store.create_tables()
            assert store.layout == "B"
    with pytest.raises(
        SourceError, match=r"unsupported database URL scheme 'mysql' in mysql://u:\*\*\*@h/db"
    ) as caught:
        WandBStore(f"mysql://u:{PASSWORD}@h/db")
    assert PASSWORD not in _chain_text(caught.value)
    with pytest.raises(SourceError, match="cannot parse the W&B store URL"):
        WandBStore(f"not a url {PASSWORD}")
    with pytest.raises(SourceError, match="cannot open the SQLite W&B store .* check the path"):
        WandBStore(f"sqlite:///{tmp_path}/no/such/folder/runs.db")
    store = WandBStore(f"sqlite:///{tmp_path}/runs.db")
    assert repr(store) == f"WandBStore('sqlite:///{tmp_path}/runs.db')"


def test_redacted_url_and_repr_hide_the_password(pg_url: str) -> None:
    url = pg_url.replace("postgres@", f"postgres:{PASSWORD}@")  # trust auth ignores the password
    with WandBStore(url) as store:
        assert "postgres:***@" in store.url_redacted and PASSWORD not in repr(store)
        with pytest.raises(SourceError, match="no wandb_runs table") as caught:
            store.read_runs()
        assert PASSWORD not in _chain_text(caught.value)
        store.create_tables()
        assert PASSWORD not in json.dumps(store.stats())


def test_missing_tables_message(store_url: str) -> None:
    with WandBStore(store_url) as store:
        message = r"no wandb_runs table in .*; create it with WandBStore.create_tables\(\) or point to a W&B store"
        with pytest.raises(SourceError, match=message):
            _ = store.layout
        with pytest.raises(SourceError, match=message):
            store.store_history(pd.DataFrame({"run_id": ["r"], "step": [1]}))


def test_unknown_layout_message(store_url: str) -> None:
    engine = _engine(store_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE wandb_runs (run_id TEXT, payload TEXT)"))
    engine.dispose()
    with WandBStore(store_url) as store:
        with pytest.raises(SourceError, match=r"columns \['payload', 'run_id'\]; expected layout A .* or layout B"):
            _ = store.layout


def test_malformed_run_json_names_the_run(store_url: str) -> None:
    with WandBStore(store_url) as store:
        store.create_tables()
        store.store_runs(_runs_frame("fine"))
        engine = _engine(store_url)
        with engine.begin() as connection:  # a downloader that wrote a list where W&B has an object
            connection.execute(sa.text("UPDATE wandb_runs SET summary = '[1, 2]'"))
        engine.dispose()
        with pytest.raises(
            SourceError,
            match=r"wandb_runs.summary of run 'fine' is not a JSON object \(a JSON list, not an object; 1 runs\)",
        ):
            store.read_runs()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda runs: runs.drop(columns="state"), r"missing columns \['state'\]"),
        (lambda runs: runs.assign(tags="x"), r"unknown columns \['tags'\].*system_attrs\['tags'\]"),
        (lambda runs: pd.concat([runs, runs]), r"run_id must be unique, found duplicates \['r'\]"),
        (lambda runs: runs.assign(run_id=[None]), "1 rows have no run_id"),
        (lambda runs: runs.assign(config=['{"a": 1}']), "'config' of run 'r' holds a str, expected a dict"),
        (lambda runs: runs.assign(created_at=["yesterday"]), "'created_at' must hold datetimes or ISO text"),
        (lambda runs: runs.assign(summary=[{"when": object()}]), "'summary' holds a value JSON cannot encode"),
    ],
)
def test_store_runs_rejects_bad_frames(sqlite_url: str, change, message: str) -> None:
    with WandBStore(sqlite_url) as store:
        store.create_tables()
        with pytest.raises(SourceError, match=message):
            store.store_runs(change(_runs_frame("r")))
        assert store.read_runs().empty  # nothing half-written


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (pd.DataFrame({"run_id": ["r"], "loss": [1.0]}), r"expected columns run_id, step"),
        (pd.DataFrame({"run_id": ["r"], "step": [1], 7: [1.0]}), r"bad names \[7\]"),
        (pd.DataFrame({"run_id": ["r"], "step": [1], "a\x00b": [1.0]}), r"bad names \['a\\x00b'\]"),
        (pd.DataFrame({"run_id": ["r"], "step": [1.5]}), r"step must be an integer.*run 'r' has 1.5"),
        (pd.DataFrame({"run_id": [""], "step": [1]}), "1 rows have no run_id"),
        (
            pd.DataFrame({"run_id": ["r"], "step": [1], "note": ["fine"]}),
            r"column 'note' must be numeric, found 'fine'",
        ),
    ],
)
def test_store_history_rejects_bad_frames(sqlite_url: str, history: pd.DataFrame, message: str) -> None:
    with WandBStore(sqlite_url) as store:
        store.create_tables()
        with pytest.raises(SourceError, match=message):
            store.store_history(history)


def test_history_argument_errors(sqlite_url: str) -> None:
    with WandBStore(sqlite_url) as store:
        store.create_tables()
        with pytest.raises(InvalidArgumentError, match="run_ids must be a sequence of run ids, not the string 'r'"):
            store.read_history("r", ["x"])
        with pytest.raises(InvalidArgumentError, match=r"history keys must be non-empty strings .* found \['step'\]"):
            store.iter_history(None, ["step"])  # raised at the call, not at the first next()
        with pytest.raises(InvalidArgumentError, match="chunk_size must be a positive integer, got 0"):
            store.iter_history(None, ["x"], chunk_size=0)


def test_history_of_runs_missing_from_the_runs_table_is_counted(sqlite_url):
    store = WandBStore(sqlite_url)
    store.create_tables()
    store.store_runs(
        pd.DataFrame(
            {
                "run_id": ["kept"],
                "run_name": ["kept"],
                "state": ["finished"],
                "project": ["p"],
                "entity": ["e"],
                "created_at": ["2025-08-19T05:36:01Z"],
            }
        )
    )
    history = pd.DataFrame({"run_id": ["kept", "ghost", "ghost"], "step": [1, 1, 2], "train_loss": [1.0, 2.0, 3.0]})
    store.store_history(history)
    assert store.orphan_history_rows() == {"ghost": 2}

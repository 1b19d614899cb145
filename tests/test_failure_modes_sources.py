"""Failure modes of the data layer (issue 10): every class of bad source input gets a ddxr error naming where it is
and what to do, or a counted skip in the build report — never a lost run, a leaked secret or a bare traceback."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg2
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from ddxr.cli import main
from ddxr.errors import SourceError
from ddxr.facade import DataDecideNext
from ddxr.managers.progression import repair_token_restarts
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic import generate


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """One size, one recipe: five budgeted SFT runs of 54 history rows, two short SFT runs and a DPO run."""
    root = tmp_path_factory.mktemp("failure_sources")
    truth = generate(root, params=("4M",), data=("Dolma1.7",), n_runs=8, messy=False)
    return root, truth.runs


def _copy(sources: tuple[Path, pd.DataFrame], tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    root = tmp_path / "sources"
    shutil.copytree(sources[0], root)
    return root, sqlite3.connect(root / "wandb.db")


def _long_sft_run(runs: pd.DataFrame) -> str:
    return runs.loc[runs["run_id"].str.contains("500Mtx1"), "run_id"].iloc[0]


# ----------------------------------------------------------------------------------------------- history rows


_NOT_A_NUMBER = "total_tokens missing or not a number"
_NOT_FINITE = "total_tokens is not finite"


def test_history_rows_without_numeric_tokens_are_counted_skips(small_sources, tmp_path):
    root, store = _copy(small_sources, tmp_path)
    runs = small_sources[1]
    long_runs = runs.loc[runs["run_id"].str.contains("500Mtx1"), "run_id"].tolist()[:4]
    bad = {  # run -> the two rows (steps 1000, 2000) it spoils; the last run's counter is Infinity on every row
        long_runs[0]: ("json_remove(metrics, '$.total_tokens')", "json_set(metrics, '$.total_tokens', json('[1]'))"),
        long_runs[1]: ("json_set(metrics, '$.total_tokens', 'lots')", "json_set(metrics, '$.total_tokens', 'NaN')"),
        long_runs[2]: tuple(f"json_set(metrics, '$.total_tokens', '{text}')" for text in ("Infinity", "-Infinity")),
    }
    with store:
        for run_id, (first, second) in bad.items():
            store.execute(f"UPDATE wandb_history SET metrics = {first} WHERE run_id = ? AND step = 1000", [run_id])
            store.execute(f"UPDATE wandb_history SET metrics = {second} WHERE run_id = ? AND step = 2000", [run_id])
        store.execute(
            "UPDATE wandb_history SET metrics = json_set(metrics, '$.total_tokens', 'Infinity') WHERE run_id = ?",
            [long_runs[3]],
        )
    dd = DataDecideNext(root, f"sqlite:///{root / 'wandb.db'}", cache_dir=tmp_path / "cache", progress=False)
    curves, _ = dd.build()  # one Infinity used to abort the whole build
    assert np.isfinite(curves["cumulative_tokens"].to_numpy()).all()
    for run_id in bad:
        kept = dd.training.get_training_curves("supervised_ft", [run_id])
        assert len(kept) == 52 and not kept["step"].isin([1000, 2000]).any()
        assert np.isfinite(kept["run_tokens"]).all() and (np.diff(kept["run_tokens"]) > 0).all()
    table = dd.runs_table().set_index("run_id")
    assert table.loc[long_runs[:3], "n_history_rows"].tolist() == [52, 52, 52]
    assert table.loc[long_runs, "history_rows_skipped"].tolist() == [2, 2, 2, 54]
    assert table.loc[long_runs[:3], "in_curves"].all() and (table.loc[long_runs[:3], "skip_reason"] == "").all()
    assert (table.drop(index=long_runs)["history_rows_skipped"] == 0).all()
    progression = dd.build_report()["progression"]
    assert progression["history_rows_skipped_by_run"] == {
        long_runs[0]: {_NOT_A_NUMBER: 2},
        long_runs[1]: {_NOT_A_NUMBER: 2},
        long_runs[2]: {_NOT_FINITE: 2},
        long_runs[3]: {_NOT_FINITE: 54},
    }
    assert progression["history_rows_skipped"] == 60


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=20),
    st.lists(st.sampled_from([np.inf, -np.inf, np.nan]), min_size=1, max_size=3),
    st.data(),
)
def test_token_repair_never_propagates_non_finite_counters(increments, bad_values, data):
    counter = np.cumsum(increments).astype(float)
    counter[len(counter) // 2 :] -= counter[len(counter) // 2 - 1] / 2  # one restart
    clean = pd.Series(counter)
    positions = sorted(
        data.draw(st.lists(st.integers(0, len(counter)), min_size=len(bad_values), max_size=len(bad_values)))
    )
    with_bad = clean.tolist()
    for offset, (position, value) in enumerate(zip(positions, bad_values, strict=True)):
        with_bad.insert(position + offset, value)
    tokens = pd.Series(with_bad)
    repaired, restarted = repair_token_restarts(tokens, pd.Series(["run"] * len(tokens)))
    expected, expected_restart = repair_token_restarts(clean, pd.Series(["run"] * len(clean)))
    finite = np.isfinite(tokens.to_numpy())
    assert repaired[~finite].isna().all()
    np.testing.assert_allclose(repaired[finite].to_numpy(), expected.to_numpy())
    assert bool(restarted["run"]) == bool(expected_restart["run"])


# ----------------------------------------------------------------------------------------------- secrets

SECRET = "Zq9-s3cr@t/x"  # '@' and '/' make its URL spelling percent-encoded
QUOTED = quote(SECRET, safe="")


def _with_secret(pg_url: str, where: str) -> str:
    server, database = pg_url.rsplit("/", 1)
    if where == "userinfo":
        return f"{server.replace('postgres@', f'postgres:{QUOTED}@')}/{database}"
    return f"{pg_url}?sslmode=disable&{where}={QUOTED}"


def _error_text(error: BaseException) -> str:
    return " ".join(f"{link!s} {link!r}" for link in (error, error.__cause__, error.__context__))


@pytest.mark.parametrize("where", ["userinfo", "password", "sslpassword", "passfile", "PASSWORD", "api_token"])
def test_every_credential_of_a_url_is_redacted(pg_url, where):
    url = _with_secret(pg_url, where)
    shown = []
    try:
        store = WandBStore(url)  # trust auth ignores passwords; libpq refuses unknown options
    except SourceError as error:
        assert where in ("PASSWORD", "api_token") and "invalid connection option" in str(error)
        shown.append(_error_text(error))
    else:
        with store:
            with pytest.raises(SourceError, match="no wandb_runs table") as caught:
                store.read_runs()
            store.create_tables()
            shown += [_error_text(caught.value), store.url_redacted, repr(store), json.dumps(store.stats())]
            assert "***" in store.url_redacted
    unreachable = url.replace(":5432/", ":1/")
    with pytest.raises(SourceError, match="cannot connect") as caught:
        WandBStore(unreachable)
    shown.append(_error_text(caught.value))
    for text in shown:
        assert SECRET not in text and QUOTED not in text and "s3cr" not in text


def test_secrets_stay_out_of_the_file_and_ddxr_info(pg_url, tmp_path, capsys):
    url = f"{pg_url.replace('postgres@', f'postgres:{QUOTED}@')}?sslpassword={QUOTED}"
    generate(tmp_path / "sources", store_url=url, params=("4M",), data=("Dolma1.7",), n_runs=3, messy=False)
    dd = DataDecideNext(tmp_path / "sources", url, cache_dir=tmp_path / "cache", progress=False)
    curves = dd.dataset()
    sources = json.loads(curves.attrs["sources"])["wandb_store"]
    assert sources.startswith("postgresql://postgres:***@") and sources.endswith("?sslmode") is False
    assert "sslpassword=***" in sources
    assert main(["info", str(dd.cache_path())]) == 0
    printed = capsys.readouterr()
    assert "sslpassword=***" in printed.out
    for text in (printed.out, printed.err, dd.cache_path().read_bytes().decode("latin-1")):
        assert SECRET not in text and QUOTED not in text and "s3cr" not in text


# ----------------------------------------------------------------------------------------------- resources


def test_a_locked_store_table_fails_with_a_timeout_instead_of_hanging(pg_url):
    with WandBStore(pg_url) as store:
        store.create_tables()
    holder = psycopg2.connect(pg_url)  # a second session, e.g. a downloader rewriting the table
    try:
        with holder.cursor() as cursor:
            cursor.execute("LOCK TABLE wandb_history IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with WandBStore(pg_url, lock_timeout=0.5) as store, pytest.raises(SourceError) as caught:
            store.read_history(None, ["train_loss"])
        assert time.monotonic() - started < 10
        message = str(caught.value)
        assert "did not answer in time" in message and "lock timeout" in message
        assert "another session holds a lock" in message and "lock_timeout" in message
        # the URL's own options win over the keyword
        with WandBStore(f"{pg_url}?options=-c%20lock_timeout%3D300ms", lock_timeout=None) as store:
            with pytest.raises(SourceError, match="did not answer in time"):
                store.stats()
    finally:
        holder.rollback()
        holder.close()
    with WandBStore(pg_url, lock_timeout=0.5) as store:  # the lock is gone: reads work again
        assert store.read_history(None, ["train_loss"]).empty
    with pytest.raises(SourceError, match="lock_timeout must be a number of seconds"):
        WandBStore(pg_url, lock_timeout=-1)


# ----------------------------------------------------------------------------------------------- store reads


def _two_run_store(url: str) -> tuple[WandBStore, sa.Engine]:
    store = WandBStore(url)
    store.create_tables()
    runs = pd.DataFrame(
        {
            "run_id": ["r1", "r2"],
            "run_name": ["one", "two"],
            "state": "finished",
            "project": "p",
            "entity": "e",
            "created_at": "2025-09-01T00:00:00Z",
            "summary": [{"oe_eval_metrics/arc_challenge": {"primary_score": 0.5}}, {}],
        }
    )
    store.store_runs(runs)
    store.store_history(pd.DataFrame({"run_id": ["r1", "r1", "r2"], "step": [1, 2, 1], "train_loss": [3.0, 2.0, 1.0]}))
    return store, sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))


def test_text_in_numeric_history_columns_names_run_and_value(store_url):
    store, engine = _two_run_store(store_url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # a downloader may have made them text columns
            connection.exec_driver_sql("ALTER TABLE wandb_history ALTER COLUMN step TYPE text")
            connection.exec_driver_sql("ALTER TABLE wandb_history ALTER COLUMN runtime TYPE text")
        connection.exec_driver_sql("UPDATE wandb_history SET step = 'ten' WHERE run_id = 'r2'")
    with pytest.raises(SourceError, match=r"wandb_history.step of run 'r2' holds 'ten'.*expected an integer"):
        store.read_history(None, ["train_loss"])
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE wandb_history SET step = '3', runtime = 'soon' WHERE run_id = 'r2'")
    with pytest.raises(SourceError, match=r"wandb_history.runtime of run 'r2' holds 'soon'.*expected a number"):
        store.read_history(["r2"], ["train_loss"])
    assert store.read_history(["r1"], ["train_loss"])["step"].tolist() == [1, 2]


def test_renamed_state_column_and_null_names(store_url):
    store, engine = _two_run_store(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE wandb_runs SET run_name = NULL, state = NULL WHERE run_id = 'r2'")
    runs = store.read_runs().set_index("run_id")
    assert runs.loc["r2", ["run_name", "state"]].tolist() == ["", ""]  # unknown, not a crash
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE wandb_runs RENAME COLUMN state TO run_state")
    store = WandBStore(store_url)
    for read in (store.read_runs, store.stats):
        with pytest.raises(SourceError, match=r"wandb_runs in .* lacks columns \['state'\]"):
            read()


def test_null_run_id_is_named(sqlite_url):
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:  # a downloader's table, without ddxr's constraints
        connection.exec_driver_sql(
            "CREATE TABLE wandb_runs (run_id TEXT, run_name TEXT, state TEXT, project TEXT, entity TEXT, "
            "created_at TEXT, config TEXT, summary TEXT)"
        )
        connection.exec_driver_sql(
            "INSERT INTO wandb_runs VALUES ('r1', 'one', 'finished', 'p', 'e', '2025-09-01', '{}', '{}'), "
            "(NULL, 'two', 'finished', 'p', 'e', '2025-09-01', '{}', '{}')"
        )
    with pytest.raises(SourceError, match=r"1 rows with a NULL run_id \(the first has run_name 'two'\)"):
        WandBStore(sqlite_url).read_runs()


def test_sqlite_null_json_reads_as_empty_dicts(sqlite_url):
    store, engine = _two_run_store(sqlite_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE wandb_runs SET config = NULL, summary = 'null', system_attrs = NULL WHERE run_id = 'r1'"
        )
    runs = store.read_runs().set_index("run_id")
    assert runs.loc["r1", "config"] == {} and runs.loc["r1", "summary"] == {} and runs.loc["r1", "tags"] == []
    assert store.read_run_entries("summary", "oe_eval_metrics/").empty


_DEEP = "[" * 5000 + "1" + "]" * 5000


def test_deeply_nested_json_names_the_run(store_url):
    store, engine = _two_run_store(store_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE wandb_runs SET config = :deep WHERE run_id = 'r2'"), {"deep": '{"deep": ' + _DEEP + "}"}
        )
    with pytest.raises(SourceError, match=r"wandb_runs.config of run 'r2' is not a JSON object \(nested too deep"):
        store.read_runs()


@pytest.mark.parametrize(
    "cell",
    ['{"train_loss": NaN}', '{"train_loss": Infinity}', '{"train_loss": 1', '{"x": ' + _DEEP + "}"],
    ids=["NaN", "Infinity", "truncated", "deep"],
)
def test_invalid_json_in_a_sqlite_store_names_table_run_and_row(sqlite_url, cell):
    store, engine = _two_run_store(sqlite_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE wandb_history SET metrics = ? WHERE run_id = 'r1' AND step = 2", (cell,))
        connection.exec_driver_sql("UPDATE wandb_runs SET summary = ? WHERE run_id = 'r2'", (cell,))
        row_id = connection.exec_driver_sql("SELECT id FROM wandb_history WHERE run_id = 'r1' AND step = 2").scalar()
    with pytest.raises(SourceError, match=rf"wandb_history.metrics of run 'r1' \(row id {row_id}; 1 rows in all\)"):
        store.read_history(None, ["train_loss"])
    with pytest.raises(SourceError, match=r"wandb_runs.summary of run 'r2' \(its row; 1 rows in all\) is not valid"):
        store.read_run_entries("summary", "oe_eval_metrics/")
    with pytest.raises(SourceError, match=r"wandb_runs.summary of run 'r2' is not a JSON object"):
        store.read_runs()


def test_a_string_of_keys_is_refused_whole(sqlite_url):
    store, _ = _two_run_store(sqlite_url)
    with pytest.raises(SourceError, match=r"not the string 'train_loss'; wrap it in a list"):
        store.read_history(["r1"], "train_loss")
    with pytest.raises(SourceError, match=r"not the string 'train_loss'; wrap it in a list"):
        next(store.iter_history(["r1"], "train_loss"))
    assert store.read_history(["r1"], iter(["train_loss"]))["train_loss"].tolist() == [3.0, 2.0]

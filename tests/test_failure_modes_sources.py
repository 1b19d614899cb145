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

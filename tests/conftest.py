"""Shared fixtures: throwaway PostgreSQL databases, SQLite URLs and the real samples."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

#: Where the real W&B and DataDecide rows live (see tests/data/real_samples/README.md).
REAL_SAMPLES = Path(__file__).resolve().parent / "data" / "real_samples"
PG_SERVER = os.environ.get("DDXR_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def _admin_connection():
    try:
        connection = psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:  # the suite promises real PostgreSQL: fail loudly, never skip
        pytest.fail(f"PostgreSQL does not answer at {PG_SERVER} ({error}); start it and rerun", pytrace=False)
    connection.autocommit = True
    return connection


#: Name of a test database: the creating process id, then a random suffix.
TEST_DATABASE = re.compile(r"^ddxr_test_(?P<pid>\d+)_[0-9a-f]{8}$")


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def drop_databases_of_dead_sessions(admin) -> list[str]:
    """Drop the test databases whose creating process is gone (a killed run cannot drop its own); return them.

    Only for a server on this machine: a process id means nothing on another host.
    """
    with admin.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ddxr_test_%'")
        names = [row[0] for row in cursor.fetchall()]
        orphans = [name for name in names if (m := TEST_DATABASE.match(name)) and not _process_is_alive(int(m["pid"]))]
        for name in orphans:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return orphans


@pytest.fixture(scope="session")
def make_pg_url() -> Iterator[Callable[[], str]]:
    """Return factory of fresh, empty PostgreSQL databases; every one is dropped when the session ends.

    Databases left by earlier runs that were killed (their process is gone) are dropped first.
    """
    created: list[str] = []
    admin = _admin_connection()
    if "127.0.0.1" in PG_SERVER or "localhost" in PG_SERVER:
        drop_databases_of_dead_sessions(admin)

    def make() -> str:
        name = f"ddxr_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{PG_SERVER}/{name}"

    yield make
    with admin.cursor() as cursor:
        for name in created:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def pg_url(make_pg_url: Callable[[], str]) -> str:
    """URL of a fresh, empty PostgreSQL database for one test."""
    return make_pg_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file for one test."""
    return f"sqlite:///{tmp_path / 'wandb.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Return a fresh empty store URL, once on PostgreSQL and once on SQLite."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """Folder of the real sample parquet files (copied from the shared real samples)."""
    return REAL_SAMPLES

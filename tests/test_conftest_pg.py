import uuid
from pathlib import Path

import sqlalchemy as sa
from conftest import _admin_connection, drop_databases_of_dead_sessions


def test_throwaway_databases_are_distinct_and_empty(make_pg_url):
    first, second = make_pg_url(), make_pg_url()
    assert first != second
    engine = sa.create_engine(first.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []
    engine.dispose()


def _databases(admin) -> set[str]:
    with admin.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cursor.fetchall()}


def test_databases_of_killed_runs_are_dropped_and_live_ones_kept(make_pg_url):
    live = make_pg_url().rsplit("/", 1)[1]  # this process's own database
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it
    orphan = f"ddxr_test_{dead_pid}_{uuid.uuid4().hex[:8]}"
    admin = _admin_connection()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{orphan}"')
        dropped = drop_databases_of_dead_sessions(admin)
        assert orphan in dropped and live not in dropped
        names = _databases(admin)
        assert orphan not in names and live in names
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{orphan}" WITH (FORCE)')
        admin.close()

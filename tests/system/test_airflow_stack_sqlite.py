"""The SQLite connection every component of ``AirflowStack`` uses waits for the write lock.

A transaction that opens with a SAVEPOINT (Airflow's backfill creation) reads before it
writes; while another process writes, plain pysqlite answers "database is locked" at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.system.airflow_stack import WriterFirstConnection


def savepoint_then_write(path: Path, factory: type[sqlite3.Connection]) -> None:
    """While another connection holds the write lock for 1 s, a SAVEPOINT-first transaction
    reads, then writes (raises what SQLite answered)."""
    other = sqlite3.connect(path, timeout=10, check_same_thread=False)
    mine = sqlite3.connect(path, timeout=10, factory=factory)
    try:
        other.execute("INSERT INTO t VALUES (1)")  # holds the write lock ...
        threading.Timer(1.0, other.commit).start()  # ... for a second
        cursor = mine.cursor()
        cursor.execute("SAVEPOINT sa_savepoint_1")
        cursor.execute("SELECT count(*) FROM t").fetchall()
        cursor.execute("INSERT INTO t VALUES (2)")
        cursor.execute("RELEASE SAVEPOINT sa_savepoint_1")
        mine.commit()
    finally:
        time.sleep(1.2)
        other.close()
        mine.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "airflow.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")  # as Airflow sets it
        setup.execute("CREATE TABLE t (x)")
    return path


def test_plain_pysqlite_refuses_a_savepoint_first_write_at_once(db: Path) -> None:
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        savepoint_then_write(db, sqlite3.Connection)


def test_the_stacks_connection_waits_for_the_lock_and_writes(db: Path) -> None:
    savepoint_then_write(db, WriterFirstConnection)
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]

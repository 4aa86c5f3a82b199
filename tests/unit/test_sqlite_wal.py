"""open_wal: the open that two `--workers` processes race on; SqliteThread: the one
thread a store's connection lives on.

The race is made deterministic: another connection holds a write transaction on a
rollback-journal file, so switching to WAL is a possible deadlock and SQLite answers
SQLITE_BUSY at once, whatever the busy timeout (what a worker met in CI)."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bastion_edge.sqlite_wal import SqliteThread, open_wal

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x); CREATE INDEX IF NOT EXISTS t_x ON t (x);"


@contextmanager
def writer_holding(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection, mid-write on a rollback-journal database."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE IF NOT EXISTS other (y)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other VALUES (1)")
    try:
        yield other
    finally:
        other.close()


def test_a_fresh_file_is_private_wal_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.sqlite3"
    db = open_wal(path, SCHEMA)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db.close()
    open_wal(path, SCHEMA).close()  # idempotent: a restarted worker opens it again


def test_the_switch_to_wal_is_busy_at_once_without_a_retry(tmp_path: Path) -> None:
    """The premise: the connection's own busy timeout does not cover this case."""
    path = tmp_path / "s.sqlite3"
    with writer_holding(path):
        plain = sqlite3.connect(path, timeout=30, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError) as busy:
            plain.execute("PRAGMA journal_mode=WAL")
        assert busy.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
        plain.close()


def test_a_busy_open_is_retried_until_the_other_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    pauses: list[float] = []
    with writer_holding(path) as other:
        def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if len(pauses) == 3:
                other.execute("COMMIT")  # the other process finishes while we back off

        db = open_wal(path, SCHEMA, sleep=sleep)
    assert pauses == [0.01, 0.02, 0.04]  # backed off, doubling, then got through
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT y FROM other").fetchall() == [(1,)]
    db.close()


def test_a_file_held_past_the_wait_raises_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with writer_holding(path), pytest.raises(sqlite3.OperationalError):
        open_wal(path, SCHEMA, wait_seconds=1.0, sleep=sleep, clock=lambda: now[0])
    assert 1.0 <= now[0] < 1.5  # gave up once the wait was spent, not before


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    slept: list[float] = []
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        open_wal(tmp_path / "s.sqlite3", "CREATE TABLE (", sleep=slept.append)
    assert slept == []


def test_a_sqlite_thread_runs_every_call_on_its_own_thread_and_closes_once(
    tmp_path: Path,
) -> None:
    sql = SqliteThread(tmp_path / "s.sqlite3", SCHEMA, 5.0, "test-sqlite")

    async def scenario() -> tuple[set[str], list[tuple[int]]]:
        def insert(db: sqlite3.Connection, x: int) -> str:
            db.execute("INSERT INTO t VALUES (?)", (x,))
            return threading.current_thread().name

        names = set(await asyncio.gather(*(sql.run(lambda db, x=x: insert(db, x))
                                           for x in range(20))))
        rows = await sql.run(lambda db: db.execute("SELECT count(*) FROM t").fetchall())
        await sql.close()
        await sql.close()  # a second close does nothing
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            await sql.run(lambda db: db.execute("SELECT 1"))
        return names, rows

    names, rows = asyncio.run(scenario())
    assert len(names) == 1 and names.pop().startswith("test-sqlite")
    assert names != {threading.current_thread().name}
    assert rows == [(20,)]


def test_a_sqlite_thread_that_cannot_open_raises(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        SqliteThread(tmp_path / "s.sqlite3", "CREATE TABLE (", 5.0, "test-sqlite")

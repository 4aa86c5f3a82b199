"""A private SQLite database in WAL mode that several processes may open at once, and
the one thread each store runs its connection on.

The Responses and batch stores live in the confdir, shared by every `--workers`
process (and by proxies on one host). Opening a database is where they collide: the
first opener switches the file to WAL, which needs an exclusive lock, while another
opener already holds a shared one to read the schema. SQLite sees that wait as a
possible deadlock and answers SQLITE_BUSY at once, without calling the busy handler,
so `timeout=` alone does not help. The switch and the schema are therefore retried
with a short back-off until `wait_seconds` has passed; once open, the connection's busy
timeout covers ordinary writes.

`SqliteThread` owns one such connection on one thread: every call runs there in order,
so the event loop never waits on the disk and calls never interleave.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_FIRST_PAUSE = 0.01
_LONGEST_PAUSE = 0.2


def open_wal(path: Path, schema: str, wait_seconds: float = 10.0,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> sqlite3.Connection:
    """`path` created 0600 if missing, switched to WAL, `schema` (idempotent
    statements) applied; an autocommit connection. Raises sqlite3.Error when another
    process still holds the file after `wait_seconds`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)
    db = sqlite3.connect(path, timeout=wait_seconds, isolation_level=None)
    deadline = clock() + wait_seconds
    try:
        _retry_busy(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone(),
                    deadline, sleep, clock)
        db.execute("PRAGMA synchronous=NORMAL")
        _retry_busy(lambda: db.executescript(schema), deadline, sleep, clock)
    except BaseException:
        db.close()
        raise
    return db


def _retry_busy[T](work: Callable[[], T], deadline: float,
                   sleep: Callable[[float], None], clock: Callable[[], float]) -> T:
    pause = _FIRST_PAUSE
    while True:
        try:
            return work()
        except sqlite3.OperationalError as e:
            primary = e.sqlite_errorcode & 0xFF  # SQLITE_BUSY_RECOVERY etc. are BUSY too
            if primary not in _BUSY_CODES or clock() >= deadline:
                raise
        sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)


class SqliteThread:
    """`open_wal(path, schema, wait_seconds)` on a thread of its own; `run` sends work
    there. Raises what `open_wal` raises when the file cannot be opened."""

    def __init__(self, path: Path, schema: str, wait_seconds: float, name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._executor.submit(open_wal, path, schema, wait_seconds).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    async def run[T](self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise sqlite3.ProgrammingError("store closed")
            return work(self._db)

        if self._db is None:  # closed, and its thread with it
            raise sqlite3.ProgrammingError("store closed")

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Close the connection on its thread, then the thread; a second call does nothing."""
        if self._db is None:
            return

        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

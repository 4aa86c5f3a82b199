"""Open a private SQLite database in WAL mode that several processes may open at once.

The Responses and batch stores live in the confdir, shared by every `--workers`
process (and by proxies on one host). Opening a database is where they collide: the
first opener switches the file to WAL, which needs an exclusive lock, while another
opener already holds a shared one to read the schema. SQLite sees that wait as a
possible deadlock and answers SQLITE_BUSY at once, without calling the busy handler,
so `timeout=` alone does not help. The switch and the schema are therefore retried
with a short back-off until `wait_seconds` has passed; once open, the connection's busy
timeout covers ordinary writes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
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

"""Quota counters in a WAL-mode SQLite file shared by the workers of one host.

One row per app holds its current minute (requests, tokens) and UTC day (tokens); a
write into a newer window starts that window's counts afresh, so nothing needs purging.

Admission is one short write transaction: `BEGIN IMMEDIATE`, an upsert that adds the
request and returns the counters, `core.quota.admit` over the counters as they were,
then COMMIT or ROLLBACK. It runs on the event loop's own connection with no busy
wait: a WAL commit without fsync (synchronous=NORMAL) costs microseconds, far less
than a hop to a thread (measured in bench/quota_cost.py). Only when another process
holds the write lock at that instant does the admission move to the store's
`SqliteThread`, which waits for the lock there. Corrections and WAL checkpoints (the
only fsyncs, one per CHECKPOINT_WRITES admissions, ~750 µs each) always run on that
thread, so the loop never waits on the disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import Admitted, Rejected, Usage, admit, windows_at
from bastion_edge.sqlite_wal import SqliteThread, open_wal
from bastion_edge.state.quota_store import Correction, QuotaStoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_usage (
    app TEXT PRIMARY KEY,
    minute INTEGER NOT NULL,          -- minutes since the epoch (core.quota.windows_at)
    requests INTEGER NOT NULL,        -- in that minute
    minute_tokens INTEGER NOT NULL,   -- in that minute
    day INTEGER NOT NULL,             -- UTC days since the epoch
    day_tokens INTEGER NOT NULL       -- in that day
) WITHOUT ROWID;
"""
# A request from a process whose clock lags (an older window than the row's) counts
# in the row's window rather than resetting it.
_ADD = """
INSERT INTO quota_usage VALUES (:app, :minute, 1, :tokens, :day, :tokens)
ON CONFLICT (app) DO UPDATE SET
  requests = CASE WHEN minute >= excluded.minute THEN requests + 1 ELSE 1 END,
  minute_tokens = CASE WHEN minute >= excluded.minute
                       THEN minute_tokens + excluded.minute_tokens ELSE excluded.minute_tokens END,
  minute = max(minute, excluded.minute),
  day_tokens = CASE WHEN day >= excluded.day
                    THEN day_tokens + excluded.day_tokens ELSE excluded.day_tokens END,
  day = max(day, excluded.day)
RETURNING requests, minute_tokens, day_tokens
"""
_DEBIT = """
UPDATE quota_usage SET
  minute_tokens = minute_tokens + CASE WHEN minute = :minute THEN :tokens ELSE 0 END,
  day_tokens = day_tokens + CASE WHEN day = :day THEN :tokens ELSE 0 END
WHERE app = :app
"""
# SQLite's own auto-checkpoint runs at 1000 WAL pages; an admission writes one or two.
CHECKPOINT_WRITES = 500
_READ = "SELECT minute, requests, minute_tokens, day, day_tokens FROM quota_usage WHERE app = ?"


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _admit_in(db: sqlite3.Connection, app: str, quota: Quota, estimate: int,
              now: float) -> Admitted | Rejected:
    windows = windows_at(now)
    db.execute("BEGIN IMMEDIATE")
    try:
        after = db.execute(_ADD, {"app": app, "minute": windows.minute, "day": windows.day,
                                  "tokens": estimate}).fetchone()
        before = Usage(after[0] - 1, after[1] - estimate, after[2] - estimate)
        verdict = admit(quota, before, estimate, now)
        db.execute("COMMIT" if isinstance(verdict, Admitted) else "ROLLBACK")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return verdict


def _debit_in(db: sqlite3.Connection, corrections: Sequence[Correction],
              checkpoint: bool) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_DEBIT, ({"app": c.app, "minute": c.windows.minute,
                                 "day": c.windows.day, "tokens": c.tokens}
                                for c in corrections))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if checkpoint:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")


class SqliteQuotaStore:
    def __init__(self, path: Path, wait_seconds: float = 10.0) -> None:
        self._path = path
        self._writes = 0  # admissions since the last checkpoint
        try:
            self._thread = SqliteThread(path, _SCHEMA, wait_seconds, "bastion-edge-quota")
            self._db: sqlite3.Connection | None = open_wal(path, _SCHEMA, wait_seconds)
        except sqlite3.Error as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e
        self._db.execute("PRAGMA busy_timeout = 0")  # busy: go to the thread instead
        self._db.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints: on the thread

    @property
    def location(self) -> str:
        return f"sqlite://{self._path}"

    def _loop_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise QuotaStoreError(f"{self.location}: store closed")
        return self._db

    async def admit(self, app: str, quota: Quota, estimate: int,
                    now: float) -> Admitted | Rejected:
        self._writes += 1
        try:
            try:
                return _admit_in(self._loop_db(), app, quota, estimate, now)
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
            return await self._thread.run(lambda db: _admit_in(db, app, quota, estimate, now))
        except sqlite3.Error as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e

    async def debit(self, corrections: Sequence[Correction]) -> None:
        if not corrections:
            return
        checkpoint = self._writes >= CHECKPOINT_WRITES
        if checkpoint:
            self._writes = 0
        try:
            await self._thread.run(lambda db: _debit_in(db, corrections, checkpoint))
        except sqlite3.Error as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e

    async def usage(self, app: str, now: float) -> Usage:
        windows = windows_at(now)
        try:
            row = self._loop_db().execute(_READ, (app,)).fetchone()
        except sqlite3.Error as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e
        if row is None:
            return Usage()
        minute, requests, minute_tokens, day, day_tokens = row
        this_minute = minute == windows.minute
        return Usage(requests if this_minute else 0, minute_tokens if this_minute else 0,
                     day_tokens if day == windows.day else 0)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        await self._thread.close()

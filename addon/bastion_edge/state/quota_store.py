"""Where quota counters live, shared by every worker and replica, and what an outage means.

  sqlite             `quotas.sqlite3` in mitmproxy's confdir (the workers of one host)
  sqlite:///abs/path a SQLite file elsewhere
  redis://...        Redis (rediss:// for TLS): replicas behind one service share it

The forms are those of `responses_state.store` (one setting serves both; SQLite uses
its own file, Redis its own key prefix). Admission is atomic with its reservation: the
SQLite store decides inside a `BEGIN IMMEDIATE` transaction, the Redis store in a Lua
script, so a quota of N requests per minute lets exactly N through across processes.

A store failure never passes silently: `QuotaGuard` turns it into the outage mode's
verdict (fail_open: admitted unmetered; fail_closed: `Unavailable`) and reports it to
`on_outage(operation)` for the metrics.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bastion_edge.core.quota import (
    Admitted,
    OutageMode,
    Quota,
    Rejected,
    Usage,
    Verdict,
    Windows,
    admit,
    outage_verdict,
    windows_at,
)
from bastion_edge.sqlite_wal import SqliteThread
from bastion_edge.state.store import store_location

SQLITE_FILE = "quotas.sqlite3"


class QuotaStoreError(Exception):
    """The counter store failed (unreachable, locked beyond its wait, corrupt)."""


class QuotaStore(Protocol):
    @property
    def location(self) -> str:
        """Where the counters live, for logs (no credentials)."""
        ...

    async def admit(self, app: str, quota: Quota, estimate: int,
                    now: float) -> Admitted | Rejected:
        """`core.quota.admit` over the shared counters, reserving one request and
        `estimate` tokens when admitted, atomically. Raises QuotaStoreError."""
        ...

    async def debit(self, app: str, windows: Windows, tokens: int) -> None:
        """Add `tokens` (negative: give back) to the windows a request was admitted in;
        windows that have expired since are left alone. Raises QuotaStoreError."""
        ...

    async def usage(self, app: str, now: float) -> Usage:
        """The app's counters in the windows holding `now` (report, gauges)."""
        ...

    async def close(self) -> None: ...


def quota_store_location(setting: str, confdir: Path) -> str:
    """The counters' URL for a `responses_state.store` value (ValueError if invalid)."""
    return store_location(setting, confdir, SQLITE_FILE)


def open_quota_store(location: str) -> QuotaStore:
    if location.startswith("sqlite:///"):
        return SqliteQuotaStore(Path(location.removeprefix("sqlite://")))
    from bastion_edge.state.quota_redis import RedisQuotaStore

    return RedisQuotaStore(location)


class QuotaGuard:
    """A store with its outage mode: every call answers a value, failures are counted."""

    def __init__(self, store: QuotaStore, mode: OutageMode,
                 on_outage: Callable[[str], None], clock: Callable[[], float] = time.time
                 ) -> None:
        self.store = store
        self.mode = mode
        self._on_outage = on_outage
        self._clock = clock

    async def admit(self, app: str, quota: Quota, estimate: int) -> Verdict:
        now = self._clock()
        try:
            return await self.store.admit(app, quota, estimate, now)
        except QuotaStoreError:
            self._on_outage("admit")
            return outage_verdict(self.mode, quota, now)

    async def debit(self, app: str, admitted: Admitted, tokens: int) -> bool:
        """False when the store failed (counted); an unmetered admission or a zero
        correction costs nothing."""
        if admitted.unmetered or tokens == 0:
            return True
        try:
            await self.store.debit(app, admitted.windows, tokens)
        except QuotaStoreError:
            self._on_outage("debit")
            return False
        return True


# ---------------------------------------------------------------------------- SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_counters (
    app TEXT NOT NULL,
    span TEXT NOT NULL,            -- 'm': a minute, 'd': a UTC day
    n INTEGER NOT NULL,            -- its number since the epoch (core.quota.windows_at)
    requests INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, span, n)
) WITHOUT ROWID;
"""
_READ = ("SELECT span, requests, tokens FROM quota_counters "
         "WHERE app = ? AND ((span = 'm' AND n = ?) OR (span = 'd' AND n = ?))")
_ADD = ("INSERT INTO quota_counters (app, span, n, requests, tokens) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, "
        "tokens = tokens + excluded.tokens")
_DEBIT = ("UPDATE quota_counters SET tokens = tokens + ? "
          "WHERE app = ? AND ((span = 'm' AND n = ?) OR (span = 'd' AND n = ?))")
_PURGE = ("DELETE FROM quota_counters "
          "WHERE (span = 'm' AND n < ?) OR (span = 'd' AND n < ?)")


def _usage_of(rows: list[tuple[str, int, int]]) -> Usage:
    minute = next(((r, t) for span, r, t in rows if span == "m"), (0, 0))
    today = next((t for span, _, t in rows if span == "d"), 0)
    return Usage(minute[0], minute[1], today)


class SqliteQuotaStore:
    """Counters in a WAL-mode SQLite file: rows per app and window, old ones purged once
    a minute by whichever process moves into a new minute first."""

    def __init__(self, path: Path, wait_seconds: float = 10.0) -> None:
        self._path = path
        self._purged_minute = -1
        try:
            self._thread = SqliteThread(path, _SCHEMA, wait_seconds, "bastion-edge-quota")
        except sqlite3.Error as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e

    @property
    def location(self) -> str:
        return f"sqlite://{self._path}"

    async def admit(self, app: str, quota: Quota, estimate: int,
                    now: float) -> Admitted | Rejected:
        windows = windows_at(now)

        def work(db: sqlite3.Connection) -> Admitted | Rejected:
            db.execute("BEGIN IMMEDIATE")  # the decision and the reservation are one
            try:
                if windows.minute != self._purged_minute:
                    db.execute(_PURGE, (windows.minute - 1, windows.day - 1))
                    self._purged_minute = windows.minute
                rows = db.execute(_READ, (app, windows.minute, windows.day)).fetchall()
                verdict = admit(quota, _usage_of(rows), estimate, now)
                if isinstance(verdict, Admitted):
                    db.executemany(_ADD, ((app, "m", windows.minute, 1, estimate),
                                          (app, "d", windows.day, 0, estimate)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return verdict

        return await self._run(work)

    async def debit(self, app: str, windows: Windows, tokens: int) -> None:
        if tokens:
            await self._run(lambda db: db.execute(
                _DEBIT, (tokens, app, windows.minute, windows.day)))

    async def usage(self, app: str, now: float) -> Usage:
        windows = windows_at(now)
        rows = await self._run(
            lambda db: db.execute(_READ, (app, windows.minute, windows.day)).fetchall())
        return _usage_of(rows)

    async def _run[T](self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._thread.run(work)
        except sqlite3.Error as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e

    async def close(self) -> None:
        await self._thread.close()

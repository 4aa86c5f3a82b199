"""Where quota counters live, shared by every worker and replica, and what an outage means.

  sqlite             `quotas.sqlite3` in mitmproxy's confdir (the workers of one host)
  sqlite:///abs/path a SQLite file elsewhere
  redis://...        Redis (rediss:// for TLS): replicas behind one service share it

The forms are those of `responses_state.store` (one setting serves both; SQLite uses
its own file, Redis its own key prefix). Admission is atomic with its reservation (a
SQLite transaction, a Redis Lua script), so a quota of N requests per minute lets
exactly N through across processes.

Corrections (the reported usage less the estimate) are not written one by one: the
guard adds them up per app and window and `flush()` writes them in one call, about
once a second, off the request path. Admission stays exact for requests; token
counters lag the upstream's reports by at most one flush interval.

A store failure never passes silently: `QuotaGuard` turns it into the outage mode's
verdict (fail_open: admitted unmetered; fail_closed: `Unavailable`) and reports it to
`on_outage(operation)` for the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from bastion_edge.config.quota_rules import OutageMode, Quota
from bastion_edge.core.quota import (
    Admitted,
    Rejected,
    Usage,
    Verdict,
    Windows,
    outage_verdict,
    windows_at,
)
from bastion_edge.state.responses_store import store_location

SQLITE_FILE = "quotas.sqlite3"
FLUSH_SECONDS = 1.0  # how often the owner should call QuotaGuard.flush()


class QuotaStoreError(Exception):
    """The counter store failed (unreachable, locked beyond its wait, corrupt)."""


class Correction(NamedTuple):
    app: str
    windows: Windows
    tokens: int


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

    async def debit(self, corrections: Sequence[Correction]) -> None:
        """Add each correction's tokens (negative: give back) to the windows its requests
        were admitted in; windows that have ended since are left alone. Raises
        QuotaStoreError."""
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
        from bastion_edge.state.quota_sqlite import SqliteQuotaStore

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
        self._pending: dict[tuple[str, Windows], int] = {}

    async def admit(self, app: str, quota: Quota, estimate: int) -> Verdict:
        now = self._clock()
        try:
            return await self.store.admit(app, quota, estimate, now)
        except QuotaStoreError:
            self._on_outage("admit")
            return outage_verdict(self.mode, quota, now)

    async def admit_when_possible(
            self, app: str, quota: Quota, estimate: int, give_up_at: float,
            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Verdict:
        """For work that may wait (batch lines): admitted once the quota has room,
        waiting out each rejection's retry-after (and a fail_closed outage). Answers a
        rejection that can never fit at once, and the last verdict at `give_up_at`."""
        while True:
            verdict = await self.admit(app, quota, estimate)
            if isinstance(verdict, Admitted) or verdict.retry_after is None:
                return verdict
            pause = min(verdict.retry_after, give_up_at - self._clock())
            if pause <= 0:
                return verdict
            await sleep(pause)

    def debit(self, app: str, admitted: Admitted, tokens: int) -> None:
        """Note a correction for the next `flush` (an unmetered admission has none)."""
        if admitted.unmetered or tokens == 0:
            return
        key = (app, admitted.windows)
        self._pending[key] = self._pending.get(key, 0) + tokens

    @property
    def pending(self) -> int:
        """Corrections not yet written."""
        return len(self._pending)

    async def flush(self) -> bool:
        """Write the pending corrections in one store call. False when the store failed
        (counted): they are kept for the next flush, unless their day has ended."""
        pending, self._pending = self._pending, {}
        if not pending:
            return True
        try:
            await self.store.debit([Correction(app, windows, tokens)
                                    for (app, windows), tokens in pending.items()])
        except QuotaStoreError:
            self._on_outage("debit")
            today = windows_at(self._clock()).day
            for key, tokens in pending.items():
                if key[1].day >= today:
                    self._pending[key] = self._pending.get(key, 0) + tokens
            return False
        return True

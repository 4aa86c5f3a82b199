"""How fast batch lines start and how long a line waits before it is retried. Pure
timing over an injectable clock: the runner never calls `time` or `asyncio.sleep`
for pacing itself, so a test drives it with a clock of its own and sleeps through no
rate limit and no back-off."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Protocol

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


class PaceClock(Protocol):
    """What pacing needs of time: a monotonic reading and a way to let time pass."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real one: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


MONOTONIC = MonotonicClock()


class RateLimit:
    """Starts at most `per_minute` lines a minute, evenly spaced; None: unbounded."""

    def __init__(self, clock: PaceClock = MONOTONIC) -> None:
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    def delay(self, per_minute: int | None) -> float:
        """Seconds to wait before the next start (and books that start). Pure timing."""
        if per_minute is None:
            return 0.0
        now = self._clock.now()
        start = max(now, self._next)
        self._next = start + 60.0 / per_minute
        return start - now

    async def wait(self, per_minute: int | None) -> None:
        async with self._lock:
            pause = self.delay(per_minute)
        if pause > 0:
            await self._clock.sleep(pause)


def backoff_seconds(attempt: int, retry_after: str | None) -> float:
    """Retry-After when Bastion says (capped), else exponential with jitter."""
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return min(max(float(retry_after), 0.0), BACKOFF_MAX_SECONDS)
    ceiling: float = min(BACKOFF_BASE_SECONDS * 2.0 ** attempt, BACKOFF_MAX_SECONDS)
    return ceiling * random.uniform(0.5, 1)

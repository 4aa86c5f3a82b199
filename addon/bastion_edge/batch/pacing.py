"""How fast batch lines start and how long a line waits before it is retried. Pure
timing over an injectable clock."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


class RateLimit:
    """Starts at most `per_minute` lines a minute, evenly spaced; None: unbounded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    def delay(self, per_minute: int | None) -> float:
        """Seconds to wait before the next start (and books that start). Pure timing."""
        if per_minute is None:
            return 0.0
        now = self._clock()
        start = max(now, self._next)
        self._next = start + 60.0 / per_minute
        return start - now

    async def wait(self, per_minute: int | None) -> None:
        async with self._lock:
            pause = self.delay(per_minute)
        if pause > 0:
            await asyncio.sleep(pause)


def backoff_seconds(attempt: int, retry_after: str | None) -> float:
    """Retry-After when Bastion says (capped), else exponential with jitter."""
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return min(max(float(retry_after), 0.0), BACKOFF_MAX_SECONDS)
    ceiling: float = min(BACKOFF_BASE_SECONDS * 2.0 ** attempt, BACKOFF_MAX_SECONDS)
    return ceiling * random.uniform(0.5, 1)

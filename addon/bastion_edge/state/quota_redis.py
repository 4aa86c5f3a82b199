"""Quota counters in Redis (redis.asyncio), for replicas sharing one server.

  <prefix><app>:m:<minute>:r   requests in that minute     PEXPIRE: the minute's end + 60 s
  <prefix><app>:m:<minute>:t   tokens in that minute       PEXPIRE: likewise
  <prefix><app>:d:<day>:t      tokens in that UTC day      PEXPIRE: the day's end + 1 h

Admission is one Lua script (atomic on the server, one round trip): it reads the three
counters, makes `core.quota.admit`'s comparisons and, when they pass, adds the request
and its estimate, setting the expiry of a counter it creates. The script answers the
counters as they were before, and `core.quota.admit` over them builds the verdict, so
the details (which limit, retry-after) come from the one pure function. A debit only
touches counters that still exist, so a late correction never leaves a key without
expiry behind.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.exceptions import RedisError

from bastion_edge.core.quota import (
    Admitted,
    Quota,
    Rejected,
    Usage,
    Windows,
    admit,
    seconds_to_day_end,
    seconds_to_minute_end,
    windows_at,
)
from bastion_edge.state.quota_store import QuotaStoreError

PREFIX = "bastion-edge:quota:"
TIMEOUT_SECONDS = 2.0
MAX_CONNECTIONS = 32
MINUTE_MARGIN_SECONDS = 60
DAY_MARGIN_SECONDS = 3600
NO_LIMIT = -1

# KEYS: requests this minute, tokens this minute, tokens today.
# ARGV: the three limits (-1: none), the estimate, the two expiries in ms.
ADMIT_SCRIPT = """
local now = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])
local r, t, d = tonumber(now[1] or '0'), tonumber(now[2] or '0'), tonumber(now[3] or '0')
local rl, tl, dl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local estimate = tonumber(ARGV[4])
local cost = math.max(estimate, 1)
if (rl >= 0 and r + 1 > rl) or (tl >= 0 and t + cost > tl) or (dl >= 0 and d + cost > dl) then
  return {0, r, t, d}
end
local adds = {1, estimate, estimate}
local ttls = {ARGV[5], ARGV[5], ARGV[6]}
for i = 1, 3 do
  redis.call('INCRBY', KEYS[i], adds[i])
  if not now[i] then redis.call('PEXPIRE', KEYS[i], ttls[i]) end
end
return {1, r, t, d}
"""

# KEYS: tokens in the admission minute and day; ARGV: the tokens to add.
DEBIT_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""


def _limit(value: int | None) -> int:
    return NO_LIMIT if value is None else value


class RedisQuotaStore:
    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._url = url
        self._prefix = prefix
        # Like the Responses store: a bounded pool that makes a burst wait for a
        # connection (up to the timeout) rather than fail.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        self._redis: redis.Redis = redis.Redis.from_pool(pool)
        self._admit = self._redis.register_script(ADMIT_SCRIPT)
        self._debit = self._redis.register_script(DEBIT_SCRIPT)

    @property
    def location(self) -> str:
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    def _keys(self, app: str, windows: Windows) -> list[str]:
        minute = f"{self._prefix}{app}:m:{windows.minute}"
        return [f"{minute}:r", f"{minute}:t", f"{self._prefix}{app}:d:{windows.day}:t"]

    async def admit(self, app: str, quota: Quota, estimate: int,
                    now: float) -> Admitted | Rejected:
        windows = windows_at(now)
        minute_ttl = math.ceil((seconds_to_minute_end(now) + MINUTE_MARGIN_SECONDS) * 1000)
        day_ttl = math.ceil((seconds_to_day_end(now) + DAY_MARGIN_SECONDS) * 1000)
        args = [_limit(quota.requests_per_minute), _limit(quota.tokens_per_minute),
                _limit(quota.tokens_per_day), estimate, minute_ttl, day_ttl]
        try:
            reply: list[Any] = await self._admit(keys=self._keys(app, windows), args=args)
        except (RedisError, OSError) as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e
        passed, *before = (int(v) for v in reply)
        verdict = admit(quota, Usage(*before), estimate, now)
        if isinstance(verdict, Admitted) != bool(passed):  # the script and admit() differ
            raise QuotaStoreError(f"{self.location}: quota script disagrees with admit()")
        return verdict

    async def debit(self, app: str, windows: Windows, tokens: int) -> None:
        if not tokens:
            return
        keys = self._keys(app, windows)
        try:
            await self._debit(keys=keys[1:], args=[tokens])
        except (RedisError, OSError) as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e

    async def usage(self, app: str, now: float) -> Usage:
        try:
            values = await self._redis.mget(self._keys(app, windows_at(now)))
        except (RedisError, OSError) as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e
        return Usage(*(int(v) if v is not None else 0 for v in values))

    async def close(self) -> None:
        await self._redis.aclose()

"""Quota counters in Redis (redis.asyncio), for replicas sharing one server.

  <prefix><app>:m:<minute>:r   requests in that minute     PEXPIRE: the minute's end + 60 s
  <prefix><app>:m:<minute>:t   tokens in that minute       PEXPIRE: likewise
  <prefix><app>:d:<day>:t      tokens in that UTC day      PEXPIRE: the day's end + 1 h

Admission is one Lua script (atomic on the server, one round trip): it reads the three
counters, makes `core.quota.admit`'s comparisons and, when they pass, adds the request
and its estimate, setting the expiry of a counter it creates. The script answers the
counters as they were before, and `core.quota.admit` over them builds the verdict, so
the details (which limit, retry-after) come from the one pure function.

Admissions run over a connection of their own (`quota_redis_line.ScriptLine`): a lone
admission goes out at once; those waiting while one is on the wire go out together as
one pipeline when it returns. A script the server lost (a restart) is loaded again.
Debits, usage reads and the report use the Responses store's bounded pool. A debit only
touches counters that still exist, so a late correction never leaves a key without
expiry behind; all corrections of one flush are one script call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import redis.asyncio as redis
from redis.exceptions import RedisError

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import (
    Admitted,
    Rejected,
    Usage,
    Windows,
    admit,
    seconds_to_day_end,
    seconds_to_minute_end,
    windows_at,
)
from bastion_edge.state.quota_redis_line import ScriptLine
from bastion_edge.state.quota_store import Correction, QuotaStoreError
from bastion_edge.state.responses_redis import connect, redis_location

PREFIX = "bastion-edge:quota:"
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

# KEYS: per correction, tokens in its admission minute and day; ARGV: its tokens.
DEBIT_SCRIPT = """
for i = 1, #ARGV do
  for k = 2 * i - 1, 2 * i do
    if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('INCRBY', KEYS[k], ARGV[i]) end
  end
end
return 0
"""


def _limit(value: int | None) -> int:
    return NO_LIMIT if value is None else value


class RedisQuotaStore:
    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._url = url
        self._prefix = prefix
        self._redis: redis.Redis = connect(url)  # the Responses store's bounded pool
        self._admit = ScriptLine(self._redis.connection_pool, ADMIT_SCRIPT)  # its own
        self._debit = self._redis.register_script(DEBIT_SCRIPT)

    @property
    def location(self) -> str:
        return redis_location(self._url)

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
            reply = await self._admit(self._keys(app, windows), args)
        except (RedisError, OSError) as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e
        passed, requests, tokens, today = reply  # integers (RESP integer replies)
        verdict = admit(quota, Usage(requests, tokens, today), estimate, now)
        if isinstance(verdict, Admitted) != bool(passed):  # the script and admit() differ
            raise QuotaStoreError(f"{self.location}: quota script disagrees with admit()")
        return verdict

    async def debit(self, corrections: Sequence[Correction]) -> None:
        if not corrections:
            return
        keys = [key for c in corrections for key in self._keys(c.app, c.windows)[1:]]
        try:
            await self._debit(keys=keys, args=[c.tokens for c in corrections])
        except (RedisError, OSError) as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e

    async def usage(self, app: str, now: float) -> Usage:
        try:
            values = await self._redis.mget(self._keys(app, windows_at(now)))
        except (RedisError, OSError) as e:
            raise QuotaStoreError(f"{self.location}: {e}") from e
        return Usage(*(int(v) if v is not None else 0 for v in values))

    async def close(self) -> None:
        await self._admit.close()
        await self._redis.aclose()

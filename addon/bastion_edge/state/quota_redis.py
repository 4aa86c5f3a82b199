"""Quota counters in Redis (redis.asyncio), for replicas sharing one server.

  <prefix><app>:m:<minute>:r   requests in that minute     PEXPIRE: the minute's end + 60 s
  <prefix><app>:m:<minute>:t   tokens in that minute       PEXPIRE: likewise
  <prefix><app>:d:<day>:t      tokens in that UTC day      PEXPIRE: the day's end + 1 h

Admission is one Lua script (atomic on the server, one round trip): it reads the three
counters, makes `core.quota.admit`'s comparisons and, when they pass, adds the request
and its estimate, setting the expiry of a counter it creates. The script answers the
counters as they were before, and `core.quota.admit` over them builds the verdict, so
the details (which limit, retry-after) come from the one pure function.

Admissions waiting at the same time go out together: while one pipeline of scripts is
on the wire, the next ones queue, and are sent as one pipeline when it returns. A
round trip costs the proxy ~100 µs of CPU in redis-py and the kernel; shared by 32
admissions it is ~35 µs each (bench/quota_cost.py), and a lone admission goes out
alone, at once. A script the server lost (a restart) is loaded again. A debit only
touches counters that still exist, so a late correction never leaves a key without
expiry behind; all corrections of one flush are one script call.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

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


Call = tuple[list[str], list[int], "asyncio.Future[list[Any]]"]


class ScriptBatcher:
    """Runs one Lua script for many callers, pipelining those that wait together."""

    def __init__(self, client: redis.Redis, script: str) -> None:
        self._client = client
        self._script = script
        self._sha: str | None = None
        self._waiting: list[Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, keys: list[str], args: list[int]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    replies = await self._run(batch)
                except BaseException as e:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                for (*_, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._sender = None

    async def _run(self, batch: list[Call]) -> list[Any]:
        """The replies in order (an exception for a call that failed on the server).
        Calls answered NOSCRIPT did not run: they are sent again after a reload."""
        replies: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        for _ in range(2):
            if self._sha is None:
                self._sha = str(await self._client.script_load(self._script))
            if len(todo) == 1:
                keys, args, _ = batch[todo[0]]
                try:
                    replies[todo[0]] = await self._client.evalsha(
                        self._sha, len(keys), *keys, *args)
                    return replies
                except NoScriptError:
                    self._sha = None
                    continue
            async with self._client.pipeline(transaction=False) as pipe:
                for i in todo:
                    keys, args, _ = batch[i]
                    pipe.evalsha(self._sha, len(keys), *keys, *args)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            missing = []
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, NoScriptError):
                    missing.append(i)
                else:
                    replies[i] = result
            if not missing:
                return replies
            todo, self._sha = missing, None
        raise RedisError("the quota script could not be loaded")

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()


class RedisQuotaStore:
    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._url = url
        self._prefix = prefix
        self._redis: redis.Redis = connect(url)  # the Responses store's bounded pool
        self._admit = ScriptBatcher(self._redis, ADMIT_SCRIPT)
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
        passed, *before = (int(v) for v in reply)
        verdict = admit(quota, Usage(*before), estimate, now)
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

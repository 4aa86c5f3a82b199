"""The canary's state in Redis (redis.asyncio), for replicas sharing one server.

  <prefix>state                      hash: step, step_started, status, version
  <prefix>counts:<step key>:<side>   hash: requests, errors, judged, agreed
  <prefix>latency:<step key>:<side>  list: the most recent durations (ms)
  <prefix>decisions                  list: JSON decisions, the last MAX_DECISIONS

A transition is one Lua script: it compares the version and, when it still matches,
writes the new state and appends the decision, atomically on the server. Evidence of
past steps expires a day after it was last written (`EVIDENCE_TTL_SECONDS`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.exceptions import RedisError

from bastion_edge.core.canary import (
    MAX_LATENCY_SAMPLES,
    CanaryState,
    Decision,
    SideStats,
    StepStats,
    initial_state,
)
from bastion_edge.state.canary_store import (
    MAX_DECISIONS,
    SIDES,
    CanaryStoreError,
    Observation,
    history_entry,
)

PREFIX = "bastion-edge:canary:"
TIMEOUT_SECONDS = 2.0
EVIDENCE_TTL_SECONDS = 86_400

# KEYS: state, decisions. ARGV: expected version, step, step_started, status, version,
# decision JSON, history length.
TRANSITION_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'version')
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'step_started', ARGV[3], 'status', ARGV[4],
           'version', ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
return 1
"""


class RedisCanaryStore:
    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._url = url
        self._prefix = prefix
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        self._transition = self._redis.register_script(TRANSITION_SCRIPT)

    @property
    def location(self) -> str:
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    def _fail(self, e: Exception) -> CanaryStoreError:
        return CanaryStoreError(f"{self.location}: {e}")

    async def state(self, now: float) -> CanaryState:
        key = self._prefix + "state"
        fresh = initial_state(now)
        try:
            await self._redis.hsetnx(key, "version", fresh.version)  # first caller starts it
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "step", fresh.step)
                pipe.hsetnx(key, "step_started", repr(fresh.step_started))
                pipe.hsetnx(key, "status", fresh.status)
                pipe.hgetall(key)
                *_, raw = await pipe.execute()
        except (RedisError, OSError) as e:
            raise self._fail(e) from e
        values = {k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], raw).items()}
        return CanaryState(int(values["step"]), float(values["step_started"]),
                           values["status"], int(values["version"]))  # type: ignore[arg-type]

    def _side_keys(self, key: str, side: str) -> tuple[str, str]:
        return (f"{self._prefix}counts:{key}:{side}", f"{self._prefix}latency:{key}:{side}")

    async def record(self, key: str, observations: Sequence[Observation]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for side in SIDES:
                    mine = [o for o in observations if o.side == side]
                    if not mine:
                        continue
                    counts, latency = self._side_keys(key, side)
                    pipe.hincrby(counts, "requests", len(mine))
                    pipe.hincrby(counts, "errors", sum(o.failed for o in mine))
                    pipe.hincrby(counts, "judged", sum(o.agreed is not None for o in mine))
                    pipe.hincrby(counts, "agreed", sum(o.agreed is True for o in mine))
                    durations = [repr(o.duration_ms) for o in mine if o.duration_ms is not None]
                    if durations:
                        pipe.rpush(latency, *durations)
                        pipe.ltrim(latency, -MAX_LATENCY_SAMPLES, -1)
                    pipe.expire(counts, EVIDENCE_TTL_SECONDS)
                    pipe.expire(latency, EVIDENCE_TTL_SECONDS)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise self._fail(e) from e

    async def step_stats(self, key: str) -> StepStats:
        sides = {}
        try:
            for side in SIDES:
                counts, latency = self._side_keys(key, side)
                raw = cast(dict[bytes, bytes], await self._redis.hgetall(counts))
                figures = {k.decode(): int(v) for k, v in raw.items()}
                durations = [float(v) for v in await self._redis.lrange(latency, 0, -1)]
                sides[side] = SideStats(
                    figures.get("requests", 0), figures.get("errors", 0), tuple(durations),
                    figures.get("judged", 0), figures.get("agreed", 0))
        except (RedisError, OSError) as e:
            raise self._fail(e) from e
        return StepStats(sides["bastion"], sides["openai"])

    async def transition(self, before: CanaryState, after: CanaryState, decision: Decision,
                         now: float) -> bool:
        try:
            moved = await self._transition(
                keys=[self._prefix + "state", self._prefix + "decisions"],
                args=[before.version, after.step, repr(after.step_started), after.status,
                      after.version, json.dumps(history_entry(decision, now)),
                      MAX_DECISIONS])
        except (RedisError, OSError) as e:
            raise self._fail(e) from e
        return bool(moved)

    async def decisions(self, limit: int = 20) -> list[dict[str, object]]:
        try:
            rows = await self._redis.lrange(self._prefix + "decisions", -limit, -1)
        except (RedisError, OSError) as e:
            raise self._fail(e) from e
        return [json.loads(r) for r in rows]

    async def close(self) -> None:
        await self._redis.aclose()

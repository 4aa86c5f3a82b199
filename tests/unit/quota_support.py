"""What the quota store tests share, and one process hammering a shared store (run with
multiprocessing's spawn start method, so this module must be importable on its own)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import Coroutine, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import Admitted, Rejected
from bastion_edge.state.quota_store import QuotaStore, open_quota_store

NOW = 1_796_618_415.5  # 2026-12-07 04:40:15.5 UTC: 15.5 s into a minute
NEXT_MINUTE = NOW + 60
NEXT_DAY = NOW + 86_400
RPM = Quota(requests_per_minute=3)


@contextlib.contextmanager
def redis_or_skip(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server's URL (tests/e2e/redis_server.py); skips without one."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is missing: apt-get install redis-server")
    from redis_server import running_redis

    with running_redis(workdir) as url:
        yield url


def app_name() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def admit_many(store: QuotaStore, app: str, quota: Quota, estimate: int, count: int,
                     now: float = NOW) -> list[Admitted | Rejected]:
    return [await store.admit(app, quota, estimate, now) for _ in range(count)]

CONCURRENCY = 4  # admissions in flight at once within one process


async def _hammer(location: str, app: str, quota: Quota, estimate: int, attempts: int,
                  now: float, start: Barrier) -> int:
    store = open_quota_store(location)
    try:
        start.wait()
        admitted = 0

        async def one_lane(count: int) -> None:
            nonlocal admitted
            for _ in range(count):
                if isinstance(await store.admit(app, quota, estimate, now), Admitted):
                    admitted += 1

        lanes = [attempts // CONCURRENCY + (i < attempts % CONCURRENCY)
                 for i in range(CONCURRENCY)]
        await asyncio.gather(*(one_lane(n) for n in lanes))
        return admitted
    finally:
        await store.close()


def hammer(location: str, app: str, quota: Quota, estimate: int, attempts: int, now: float,
           start: Barrier, results: Queue[int]) -> None:
    """Put how many of `attempts` admissions were let through into `results`."""
    results.put(asyncio.run(_hammer(location, app, quota, estimate, attempts, now, start)))

"""One process hammering a shared quota store (run by test_quota_store.py and the bench
with multiprocessing's spawn start method, so it must be importable on its own)."""

from __future__ import annotations

import asyncio
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from bastion_edge.core.quota import Admitted, Quota
from bastion_edge.state.quota_store import open_quota_store

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

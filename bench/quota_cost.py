"""Per-app quotas: the CPU one request adds, SQLite and Redis stores side by side with
quotas off, in one run.

    python bench/quota_cost.py [REQUESTS_PER_ROUND] [ROUNDS]

A "request" is what the proxy does per request with a quota: `QuotaGuard.admit` (the
atomic decision and reservation), the `x-ratelimit-*` headers, then `settle` and
`QuotaGuard.debit` with the reported usage (a non-zero correction), plus its share of
`QuotaGuard.flush`, run every FLUSH_EVERY requests (as if a worker served 100 requests
per second with the 1 s flush: a busier worker pays less per request). "off" is the
same loop awaiting a no-op coroutine. Rounds are interleaved (off, sqlite, redis, off,
...) so a busy machine disturbs all three alike.
CPU is this process's (`time.process_time`: the event loop and the SQLite thread);
the redis-server's own CPU is read from `INFO cpu` and reported apart.
`make bench` (bench/run.py, or `--only quota`) puts the figures in
docs/development/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import Admitted, rate_limit_headers, settle
from bastion_edge.state.quota_store import (
    QuotaGuard,
    open_quota_store,
    quota_store_location,
)

REPO = Path(__file__).resolve().parents[1]
QUOTA = Quota(requests_per_minute=10**9, tokens_per_minute=10**12, tokens_per_day=10**15)
ESTIMATE = 356  # prompt + max_tokens
REPORTED = 120  # the usage the upstream reports
TARGET_US = 50.0
FLUSH_EVERY = 100
CONCURRENCY = 32
CONCURRENT = f" c{CONCURRENCY}"

Step = Callable[[], Awaitable[None]]


def guarded_request(guard: QuotaGuard, headers_out: list[int]) -> Step:
    served = 0

    async def step() -> None:
        nonlocal served
        verdict = await guard.admit("bench", QUOTA, ESTIMATE)
        headers_out.append(len(rate_limit_headers(verdict)))
        if isinstance(verdict, Admitted):
            guard.debit("bench", verdict, settle(ESTIMATE, REPORTED, 200))
        served += 1
        if served % FLUSH_EVERY == 0:
            await guard.flush()
    return step


async def nothing() -> None:
    return None


async def one_round(step: Step, requests: int, concurrency: int = 1) -> float:
    """CPU µs per request over `requests` requests, `concurrency` at a time."""
    started = time.process_time()
    if concurrency == 1:
        for _ in range(requests):
            await step()
    else:
        for _ in range(requests // concurrency):
            await asyncio.gather(*(step() for _ in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


def redis_cpu(url: str) -> float:
    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(redis_url: str | None, requests: int, rounds: int
                  ) -> tuple[dict[str, list[float]], float | None]:
    """µs per request for each setup and round, and redis-server's CPU µs per request."""
    outages: list[str] = []
    headers: list[int] = []
    sqlite = QuotaGuard(open_quota_store(quota_store_location("sqlite", Path(
        tempfile.mkdtemp(prefix="quota-bench-")))), "fail_closed", outages.append)
    steps: dict[str, Step] = {"off": nothing, "sqlite": guarded_request(sqlite, headers)}
    guards = [sqlite]
    if redis_url:
        guards.append(QuotaGuard(open_quota_store(redis_url), "fail_closed", outages.append))
        steps["redis"] = guarded_request(guards[-1], headers)
    samples: dict[str, list[float]] = {
        f"{name}{suffix}": [] for suffix in ("", CONCURRENT) for name in steps}
    for step in steps.values():  # warm up: connections, prepared statements, script load
        await one_round(step, 200)
    server_cpu = 0.0
    for _ in range(rounds):
        for concurrency, suffix in ((1, ""), (CONCURRENCY, CONCURRENT)):
            for name, step in steps.items():
                before = redis_cpu(redis_url) if name == "redis" and redis_url else 0.0
                samples[name + suffix].append(await one_round(step, requests, concurrency))
                if name == "redis" and redis_url:
                    server_cpu += redis_cpu(redis_url) - before
    for guard in guards:
        await guard.store.close()
    if outages:
        raise RuntimeError(f"the store failed during the bench: {outages}")
    per_request_server = server_cpu / (2 * rounds * requests) * 1e6 if redis_url else None
    return samples, per_request_server


def describe(samples: dict[str, list[float]], server_us: float | None, requests: int) -> str:
    lines = [f"quotas, CPU per request (admit + headers + debit, a flush every "
             f"{FLUSH_EVERY}), {len(samples['off'])} interleaved rounds of {requests} "
             f"requests, one at a time and {CONCURRENCY} at a time (c{CONCURRENCY}):"]
    for name, values in samples.items():
        median = statistics.median(values)
        off = statistics.median(samples["off" + (CONCURRENT if name.endswith(CONCURRENT)
                                                 else "")])
        added = "" if name.startswith("off") else \
            f", added {median - off:.1f} us ({'meets' if median - off < TARGET_US else 'misses'}" \
            f" the {TARGET_US:.0f} us target)"
        lines.append(f"  {name:10} median {median:.1f} us (min {min(values):.1f}, "
                     f"max {max(values):.1f}){added}")
    if server_us is not None:
        lines.append(f"  redis-server's own CPU: {server_us:.1f} us per request "
                     f"(another process, not counted above)")
    return "\n".join(lines)


def run_bench(requests: int, rounds: int) -> tuple[dict[str, list[float]], float | None]:
    """The measurement with a throwaway redis-server (SQLite alone without one)."""
    if shutil.which("redis-server") is None:
        return asyncio.run(measure(None, requests, rounds))
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    from redis_server import running_redis

    with tempfile.TemporaryDirectory() as workdir, running_redis(Path(workdir)) as url:
        return asyncio.run(measure(url, requests, rounds))


def report(requests: int, rounds: int) -> str:
    """The figures as Markdown, for docs/development/benchmarks.md."""
    samples, server_us = run_bench(requests, rounds)
    missing = "" if "redis" in samples else " (no redis-server here: SQLite only)"
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M')} UTC on {os.cpu_count()} cores, one "
            f"run{missing} (`python bench/quota_cost.py`):\n\n```text\n"
            f"{describe(samples, server_us, requests)}\n```")


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    samples, server_us = run_bench(requests, rounds)
    print(describe(samples, server_us, requests))


if __name__ == "__main__":
    main()

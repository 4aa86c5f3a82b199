"""Quota counter stores for real: SQLite in tmp_path, Redis in a throwaway redis-server;
two processes sharing one store admit exactly the quota."""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import sqlite3
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from quota_hammer import hammer
from redis.asyncio import Redis

from bastion_edge.core.quota import (
    Admitted,
    Quota,
    Rejected,
    Unavailable,
    Usage,
    admit,
    windows_at,
)
from bastion_edge.state import quota_sqlite
from bastion_edge.state.quota_redis import RedisQuotaStore
from bastion_edge.state.quota_sqlite import SqliteQuotaStore
from bastion_edge.state.quota_store import (
    Correction,
    QuotaGuard,
    QuotaStore,
    QuotaStoreError,
    open_quota_store,
    quota_store_location,
)

NOW = 1_796_618_415.5  # 15.5 s into a minute
NEXT_MINUTE = NOW + 60
NEXT_DAY = NOW + 86_400
RPM = Quota(requests_per_minute=3)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is missing: apt-get install redis-server")
    from redis_server import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        # A fresh key prefix per test is not needed: each test uses its own app name.
        return str(request.getfixturevalue("redis_url"))
    return quota_store_location("sqlite", tmp_path)


def app_name() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def admit_many(store: QuotaStore, app: str, quota: Quota, estimate: int, count: int,
                     now: float = NOW) -> list[Admitted | Rejected]:
    return [await store.admit(app, quota, estimate, now) for _ in range(count)]


def test_store_admits_the_quota_then_refuses_until_the_next_minute(location: str) -> None:
    async def scenario() -> None:
        store = open_quota_store(location)
        app = app_name()
        verdicts = await admit_many(store, app, RPM, 10, 5)
        assert [type(v) for v in verdicts] == [Admitted] * 3 + [Rejected] * 2
        assert await store.usage(app, NOW) == Usage(3, 30, 30)
        assert isinstance(await store.admit(app, RPM, 10, NEXT_MINUTE), Admitted)
        assert await store.usage(app, NEXT_MINUTE) == Usage(1, 10, 40)
        await store.close()

    run(scenario())


def test_debit_corrects_the_estimate_in_the_admission_windows(location: str) -> None:
    async def scenario() -> None:
        store = open_quota_store(location)
        app = app_name()
        quota = Quota(tokens_per_minute=1000, tokens_per_day=10_000)
        first = await store.admit(app, quota, 600, NOW)
        assert isinstance(first, Admitted)
        assert isinstance(await store.admit(app, quota, 600, NOW), Rejected)
        await store.debit([Correction(app, first.windows, 150 - 600)])  # reported: 150
        assert await store.usage(app, NOW) == Usage(1, 150, 150)
        assert isinstance(await store.admit(app, quota, 600, NOW), Admitted)
        await store.close()

    run(scenario())


def test_debit_after_the_window_ended_only_reaches_the_day(location: str) -> None:
    async def scenario() -> None:
        store = open_quota_store(location)
        app = app_name()
        quota = Quota(tokens_per_day=10_000)
        first = await store.admit(app, quota, 100, NOW)
        assert isinstance(first, Admitted)
        await store.admit(app, quota, 1, NEXT_MINUTE)  # the next minute starts afresh
        await store.debit([Correction(app, first.windows, 50)])
        assert (await store.usage(app, NEXT_MINUTE)).tokens_today == 151
        await store.close()

    run(scenario())


def test_days_are_counted_apart(location: str) -> None:
    async def scenario() -> None:
        store = open_quota_store(location)
        app = app_name()
        quota = Quota(tokens_per_day=100)
        assert isinstance(await store.admit(app, quota, 100, NOW), Admitted)
        assert isinstance(await store.admit(app, quota, 1, NOW + 3600), Rejected)
        assert isinstance(await store.admit(app, quota, 100, NEXT_DAY), Admitted)
        await store.close()

    run(scenario())


def test_apps_are_counted_apart(location: str) -> None:
    async def scenario() -> None:
        store = open_quota_store(location)
        limited, other = app_name(), app_name()
        await admit_many(store, limited, RPM, 0, 3)
        assert isinstance(await store.admit(limited, RPM, 0, NOW), Rejected)
        assert isinstance(await store.admit(other, RPM, 0, NOW), Admitted)
        await store.close()

    run(scenario())


@pytest.mark.parametrize(("quota", "before", "estimate"), [
    (Quota(3, 100, 1000), Usage(2, 50, 50), 50),
    (Quota(3, 100, 1000), Usage(3, 0, 0), 0),
    (Quota(None, 100, None), Usage(0, 100, 100), 0),
    (Quota(None, 100, None), Usage(0, 99, 99), 1),
    (Quota(None, None, 1000), Usage(0, 0, 990), 11),
    (Quota(None, None, 1000), Usage(0, 0, 990), 10),
    (Quota(None, 10, None), Usage(0, 0, 0), 11),
])
def test_redis_script_agrees_with_admit(redis_url: str, quota: Quota, before: Usage,
                                        estimate: int) -> None:
    """The Lua script makes admit()'s comparisons: seeded to `before`, it lets a request
    through exactly when admit() does (a disagreement raises QuotaStoreError)."""
    async def scenario() -> bool:
        store = RedisQuotaStore(redis_url)
        app = app_name()
        client = Redis.from_url(redis_url)
        minute, day = int(NOW // 60), int(NOW // 86400)
        prefix = f"bastion-edge:quota:{app}"
        await client.set(f"{prefix}:m:{minute}:r", before.requests_this_minute)
        await client.set(f"{prefix}:m:{minute}:t", before.tokens_this_minute)
        await client.set(f"{prefix}:d:{day}:t", before.tokens_today)
        await client.aclose()
        verdict = await store.admit(app, quota, estimate, NOW)
        await store.close()
        return isinstance(verdict, Admitted)

    assert run(scenario()) == isinstance(admit(quota, before, estimate, NOW), Admitted)


def test_redis_counters_expire(redis_url: str) -> None:
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        app = app_name()
        await store.admit(app, RPM, 5, NOW)
        client = Redis.from_url(redis_url)
        found = await client.keys(f"bastion-edge:quota:{app}:*")
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in found)
        ttls = {k: await client.pttl(k) for k in keys}
        await client.aclose()
        await store.close()
        minute_ms, day_ms = (44.5 + 60) * 1000, (86400 - 16815.5 + 3600) * 1000
        assert len(keys) == 3
        for key, ttl in ttls.items():
            assert 0 < ttl <= (day_ms if ":d:" in key else minute_ms)

    run(scenario())


def test_concurrent_admissions_are_pipelined_and_exact(redis_url: str) -> None:
    """Admissions waiting together go out as one pipeline; each is still decided alone."""
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        app = app_name()
        quota = Quota(requests_per_minute=20)
        verdicts = await asyncio.gather(*(store.admit(app, quota, 2, NOW) for _ in range(50)))
        assert sum(isinstance(v, Admitted) for v in verdicts) == 20
        assert await store.usage(app, NOW) == Usage(20, 40, 40)
        await store.close()

    run(scenario())


def test_redis_reloads_a_script_the_server_lost(redis_url: str) -> None:
    """After a server restart (SCRIPT FLUSH here) lone and pipelined admissions go on,
    each counted once."""
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        client = Redis.from_url(redis_url)
        app = app_name()
        quota = Quota(requests_per_minute=100)
        await store.admit(app, quota, 1, NOW)
        await client.script_flush()
        await store.admit(app, quota, 1, NOW)
        await client.script_flush()
        await asyncio.gather(*(store.admit(app, quota, 1, NOW) for _ in range(5)))
        assert await store.usage(app, NOW) == Usage(7, 7, 7)
        await client.aclose()
        await store.close()

    run(scenario())


def test_sqlite_keeps_one_row_per_app(tmp_path: Path) -> None:
    path = tmp_path / "quotas.sqlite3"

    async def scenario() -> None:
        store = SqliteQuotaStore(path)
        for i in range(3):
            await store.admit("a", RPM, 1, NOW + 60 * i)
        await store.admit("a", RPM, 1, NEXT_DAY + 86_400)
        await store.admit("b", RPM, 1, NOW)
        await store.close()

    run(scenario())
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT app, requests, day_tokens FROM quota_usage").fetchall()
    assert sorted(rows) == [("a", 1, 1), ("b", 1, 1)]


def test_sqlite_checkpoints_the_wal_from_its_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never checkpoints; the flush does, every CHECKPOINT_WRITES
    admissions, so the main file (without its -wal) holds the counts."""
    monkeypatch.setattr(quota_sqlite, "CHECKPOINT_WRITES", 3)
    path = tmp_path / "quotas.sqlite3"

    def main_file_rows() -> list[tuple[int, int]]:
        copy = tmp_path / "copy.sqlite3"
        shutil.copyfile(path, copy)
        with sqlite3.connect(copy) as db:
            try:
                return db.execute("SELECT requests, day_tokens FROM quota_usage").fetchall()
            except sqlite3.OperationalError:  # not even the schema is in the main file
                return []

    async def scenario() -> None:
        store = SqliteQuotaStore(path)
        windows = windows_at(NOW)
        for _ in range(2):
            await store.admit("a", RPM, 10, NOW)
        await store.debit([Correction("a", windows, -1)])
        assert main_file_rows() == []
        await store.admit("a", RPM, 10, NOW)
        await store.debit([Correction("a", windows, -1)])
        assert main_file_rows() == [(3, 28)]
        await store.close()

    run(scenario())


def test_a_lagging_clock_counts_in_the_newer_window(location: str) -> None:
    """A process whose clock is behind another's adds to the newer minute instead of
    restarting its own (SQLite: one row per app; Redis: the older key, still live)."""
    async def scenario() -> None:
        store = open_quota_store(location)
        app = app_name()
        await admit_many(store, app, RPM, 1, 2, NEXT_MINUTE)
        late = await store.admit(app, RPM, 1, NOW)
        assert isinstance(late, Admitted)
        if location.startswith("sqlite"):
            assert await store.usage(app, NEXT_MINUTE) == Usage(3, 3, 3)
        await store.close()

    run(scenario())


def test_a_busy_sqlite_admits_through_its_thread(tmp_path: Path) -> None:
    """Another process holding the write lock: the admission waits on the store's
    thread (the loop's connection never waits) and still counts."""
    path = tmp_path / "quotas.sqlite3"

    async def scenario() -> None:
        store = SqliteQuotaStore(path)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, other.execute, "COMMIT")
        assert isinstance(await store.admit("a", RPM, 1, NOW), Admitted)
        other.close()
        assert await store.usage("a", NOW) == Usage(1, 1, 1)
        await store.close()

    run(scenario())


def test_sqlite_file_is_private_in_the_confdir(tmp_path: Path) -> None:
    location = quota_store_location("sqlite", tmp_path)
    assert location == f"sqlite://{(tmp_path / 'quotas.sqlite3').resolve()}"
    run(open_quota_store(location).close())
    assert (tmp_path / "quotas.sqlite3").stat().st_mode & 0o777 == 0o600


def test_unreachable_redis_is_a_store_error() -> None:
    async def scenario() -> None:
        store = RedisQuotaStore("redis://127.0.0.1:1/0")
        with pytest.raises(QuotaStoreError, match=r"127\.0\.0\.1:1"):
            await store.admit("a", RPM, 1, NOW)
        await store.close()

    run(scenario())


def test_a_failed_pipeline_fails_each_waiting_admission() -> None:
    """Every admission waiting on a pipeline that fails gets the store error (none is
    left hanging), and the next ones are sent again rather than queued forever."""
    async def scenario() -> None:
        store = RedisQuotaStore("redis://127.0.0.1:1/0")
        for _ in range(2):
            results = await asyncio.gather(
                *(store.admit("a", RPM, 1, NOW) for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, QuotaStoreError) for r in results), results
        await store.close()

    run(scenario())


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_guard_answers_an_outage_with_its_mode_and_counts_it(mode: str) -> None:
    outages: list[str] = []

    async def scenario() -> None:
        guard = QuotaGuard(RedisQuotaStore("redis://127.0.0.1:1/0"), mode,  # type: ignore[arg-type]
                           outages.append, clock=lambda: NOW)
        verdict = await guard.admit("a", RPM, 5)
        if mode == "fail_open":
            assert isinstance(verdict, Admitted) and verdict.unmetered
            guard.debit("a", verdict, 10)  # unmetered: nothing to correct
            assert guard.pending == 0
        else:
            assert isinstance(verdict, Unavailable)
        guard.debit("a", Admitted(RPM, Usage(1, 5, 5), 5, windows_at(NOW), NOW), 10)
        assert not await guard.flush()
        assert guard.pending == 1  # kept for the next flush
        await guard.store.close()

    run(scenario())
    assert outages == ["admit", "debit"]


def test_guard_drops_failed_corrections_once_their_day_is_over() -> None:
    clock = [NOW]

    async def scenario() -> None:
        guard = QuotaGuard(RedisQuotaStore("redis://127.0.0.1:1/0"), "fail_open",
                           lambda op: None, clock=lambda: clock[0])
        guard.debit("a", Admitted(RPM, Usage(1, 5, 5), 5, windows_at(NOW), NOW), 10)
        clock[0] = NEXT_DAY
        assert not await guard.flush()
        assert guard.pending == 0
        await guard.store.close()

    run(scenario())


def test_guard_passes_verdicts_through_and_flushes_corrections(location: str) -> None:
    async def scenario() -> None:
        guard = QuotaGuard(open_quota_store(location), "fail_closed",
                           lambda op: pytest.fail(f"no outage expected, got {op}"),
                           clock=lambda: NOW)
        app = app_name()
        verdicts = [await guard.admit(app, RPM, 10) for _ in range(4)]
        assert [type(v) for v in verdicts] == [Admitted] * 3 + [Rejected]
        for verdict in verdicts[:3]:
            assert isinstance(verdict, Admitted)
            guard.debit(app, verdict, -4)
        assert guard.pending == 1  # summed per app and window
        assert await guard.store.usage(app, NOW) == Usage(3, 30, 30)
        assert await guard.flush()
        assert guard.pending == 0
        assert await guard.store.usage(app, NOW) == Usage(3, 18, 18)
        await guard.store.close()

    run(scenario())


def test_admit_when_possible_waits_for_the_next_window(tmp_path: Path) -> None:
    """A batch line over its app's quota waits until the window has room instead of
    failing (an injected clock and sleep: no waiting in the test)."""
    clock = [NOW]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    async def scenario() -> None:
        guard = QuotaGuard(SqliteQuotaStore(tmp_path / "q.sqlite3"), "fail_open",
                           lambda op: None, clock=lambda: clock[0])
        quota = Quota(requests_per_minute=2, tokens_per_minute=100)
        verdicts = [await guard.admit_when_possible("batch-app", quota, 10, NEXT_DAY, sleep)
                    for _ in range(3)]
        assert all(isinstance(v, Admitted) for v in verdicts)
        assert slept == [pytest.approx(44.5)]
        too_large = await guard.admit_when_possible("batch-app", quota, 500, NEXT_DAY, sleep)
        assert isinstance(too_large, Rejected) and too_large.retry_after is None
        await guard.admit("batch-app", quota, 10)  # the second of this minute: it is full
        late = await guard.admit_when_possible("batch-app", quota, 10, clock[0] + 5, sleep)
        assert isinstance(late, Rejected)  # gave up at the deadline
        assert slept[-1] == pytest.approx(5)
        await guard.store.close()

    run(scenario())


@pytest.mark.parametrize(("quota", "estimate", "expected"), [
    (Quota(requests_per_minute=40), 1, 40),
    (Quota(tokens_per_minute=1000), 30, 33),
])
def test_two_processes_sharing_a_store_admit_exactly_the_quota(
        location: str, quota: Quota, estimate: int, expected: int) -> None:
    """Admission and reservation are one atomic step in the store, so no process ever
    admits on a stale count: exactly the quota, not quota + requests in flight."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    results = spawn.Queue()
    app = app_name()
    workers = [spawn.Process(target=hammer, args=(location, app, quota, estimate, 60, NOW,
                                                  start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert sum(counts) == expected, counts

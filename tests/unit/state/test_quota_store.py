"""Both quota counter stores against one contract (SQLite in tmp_path, Redis in a
throwaway redis-server), the outage guard, and two processes sharing one store."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from quota_support import (
    NEXT_DAY,
    NEXT_MINUTE,
    NOW,
    RPM,
    admit_many,
    app_name,
    hammer,
    redis_or_skip,
    run,
)

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import Admitted, Rejected, Unavailable, Usage, windows_at
from bastion_edge.state.quota_redis import RedisQuotaStore
from bastion_edge.state.quota_sqlite import SqliteQuotaStore
from bastion_edge.state.quota_store import (
    Correction,
    QuotaGuard,
    open_quota_store,
    quota_store_location,
)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":  # no key prefix per test: each uses its own app name
        return str(request.getfixturevalue("redis_url"))
    return quota_store_location("sqlite", tmp_path)


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

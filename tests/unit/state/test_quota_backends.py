"""What each quota store does its own way: the Redis script, expiry and pipelining;
the SQLite row layout, checkpoints and lock fallback."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from quota_support import NOW, RPM, app_name, redis_or_skip, run
from redis.asyncio import Redis

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import Admitted, Usage, admit, windows_at
from bastion_edge.state import quota_sqlite
from bastion_edge.state.quota_redis import RedisQuotaStore
from bastion_edge.state.quota_sqlite import SqliteQuotaStore
from bastion_edge.state.quota_store import (
    Correction,
    QuotaStoreError,
    open_quota_store,
    quota_store_location,
)

NEXT_DAY = NOW + 86_400

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


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

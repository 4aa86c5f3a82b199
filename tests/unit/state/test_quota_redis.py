"""The Redis quota store's admission line (state/quota_redis_line.py): a connection of
its own, one deadline per round trip, a caller that is cancelled on the wire, auth and
TLS taken from the URL like the pool's. Against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quota_support import NOW, app_name, redis_or_skip, run
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.quota import Admitted, Usage
from bastion_edge.state.quota_redis import RedisQuotaStore
from bastion_edge.state.quota_store import QuotaStoreError
from bastion_edge.state.responses_redis import MAX_CONNECTIONS

QUOTA = Quota(requests_per_minute=1000)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


def test_admissions_do_not_wait_for_the_pool(redis_url: str) -> None:
    """Admissions have their own connection: with every pooled connection taken (a
    burst of Responses writes, debits), an admission still goes through at once."""
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        pool = store._redis.connection_pool
        taken = [await pool.get_connection() for _ in range(MAX_CONNECTIONS)]
        app = app_name()
        assert isinstance(await store.admit(app, QUOTA, 1, NOW), Admitted)
        for connection in taken:
            await pool.release(connection)
        assert await store.usage(app, NOW) == Usage(1, 1, 1)
        await store.close()

    run(scenario())


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that reads whatever it is sent and never answers."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_a_server_that_never_answers_is_a_store_error() -> None:
    """No reply within the timeout: the admission fails (fail_open/fail_closed then
    apply), and so do those queued behind it; none hangs."""
    async def scenario() -> None:
        async with silent_server() as url:
            store = RedisQuotaStore(url)
            store._admit.timeout = 0.2
            results = await asyncio.gather(
                *(store.admit("a", QUOTA, 1, NOW) for _ in range(3)), return_exceptions=True)
            assert all(isinstance(r, QuotaStoreError) for r in results), results
            assert "no reply within 0.2 s" in str(results[0])
            await store.close()

    run(scenario())


@pytest.mark.timeout(60)
def test_a_paused_server_times_out_then_admissions_go_on(redis_url: str) -> None:
    """A server that stalls (CLIENT PAUSE) makes the admission on the wire fail at its
    deadline; the line connects again and the next admissions are counted."""
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        store._admit.timeout = 0.2
        other = Redis.from_url(redis_url)
        app = app_name()
        assert isinstance(await store.admit(app, QUOTA, 1, NOW), Admitted)
        await other.client_pause(5_000, all=False)  # writes and scripts wait
        with pytest.raises(QuotaStoreError, match="no reply"):
            await store.admit(app_name(), QUOTA, 1, NOW)
        await other.client_unpause()
        assert isinstance(await store.admit(app, QUOTA, 1, NOW), Admitted)
        assert await store.usage(app, NOW) == Usage(2, 2, 2)
        await other.aclose()
        await store.close()

    run(scenario())


def test_a_killed_connection_is_replaced(redis_url: str) -> None:
    """The server drops the line's connection (CLIENT KILL, a restart): at most the
    admission that meets the dead socket fails, and the line connects again."""
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        other = Redis.from_url(redis_url)
        app = app_name()
        await store.admit(app, QUOTA, 1, NOW)
        await other.client_kill_filter(_type="normal", skipme=True)
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(await store.admit(app, QUOTA, 1, NOW))
            except QuotaStoreError as e:
                outcomes.append(e)
        assert all(isinstance(o, Admitted) for o in outcomes[1:]), outcomes
        admitted = 1 + sum(isinstance(o, Admitted) for o in outcomes)
        assert await store.usage(app, NOW) == Usage(admitted, admitted, admitted)
        await other.aclose()
        await store.close()

    run(scenario())


def test_a_caller_cancelled_on_the_wire_leaves_the_line_working(redis_url: str) -> None:
    """The first caller sends its own admission; if it is cancelled (its client went
    away) while on the wire, those queued behind it are still sent and answered."""
    async def scenario() -> None:
        store = RedisQuotaStore(redis_url)
        app = app_name()
        await store.admit(app, QUOTA, 1, NOW)  # connected
        first = asyncio.create_task(store.admit(app, QUOTA, 1, NOW))
        await asyncio.sleep(0)  # it is on the wire now
        queued = [asyncio.create_task(store.admit(app, QUOTA, 1, NOW)) for _ in range(4)]
        await asyncio.sleep(0)
        first.cancel()
        verdicts = await asyncio.gather(*queued)
        assert all(isinstance(v, Admitted) for v in verdicts)
        assert isinstance(await store.admit(app, QUOTA, 1, NOW), Admitted)
        requests = (await store.usage(app, NOW)).requests_this_minute
        assert requests in (6, 7)  # the cancelled one may have run on the server
        await store.close()

    run(scenario())


def test_auth_comes_from_the_url(tmp_path: Path) -> None:
    """The line logs in with the URL's password as the pool does; a wrong one is a
    store error, not a hang."""
    async def scenario(url: str) -> None:
        admin = Redis.from_url(url)
        await admin.config_set("requirepass", "s3cret")
        authed = url.replace("redis://", "redis://:s3cret@")
        store = RedisQuotaStore(authed)
        assert isinstance(await store.admit(app_name(), QUOTA, 1, NOW), Admitted)
        await store.close()
        wrong = RedisQuotaStore(url.replace("redis://", "redis://:wrong@"))
        with pytest.raises(QuotaStoreError):
            await wrong.admit(app_name(), QUOTA, 1, NOW)
        await wrong.close()
        await admin.aclose()

    with redis_or_skip(tmp_path) as url:
        run(scenario(url))


def test_tls_and_credentials_are_the_pools() -> None:
    """rediss:// gives the line a TLS connection with the URL's user, password and db,
    like the pool's (no server needed: nothing connects before the first admission)."""
    store = RedisQuotaStore("rediss://user:pw@redis.internal:6380/3")
    line = store._admit._connection
    assert isinstance(line, SSLConnection)
    assert (line.host, line.port, line.db) == ("redis.internal", 6380, 3)
    assert (line.username, line.password) == ("user", "pw")
    assert store._admit.timeout == store._redis.connection_pool.connection_kwargs[
        "socket_timeout"]
    assert line.socket_timeout is None  # the line's own deadline bounds a round trip

"""Both stores against the same contract; SQLite in tmp_path, Redis in a real redis-server."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from redis_server import running_redis

from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.records import StoredResponse
from bastion_edge.state.responses_redis import RedisStore
from bastion_edge.state.responses_sqlite import SqliteStore
from bastion_edge.state.responses_store import (
    ResponseStore,
    Retention,
    StoreError,
    store_location,
)

KEEP = Retention(ttl_seconds=3600, max_responses=1000)


def record(rid: str, partition: str = "app", ancestors: tuple[str, ...] = (),
           text: str = "hello") -> StoredResponse:
    return StoredResponse(
        id=rid, partition=partition, created_at=1.0,
        previous_response_id=ancestors[-1] if ancestors else None, ancestors=ancestors,
        input_items=({"role": "user", "content": text},), input_item_ids=("msg_1",),
        response={"id": rid, "object": "response", "metadata": {"k": "v"},
                  "output": [{"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": f"re: {text}"}]}]})


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


class StoreFactory:
    """Makes stores of one kind that share a fake clock; `advance` lets time pass.

    SQLite expires by its clock; Redis expires keys on its own clock, so for Redis
    `advance` also shortens every key's remaining TTL by the same amount (a key whose
    TTL runs out is deleted, exactly what Redis does when it expires one).
    """

    expiring = "r:"  # the keys whose TTL `advance` shortens

    def __init__(self, kind: str, path: Path, redis_url: str | None) -> None:
        self.kind, self.path, self.redis_url = kind, path, redis_url
        self.prefix = f"test:{uuid.uuid4().hex}:"
        self.now = 1_000_000.0

    def clock(self) -> float:
        return self.now

    def __call__(self, retention: Retention = KEEP,
                 cipher: BodyCipher | None = None) -> ResponseStore:
        if self.kind == "sqlite":
            return SqliteStore(self.path, retention, cipher or BodyCipher(), clock=self.clock)
        assert self.redis_url is not None
        return RedisStore(self.redis_url, retention, cipher or BodyCipher(), clock=self.clock,
                          prefix=self.prefix)

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.redis_url is None:
            return
        client = Redis.from_url(self.redis_url)
        try:
            async for key in client.scan_iter(match=f"{self.prefix}{self.expiring}*"):
                left = await client.pttl(key)
                if left >= 0:
                    await client.pexpire(key, left - int(seconds * 1000))  # <= 0 deletes
        finally:
            await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return StoreFactory(request.param, tmp_path / "responses.sqlite3", url)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_roundtrip_partitioned_and_deleted(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        try:
            await store.put(record("resp_1", text="naïve ☃"))
            got = await store.get("app", "resp_1")
            assert got == record("resp_1", text="naïve ☃")
            assert await store.get("other-app", "resp_1") is None
            assert await store.get_many("app", ["resp_1", "resp_x"]) == {"resp_1": got}
            assert await store.delete("other-app", "resp_1") is False
            assert await store.delete("app", "resp_1") is True
            assert await store.get("app", "resp_1") is None
            assert await store.delete("app", "resp_1") is False
        finally:
            await store.close()

    run(scenario())


def test_size_cap_evicts_least_recently_touched(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store(Retention(ttl_seconds=None, max_responses=3))
        try:
            for rid in ("r1", "r2", "r3"):
                assert await store.put(record(rid)) == 0
                await make_store.advance(1)
            assert await store.put(record("r4", ancestors=("r1",))) == 1  # r1 touched: r2 goes
            found = await store.get_many("app", ["r1", "r2", "r3", "r4"])
            assert sorted(found) == ["r1", "r3", "r4"]
        finally:
            await store.close()

    run(scenario())


def test_expired_records_are_gone_and_a_new_turn_renews_its_chain(
    make_store: StoreFactory
) -> None:
    async def scenario() -> None:
        store = make_store(Retention(ttl_seconds=0.6, max_responses=None))
        try:
            await store.put(record("r1"))
            await store.put(record("lonely"))
            await make_store.advance(0.4)
            await store.put(record("r2", ancestors=("r1",)))
            await make_store.advance(0.4)  # r1 would have expired at 0.6 without the renewal
            assert sorted(await store.get_many("app", ["r1", "r2", "lonely"])) == ["r1", "r2"]
            await make_store.advance(0.7)
            assert await store.get_many("app", ["r1", "r2"]) == {}
            await store.purge_expired()
        finally:
            await store.close()

    run(scenario())


def test_concurrent_writes_all_land(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        try:
            await asyncio.gather(*(store.put(record(f"r{i}")) for i in range(200)))
            found = await store.get_many("app", [f"r{i}" for i in range(200)])
            assert len(found) == 200
        finally:
            await store.close()

    run(scenario())


def test_encrypted_at_rest_and_keys_rotate(make_store: StoreFactory) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()

    async def scenario() -> None:
        store = make_store(cipher=BodyCipher((old,)))
        await store.put(record("secret", text="the password is swordfish"))
        await store.close()
        rotated = make_store(cipher=BodyCipher((new, old)))
        try:
            got = await rotated.get("app", "secret")
            assert got is not None and got.input_items[0]["content"].endswith("swordfish")
        finally:
            await rotated.close()
        keyless = make_store()
        try:
            with pytest.raises(StoreError, match="encrypted"):
                await keyless.get("app", "secret")
        finally:
            await keyless.close()

    run(scenario())


def test_sqlite_file_is_private_wal_and_opaque_when_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "state" / "responses.sqlite3"
    cipher = BodyCipher((Fernet.generate_key(),))

    async def scenario() -> None:
        store = SqliteStore(path, KEEP, cipher)
        await store.put(record("r1", text="swordfish"))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(f"{path}-wal").st_mode) == 0o600
        await store.close()

    run(scenario())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        (body,) = db.execute("SELECT body FROM responses").fetchone()
    assert b"swordfish" not in body


def test_sqlite_expiry_follows_its_clock(tmp_path: Path) -> None:
    now = [1000.0]

    async def scenario() -> None:
        store = SqliteStore(tmp_path / "r.sqlite3", Retention(60, None), BodyCipher(),
                            clock=lambda: now[0])
        await store.put(record("r1"))
        now[0] += 59
        assert await store.get("app", "r1") is not None
        now[0] += 2
        assert await store.get("app", "r1") is None
        assert await store.purge_expired() == 1
        await store.close()

    run(scenario())


def test_unreachable_redis_is_a_store_error() -> None:
    async def scenario() -> None:
        store = RedisStore("redis://127.0.0.1:1/0", KEEP, BodyCipher())
        try:
            with pytest.raises(StoreError):
                await store.get("app", "r1")
            with pytest.raises(StoreError):
                await store.put(record("r1"))
        finally:
            await store.close()

    run(asyncio.wait_for(scenario(), 30))  # refused at once, not retried forever


def test_store_location_forms(tmp_path: Path) -> None:
    assert store_location("sqlite", tmp_path) == f"sqlite://{tmp_path / 'responses.sqlite3'}"
    assert store_location("redis://r:6379/2", tmp_path) == "redis://r:6379/2"
    with pytest.raises(ValueError):
        store_location("memcached://x", tmp_path)


def test_cipher_keys_come_from_the_environment() -> None:
    key = Fernet.generate_key().decode()
    assert BodyCipher.from_env(None, {}).encrypts is False
    assert BodyCipher.from_env("K", {"K": f"{key}, {key}"}).encrypts
    with pytest.raises(CipherError, match=r"\$K is not set"):
        BodyCipher.from_env("K", {})
    with pytest.raises(CipherError, match="not a Fernet key"):
        BodyCipher.from_env("K", {"K": "hunter2"})


def test_items_are_indexed_by_id_for_item_references(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        try:
            first = record("resp_1")
            output = [{"id": "msg_out_1", "type": "message", "role": "assistant",
                       "content": [{"type": "output_text", "text": "hi"}]},
                      {"id": "fc_1", "type": "function_call", "call_id": "call_1",
                       "name": "f", "arguments": "{}"}]
            first = StoredResponse(**{**{f: getattr(first, f) for f in first.__slots__},
                                      "response": {**first.response, "output": output}})
            await store.put(first)
            second = StoredResponse(
                id="resp_2", partition="app", created_at=2.0, previous_response_id=None,
                ancestors=(), input_items=({"type": "item_reference", "id": "msg_out_1"},),
                input_item_ids=("msg_out_1",), response={"id": "resp_2", "object": "response"})
            await store.put(second)  # a reference is not an item: msg_out_1 stays resp_1's
            found = await store.responses_holding("app", ["msg_1", "msg_out_1", "fc_1", "nope"])
            assert found == {"msg_1": "resp_1", "msg_out_1": "resp_1", "fc_1": "resp_1"}
            assert await store.responses_holding("other-app", ["msg_out_1"]) == {}
            assert await store.delete("app", "resp_1")
            gone = await store.responses_holding("app", ["msg_out_1"])
            assert not await store.get_many("app", list(gone.values()))
        finally:
            await store.close()

    run(scenario())

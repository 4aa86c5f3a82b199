"""Both conversation stores against one contract: SQLite in tmp_path (the Responses
file, beside its tables), Redis in a real redis-server."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from bastion_edge.core.conversations import Conversation
from bastion_edge.state.conversation_redis import RedisConversations
from bastion_edge.state.conversation_store import (
    ConversationStore,
    SqliteConversations,
    open_conversation_store,
)
from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.records import StoredResponse
from bastion_edge.state.responses_sqlite import SqliteStore
from bastion_edge.state.responses_store import Retention, StoreError
from unit.state.test_stores import KEEP, StoreFactory, redis_url, run

__all__ = ["redis_url"]  # the module's redis-server fixture, shared


def item(item_id: str, text: str = "hello") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


class Factory(StoreFactory):
    """Conversation stores sharing a fake clock (see StoreFactory)."""

    expiring = "c"  # c:, ci:, co:

    def __call__(self, retention: Retention = KEEP,  # type: ignore[override]
                 cipher: BodyCipher | None = None) -> ConversationStore:
        if self.kind == "sqlite":
            return SqliteConversations(self.path, retention, cipher or BodyCipher(),
                                       clock=self.clock)
        assert self.redis_url is not None
        return RedisConversations(self.redis_url, retention, cipher or BodyCipher(),
                                  clock=self.clock, prefix=self.prefix)


@pytest.fixture(params=["sqlite", "redis"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Factory(request.param, tmp_path / "responses.sqlite3", url)


def test_lifecycle_partitioned_per_app(make: Factory) -> None:
    async def scenario() -> None:
        store = make()
        try:
            conv = Conversation("conv_1", 100, {"topic": "naïve ☃"})
            assert await store.create("app", conv, [item("msg_1"), item("msg_2")]) == 0
            assert await store.get("app", "conv_1") == conv
            assert await store.get("other", "conv_1") is None
            assert await store.items("other", "conv_1") is None
            assert [i["id"] for i in await store.items("app", "conv_1") or []] == \
                ["msg_1", "msg_2"]
            assert await store.append("other", "conv_1", [item("msg_x")]) is False
            assert await store.append("app", "conv_1", [item("msg_3", "again")]) is True
            assert [i["id"] for i in await store.items("app", "conv_1") or []] == \
                ["msg_1", "msg_2", "msg_3"]
            assert await store.update("other", "conv_1", {"a": "b"}) is None
            updated = await store.update("app", "conv_1", {"a": "b"})
            assert updated == Conversation("conv_1", 100, {"a": "b"})
            assert await store.get("app", "conv_1") == updated
            assert await store.delete_item("other", "conv_1", "msg_2") is False
            assert await store.delete_item("app", "conv_1", "msg_2") is True
            assert await store.delete_item("app", "conv_1", "msg_2") is False
            assert [i["id"] for i in await store.items("app", "conv_1") or []] == \
                ["msg_1", "msg_3"]
            assert await store.delete("other", "conv_1") is False
            assert await store.delete("app", "conv_1") is True
            assert await store.get("app", "conv_1") is None
            assert await store.items("app", "conv_1") is None
            assert await store.delete("app", "conv_1") is False
        finally:
            await store.close()

    run(scenario())


def test_expiry_renewed_by_writes(make: Factory) -> None:
    async def scenario() -> None:
        store = make(Retention(ttl_seconds=10, max_responses=None))
        try:
            await store.create("app", Conversation("conv_a", 1), [item("m1")])
            await store.create("app", Conversation("conv_b", 1), [item("m2")])
            await make.advance(6)
            assert await store.append("app", "conv_a", [item("m3")])
            await make.advance(6)
            assert await store.get("app", "conv_b") is None  # 12 s since its last write
            assert await store.items("app", "conv_a") is not None  # renewed 6 s ago
            await store.purge_expired()
            assert await store.get("app", "conv_b") is None
        finally:
            await store.close()

    run(scenario())


def test_size_cap_evicts_least_recently_written(make: Factory) -> None:
    async def scenario() -> None:
        store = make(Retention(ttl_seconds=None, max_responses=2))
        try:
            assert await store.create("app", Conversation("conv_1", 1), []) == 0
            await make.advance(1)
            assert await store.create("app", Conversation("conv_2", 1), []) == 0
            await make.advance(1)
            assert await store.append("app", "conv_1", [item("m")])
            await make.advance(1)
            assert await store.create("app", Conversation("conv_3", 1), []) == 1
            assert await store.get("app", "conv_2") is None
            assert await store.get("app", "conv_1") is not None
            assert await store.get("app", "conv_3") is not None
        finally:
            await store.close()

    run(scenario())


def test_encrypted_at_rest_and_keys_required(make: Factory) -> None:
    async def scenario() -> None:
        cipher = BodyCipher((Fernet.generate_key(),))
        store = make(cipher=cipher)
        try:
            await store.create("app", Conversation("conv_s", 1, {"k": "secret-meta"}),
                               [item("m1", "secret-text")])
            assert (await store.items("app", "conv_s") or [])[0]["content"][0]["text"] \
                == "secret-text"
        finally:
            await store.close()
        if make.kind == "sqlite":
            raw = make.path.read_bytes() + b"".join(
                p.read_bytes() for p in make.path.parent.glob("*-wal"))
        else:
            client = Redis.from_url(make.redis_url or "")
            try:
                raw = b""
                async for key in client.scan_iter(match=f"{make.prefix}c*"):
                    kind = await client.type(key)
                    if kind == b"hash":
                        raw += b"".join((await client.hgetall(key)).values())
            finally:
                await client.aclose()
        assert b"secret-text" not in raw and b"secret-meta" not in raw
        plain = make()
        try:
            with pytest.raises(StoreError):
                await plain.items("app", "conv_s")
        finally:
            await plain.close()

    run(scenario())


def test_sqlite_shares_the_responses_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "responses.sqlite3"
        responses = SqliteStore(path, KEEP, BodyCipher())
        conversations = open_conversation_store(f"sqlite://{path}", KEEP, BodyCipher())
        try:
            await responses.put(StoredResponse("resp_1", "app", 1.0, None, (), (), (),
                                               {"id": "resp_1", "object": "response"}))
            await conversations.create("app", Conversation("conv_1", 1), [item("m1")])
            assert await responses.get("app", "resp_1") is not None
            assert await conversations.get("app", "conv_1") is not None
        finally:
            await responses.close()
            await conversations.close()
        tables = {row[0] for row in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"responses", "conversations", "conversation_items"} <= tables

    run(scenario())


def test_undecryptable_is_a_store_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "responses.sqlite3"
        first = SqliteConversations(path, KEEP, BodyCipher((Fernet.generate_key(),)))
        await first.create("app", Conversation("conv_1", 1), [item("m1")])
        await first.close()
        other = SqliteConversations(path, KEEP, BodyCipher((Fernet.generate_key(),)))
        try:
            with pytest.raises(StoreError, match="decrypted"):
                await other.items("app", "conv_1")
        finally:
            await other.close()
        assert issubclass(CipherError, ValueError)

    run(scenario())

"""Conversations in Redis, beside the stored responses (same prefix, same server).

  <prefix>c:<partition>:<id>    hash {created_at, body: sealed metadata}
  <prefix>ci:<partition>:<id>   hash item id -> sealed item
  <prefix>co:<partition>:<id>   list of item ids, oldest first
  <prefix>conversations         sorted set "<partition>:<id>" by last write (size cap)

Every write is one MULTI/EXEC pipeline that also renews the three keys' expiry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.exceptions import RedisError

from bastion_edge.core.conversations import Conversation
from bastion_edge.core.responses_request import Item
from bastion_edge.state.conversation_store import (
    open_item,
    open_metadata,
    seal_item,
    seal_metadata,
)
from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.responses_redis import PREFIX, connect, redis_location
from bastion_edge.state.responses_store import Retention, StoreError


class RedisConversations:
    def __init__(self, url: str, retention: Retention, cipher: BodyCipher,
                 clock: Callable[[], float] = time.time, prefix: str = PREFIX) -> None:
        self.retention = retention
        self._url = url
        self._cipher = cipher
        self._clock = clock
        self._prefix = prefix
        self._index = f"{prefix}conversations"
        self._redis = connect(url)

    @property
    def location(self) -> str:
        return redis_location(self._url)

    def _keys(self, partition: str, conversation_id: str) -> tuple[str, str, str]:
        tail = f"{partition}:{conversation_id}"
        return (f"{self._prefix}c:{tail}", f"{self._prefix}ci:{tail}",
                f"{self._prefix}co:{tail}")

    async def _call(self, work: Callable[[], Any]) -> Any:
        try:
            return await work()
        except (RedisError, OSError, CipherError, ValueError, KeyError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    def _renew(self, pipe: Any, partition: str, conversation_id: str) -> None:
        now = self._clock()
        pipe.zadd(self._index, {f"{partition}:{conversation_id}": now})
        ttl = self.retention.ttl_seconds
        if ttl:
            for key in self._keys(partition, conversation_id):
                pipe.pexpire(key, int(ttl * 1000))
            pipe.zremrangebyscore(self._index, "-inf", now - ttl)

    def _push(self, pipe: Any, partition: str, conversation_id: str,
              items: Sequence[Item]) -> None:
        _, item_key, order_key = self._keys(partition, conversation_id)
        if items:
            pipe.hset(item_key, mapping={str(i.get("id")): seal_item(self._cipher, i)
                                         for i in items})
            pipe.rpush(order_key, *(str(i.get("id")) for i in items))

    async def create(self, partition: str, conversation: Conversation,
                     items: Sequence[Item]) -> int:
        async def work() -> int:
            key = self._keys(partition, conversation.id)[0]
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"created_at": str(conversation.created_at),
                                        "body": seal_metadata(self._cipher,
                                                              conversation.metadata)})
                self._push(pipe, partition, conversation.id, items)
                self._renew(pipe, partition, conversation.id)
                pipe.zcard(self._index)
                results = await pipe.execute()
            return await self._evict(int(results[-1]))

        return cast(int, await self._call(work))

    async def _evict(self, count: int) -> int:
        cap = self.retention.max_responses
        if not cap or count <= cap:
            return 0
        popped = cast(list[tuple[bytes, float]],
                      await self._redis.zpopmin(self._index, count - cap))
        for member, _ in popped:
            partition, _, conversation_id = member.decode().rpartition(":")
            await self._redis.unlink(*self._keys(partition, conversation_id))
        return len(popped)

    async def _head(self, partition: str, conversation_id: str) -> tuple[int, bytes] | None:
        created, body = await self._redis.hmget(self._keys(partition, conversation_id)[0],
                                                ["created_at", "body"])
        if created is None or body is None:
            return None
        return int(float(created)), _bytes(body)

    async def get(self, partition: str, conversation_id: str) -> Conversation | None:
        async def work() -> Conversation | None:
            head = await self._head(partition, conversation_id)
            if head is None:
                return None
            return Conversation(conversation_id, head[0], open_metadata(self._cipher, head[1]))

        return cast(Conversation | None, await self._call(work))

    async def update(self, partition: str, conversation_id: str,
                     metadata: dict[str, str]) -> Conversation | None:
        async def work() -> Conversation | None:
            head = await self._head(partition, conversation_id)
            if head is None:
                return None
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys(partition, conversation_id)[0], "body",
                          seal_metadata(self._cipher, metadata))
                self._renew(pipe, partition, conversation_id)
                await pipe.execute()
            return Conversation(conversation_id, head[0], dict(metadata))

        return cast(Conversation | None, await self._call(work))

    async def delete(self, partition: str, conversation_id: str) -> bool:
        async def work() -> bool:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.unlink(self._keys(partition, conversation_id)[0])
                pipe.unlink(*self._keys(partition, conversation_id)[1:])
                pipe.zrem(self._index, f"{partition}:{conversation_id}")
                removed, _, _ = await pipe.execute()
            return int(removed) > 0

        return cast(bool, await self._call(work))

    async def items(self, partition: str, conversation_id: str) -> list[Item] | None:
        async def work() -> list[Item] | None:
            if await self._head(partition, conversation_id) is None:
                return None
            _, item_key, order_key = self._keys(partition, conversation_id)
            ids = await self._redis.lrange(order_key, 0, -1)
            if not ids:
                return []
            bodies = await self._redis.hmget(item_key, ids)
            return [open_item(self._cipher, _bytes(body)) for body in bodies if body is not None]

        return cast(list[Item] | None, await self._call(work))

    async def append(self, partition: str, conversation_id: str,
                     items: Sequence[Item]) -> bool:
        async def work() -> bool:
            if await self._head(partition, conversation_id) is None:
                return False
            async with self._redis.pipeline(transaction=True) as pipe:
                self._push(pipe, partition, conversation_id, items)
                self._renew(pipe, partition, conversation_id)
                await pipe.execute()
            return True

        return cast(bool, await self._call(work))

    async def delete_item(self, partition: str, conversation_id: str, item_id: str) -> bool:
        async def work() -> bool:
            if await self._head(partition, conversation_id) is None:
                return False
            _, item_key, order_key = self._keys(partition, conversation_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(item_key, item_id)
                pipe.lrem(order_key, 0, item_id)
                self._renew(pipe, partition, conversation_id)
                results = await pipe.execute()
            return int(results[0]) > 0

        return cast(bool, await self._call(work))

    async def purge_expired(self) -> int:
        """Redis expires the conversations itself; this drops their index entries."""
        ttl = self.retention.ttl_seconds
        if not ttl:
            return 0
        cutoff = self._clock() - ttl
        return cast(int, await self._call(
            lambda: self._redis.zremrangebyscore(self._index, "-inf", cutoff)))

    async def close(self) -> None:
        await self._redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()

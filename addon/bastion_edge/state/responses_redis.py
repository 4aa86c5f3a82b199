"""Redis store (redis.asyncio): one hash per response, expiry by Redis itself.

  <prefix>r:<partition>:<id>  hash {meta: JSON (created_at, previous, ancestors),
                                    body: JSON or a Fernet token}, PEXPIRE ttl
  <prefix>touched             sorted set of "<partition>:<id>" by last write/touch,
                              for the size cap (oldest popped first)
  <prefix>i:<partition>:<item> the id of the response holding that input/output item
                              (for `item_reference`), PEXPIRE ttl like its record

A write is one MULTI/EXEC pipeline (record, expiry, index, touched ancestors), so
replicas sharing the server never see half a record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.exceptions import RedisError

from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.records import (
    RecordMeta,
    StoredResponse,
    body_of,
    item_ids_of,
    meta_of,
    record_from,
)
from bastion_edge.state.responses_store import Retention, StoreError

PREFIX = "bastion-edge:responses:"
TIMEOUT_SECONDS = 2.0
MAX_CONNECTIONS = 32


def connect(url: str) -> redis.Redis:
    """A client on a bounded pool that makes a burst of requests wait for a connection
    (up to the timeout) rather than fail, as the default pool does beyond its size."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=TIMEOUT_SECONDS,
        socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
    return redis.Redis.from_pool(pool)


def redis_location(url: str) -> str:
    """The server a URL names, for logs (no credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


class RedisStore:
    def __init__(self, url: str, retention: Retention, cipher: BodyCipher,
                 clock: Callable[[], float] = time.time, prefix: str = PREFIX) -> None:
        self.retention = retention
        self._url = url
        self._cipher = cipher
        self._clock = clock
        self._prefix = prefix
        self._index = f"{prefix}touched"
        self._redis = connect(url)

    @property
    def location(self) -> str:
        return redis_location(self._url)

    def _key(self, partition: str, response_id: str) -> str:
        return f"{self._prefix}r:{partition}:{response_id}"

    def _item_key(self, partition: str, item_id: str) -> str:
        return f"{self._prefix}i:{partition}:{item_id}"

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    async def put(self, record: StoredResponse) -> int:
        retention = self.retention
        now = self._clock()
        ttl_ms = int(retention.ttl_seconds * 1000) if retention.ttl_seconds else None
        fields = {"meta": meta_of(record).to_json(), "body": self._cipher.seal(body_of(record))}
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                key = self._key(record.partition, record.id)
                pipe.delete(key)
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.zadd(self._index, {f"{record.partition}:{record.id}": now})
                for item_id in item_ids_of(record):
                    pipe.set(self._item_key(record.partition, item_id), record.id, px=ttl_ms)
                for ancestor in record.ancestors:
                    pipe.zadd(self._index, {f"{record.partition}:{ancestor}": now}, xx=True)
                if ttl_ms is not None:
                    pipe.pexpire(key, ttl_ms)
                    for ancestor in record.ancestors:
                        pipe.pexpire(self._key(record.partition, ancestor), ttl_ms)
                    pipe.zremrangebyscore(self._index, "-inf", now - ttl_ms / 1000)
                pipe.zcard(self._index)
                results = await pipe.execute()
            return await self._evict(int(results[-1]), retention.max_responses)
        except (RedisError, OSError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    async def _evict(self, count: int, max_responses: int | None) -> int:
        if not max_responses or count <= max_responses:
            return 0
        popped = cast(list[tuple[bytes, float]],
                      await self._redis.zpopmin(self._index, count - max_responses))
        if popped:
            await self._redis.unlink(*(f"{self._prefix}r:{m.decode()}" for m, _ in popped))
        return len(popped)

    async def get(self, partition: str, response_id: str) -> StoredResponse | None:
        found = await self.get_many(partition, (response_id,))
        return found.get(response_id)

    async def get_many(
        self, partition: str, response_ids: Sequence[str]
    ) -> dict[str, StoredResponse]:
        ids = list(dict.fromkeys(response_ids))
        if not ids:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.hmget(self._key(partition, rid), ["meta", "body"])
                rows: list[list[Any]] = await pipe.execute()
            found: dict[str, StoredResponse] = {}
            for rid, (meta, body) in zip(ids, rows, strict=True):
                if meta is not None and body is not None:
                    found[rid] = record_from(partition, rid, RecordMeta.from_json(meta),
                                             self._cipher.open(body))
            return found
        except (RedisError, OSError, CipherError, ValueError, KeyError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    async def responses_holding(
        self, partition: str, item_ids: Sequence[str]
    ) -> dict[str, str]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        try:
            values = await self._redis.mget([self._item_key(partition, i) for i in ids])
        except (RedisError, OSError) as e:
            raise StoreError(f"{self.location}: {e}") from e
        return {item_id: value.decode() if isinstance(value, bytes) else str(value)
                for item_id, value in zip(ids, values, strict=True) if value is not None}

    async def delete(self, partition: str, response_id: str) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.unlink(self._key(partition, response_id))
                pipe.zrem(self._index, f"{partition}:{response_id}")
                removed, _ = await pipe.execute()
            return int(removed) > 0
        except (RedisError, OSError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    async def purge_expired(self) -> int:
        """Redis expires the records itself; this drops their index entries."""
        if not self.retention.ttl_seconds:
            return 0
        try:
            cutoff = self._clock() - self.retention.ttl_seconds
            return int(await self._redis.zremrangebyscore(self._index, "-inf", cutoff))
        except (RedisError, OSError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    async def close(self) -> None:
        await self._redis.aclose()

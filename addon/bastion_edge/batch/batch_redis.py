"""Redis batch store, for replicas: metadata, leases, results and file bytes.

  <p>f:<id>            hash {partition, sealed, body}            a File object
  <p>fp:<partition>    sorted set of file ids by created_at
  <p>b:<id>            hash {partition, status, body, app, client, key_sha256}
  <p>bp:<partition>    sorted set of batch ids by created_at
  <p>active            sorted set (by created_at) of batch ids with work left
  <p>statuses          hash status -> count (the metrics gauge)
  <p>lease:<id>        the runner holding a batch, with a TTL (SET NX PX in a script)
  <p>r:<id>            hash line -> "1"/"0" + result JSON (sealed when encrypting),
                       written with HSETNX: once
  <p>rc:<id>           hash {completed, failed}, counted by the same script
  <p>blob:<file id>    list of 256 KiB chunks (Fernet tokens when encrypted)

File bytes live in Redis so replicas need no shared disk; a file costs Redis about its
size in memory (measured in docs/development/benchmarks.md), bounded per file by
`batches.max_file_bytes`.
Status changes are compare-and-set scripts, so a cancel and a runner never overwrite
each other; result writes are HSETNX, so no line's result is stored twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlsplit

import redis as sync_redis
import redis.asyncio as redis
from redis.exceptions import RedisError

from bastion_edge.batch.batch_shapes import ACTIVE, Json
from bastion_edge.batch.batch_store import BatchStoreError, Creator, StoredFile
from bastion_edge.batch.blobs import CHUNK
from bastion_edge.state.crypto import BodyCipher

PREFIX = "bastion-edge:batches:"
TIMEOUT_SECONDS = 5.0

_SET_STATUS = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
if ARGV[3] ~= '' and cur ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'status', ARGV[2])
if cur ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], cur, -1)
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
end
if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
else redis.call('ZREM', KEYS[2], ARGV[5]) end
return 1
"""
_CLAIM = """
local out = {}
local taken = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[3] .. 'lease:' .. id
  local cur = redis.call('GET', key)
  if cur == ARGV[1] or ((not cur) and taken < tonumber(ARGV[4])) then
    if not cur then taken = taken + 1 end
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    table.insert(out, id)
  end
end
return out
"""
_RELEASE = """
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. 'lease:' .. id
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""
_RESULT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  return 1
end
return 0
"""


class RedisBlobs:
    """File bytes as Redis lists of chunks; blocking (called on threads)."""

    def __init__(self, url: str, cipher: BodyCipher, prefix: str) -> None:
        self.cipher = cipher
        self._prefix = prefix
        self._redis = sync_redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS)

    def key(self, name: str) -> str:
        return f"{self._prefix}blob:{name}"

    def writer(self, name: str) -> RedisBlobWriter:
        return RedisBlobWriter(self._redis, self.key(name), self.cipher)

    def read(self, name: str, sealed: bool) -> Iterator[bytes]:
        key = self.key(name)
        for index in range(int(self._redis.llen(key))):
            chunk = cast(bytes | None, self._redis.lindex(key, index))
            if chunk is None:
                return
            yield self.cipher.open(chunk) if sealed else chunk

    def delete(self, name: str) -> None:
        self._redis.delete(self.key(name))

    def close(self) -> None:
        self._redis.close()


class RedisBlobWriter:
    def __init__(self, client: sync_redis.Redis, key: str, cipher: BodyCipher) -> None:
        self._redis = client
        self._key = key
        self._partial = key + ":partial"
        self.cipher = cipher
        self.size = 0
        self._pending = bytearray()
        client.delete(self._partial)

    @property
    def sealed(self) -> bool:
        return self.cipher.encrypts

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._pending += data
        while len(self._pending) >= CHUNK:
            self._push(bytes(self._pending[:CHUNK]))
            del self._pending[:CHUNK]

    def _push(self, plain: bytes) -> None:
        self._redis.rpush(self._partial, self.cipher.seal(plain))

    def close(self) -> None:
        if self._pending:
            self._push(bytes(self._pending))
            self._pending.clear()
        if self.size:
            self._redis.rename(self._partial, self._key)

    def discard(self) -> None:
        self._redis.delete(self._partial)


class RedisBatchStore:
    def __init__(self, url: str, cipher: BodyCipher, prefix: str = PREFIX) -> None:
        self._url = url
        self._p = prefix
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        self.blobs = RedisBlobs(url, cipher, prefix)
        self._set_status = self._redis.register_script(_SET_STATUS)
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._result = self._redis.register_script(_RESULT)

    @property
    def location(self) -> str:
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    async def _do(self, call: Any) -> Any:
        try:
            return await call
        except RedisError as e:
            raise BatchStoreError(f"redis: {e}") from e

    async def close(self) -> None:
        await self._redis.aclose()
        self.blobs.close()

    # ------------------------------------------------------------------ files

    async def add_file(self, partition: str, body: Json, sealed: bool) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(f"{self._p}f:{body['id']}", mapping={
            "partition": partition, "sealed": int(sealed), "body": json.dumps(body)})
        pipe.zadd(f"{self._p}fp:{partition}", {body["id"]: body["created_at"]})
        await self._do(pipe.execute())

    async def _file(self, file_id: str) -> tuple[str, StoredFile] | None:
        row = await self._do(self._redis.hgetall(f"{self._p}f:{file_id}"))
        if not row:
            return None
        return row[b"partition"].decode(), StoredFile(json.loads(row[b"body"]),
                                                      row[b"sealed"] == b"1")

    async def get_file(self, partition: str, file_id: str) -> StoredFile | None:
        found = await self._file(file_id)
        return found[1] if found and found[0] == partition else None

    async def get_file_any(self, file_id: str) -> StoredFile | None:
        found = await self._file(file_id)
        return found[1] if found else None

    async def add_file_for_batch(self, batch_id: str, body: Json, sealed: bool) -> None:
        partition = await self._do(self._redis.hget(f"{self._p}b:{batch_id}", "partition"))
        await self.add_file(partition.decode(), body, sealed)

    async def delete_file_any(self, file_id: str) -> None:
        found = await self._file(file_id)
        if found is not None:
            await self.delete_file(found[0], file_id)

    async def list_files(self, partition: str, purpose: str | None, after: str | None,
                         limit: int, ascending: bool) -> list[Json]:
        ids = await self._page_ids(f"{self._p}fp:{partition}", after, ascending)
        out: list[Json] = []
        for file_id in ids:
            found = await self.get_file(partition, file_id)
            if found is not None and (not purpose or found.body["purpose"] == purpose):
                out.append(found.body)
                if len(out) > limit:
                    break
        return out

    async def _page_ids(self, index: str, after: str | None, ascending: bool) -> list[str]:
        raw = await self._do(self._redis.zrange(index, 0, -1, desc=not ascending))
        ids = [i.decode() for i in raw]
        if after is not None and after in ids:
            ids = ids[ids.index(after) + 1:]
        return ids

    async def delete_file(self, partition: str, file_id: str) -> bool:
        if await self.get_file(partition, file_id) is None:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(f"{self._p}f:{file_id}", f"{self._p}blob:{file_id}")
        pipe.zrem(f"{self._p}fp:{partition}", file_id)
        await self._do(pipe.execute())
        return True

    # ------------------------------------------------------------------ batches

    async def add_batch(self, creator: Creator, body: Json) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(f"{self._p}b:{body['id']}", mapping={
            "partition": creator.partition, "status": body["status"], "body": json.dumps(body),
            "app": creator.app or "", "client": creator.client or "",
            "key_sha256": creator.key_sha256 or ""})
        pipe.zadd(f"{self._p}bp:{creator.partition}", {body["id"]: body["created_at"]})
        pipe.zadd(f"{self._p}active", {body["id"]: body["created_at"]})
        pipe.hincrby(f"{self._p}statuses", body["status"], 1)
        await self._do(pipe.execute())

    async def _batch(self, batch_id: str) -> dict[bytes, bytes] | None:
        row = await self._do(self._redis.hgetall(f"{self._p}b:{batch_id}"))
        return cast(dict[bytes, bytes], row) if row else None

    async def get_batch(self, partition: str, batch_id: str) -> Json | None:
        row = await self._batch(batch_id)
        if row is None or row[b"partition"].decode() != partition:
            return None
        return cast(Json, json.loads(row[b"body"]))

    async def batch_for_runner(self, batch_id: str) -> tuple[Json, Creator] | None:
        row = await self._batch(batch_id)
        if row is None:
            return None
        return json.loads(row[b"body"]), Creator(
            row[b"partition"].decode(), row[b"app"].decode() or None,
            row[b"client"].decode() or None, row[b"key_sha256"].decode() or None)

    async def list_batches(self, partition: str, after: str | None, limit: int) -> list[Json]:
        out: list[Json] = []
        for batch_id in await self._page_ids(f"{self._p}bp:{partition}", after, False):
            found = await self.get_batch(partition, batch_id)
            if found is not None:
                out.append(found)
                if len(out) > limit:
                    break
        return out

    async def save_batch(self, body: Json, only_if_status: str | None = None) -> bool:
        done = await self._do(self._set_status(
            keys=[f"{self._p}b:{body['id']}", f"{self._p}active", f"{self._p}statuses"],
            args=[json.dumps(body), body["status"], only_if_status or "",
                  "1" if body["status"] in ACTIVE else "0", body["id"], body["created_at"]]))
        return bool(done)

    async def request_cancel(self, partition: str, batch_id: str, now: int) -> Json | None:
        while True:
            body = await self.get_batch(partition, batch_id)
            if body is None:
                return None
            if body["status"] not in ("validating", "in_progress", "finalizing"):
                return body
            before = body["status"]
            body["status"], body["cancelling_at"] = "cancelling", now
            if await self.save_batch(body, only_if_status=before):
                return body

    async def status_of(self, batch_id: str) -> str | None:
        status = await self._do(self._redis.hget(f"{self._p}b:{batch_id}", "status"))
        return status.decode() if status is not None else None

    async def count_by_status(self) -> dict[str, int]:
        raw = await self._do(self._redis.hgetall(f"{self._p}statuses"))
        return {k.decode(): int(v) for k, v in raw.items()}

    # ------------------------------------------------------------------ leases

    async def claim(self, owner: str, lease_seconds: float, new: int) -> list[str]:
        ids = await self._do(self._claim(keys=[f"{self._p}active"], args=[
            owner, int(lease_seconds * 1000), self._p, new]))
        return [i.decode() for i in ids]

    async def holds(self, owner: str, batch_id: str) -> bool:
        holder = await self._do(self._redis.get(f"{self._p}lease:{batch_id}"))
        return holder is not None and holder.decode() == owner

    async def release(self, owner: str) -> None:
        await self._do(self._release(keys=[f"{self._p}active"], args=[owner, self._p]))

    # ------------------------------------------------------------------ results

    async def save_result(self, batch_id: str, line: int, ok: bool, body: Json) -> bool:
        sealed = self.blobs.cipher.seal(json.dumps(body, separators=(",", ":")).encode())
        value = ("1" if ok else "0") + sealed.decode()
        stored = await self._do(self._result(
            keys=[f"{self._p}r:{batch_id}", f"{self._p}rc:{batch_id}"],
            args=[line, value, "completed" if ok else "failed"]))
        return bool(stored)

    async def done_lines(self, batch_id: str) -> set[int]:
        lines = await self._do(self._redis.hkeys(f"{self._p}r:{batch_id}"))
        return {int(line) for line in lines}

    async def result_counts(self, batch_id: str) -> tuple[int, int]:
        row = await self._do(self._redis.hgetall(f"{self._p}rc:{batch_id}"))
        return int(row.get(b"completed", 0)), int(row.get(b"failed", 0))

    async def write_results(self, batch_id: str, ok: bool, file_id: str) -> int:
        rows = await self._do(self._redis.hgetall(f"{self._p}r:{batch_id}"))
        flag = b"1" if ok else b"0"
        chosen = sorted((int(line), value[1:]) for line, value in rows.items()
                        if value[:1] == flag)
        if not chosen:
            return 0

        def write() -> int:
            writer = self.blobs.writer(file_id)
            try:
                for _, body in chosen:
                    writer.write(self.blobs.cipher.open(body) + b"\n")
                writer.close()
            except BaseException:
                writer.discard()
                raise
            return writer.size
        try:
            return await asyncio.to_thread(write)
        except RedisError as e:
            raise BatchStoreError(f"redis: {e}") from e

    async def drop_results(self, batch_id: str) -> None:
        await self._do(self._redis.delete(f"{self._p}r:{batch_id}", f"{self._p}rc:{batch_id}",
                                          f"{self._p}lease:{batch_id}"))

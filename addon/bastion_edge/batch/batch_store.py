"""Where files and batches live: the `BatchStore` protocol and how one is chosen.

  sqlite              batches.sqlite3 in the confdir, bytes in batch-files/ next to it
  sqlite:///abs/path  that database (proxies on one host may share it), bytes next to it
  redis://...         Redis for replicas: metadata, leases, results and file bytes (in
                      256 KiB chunks, so replicas need no shared disk; `max_file_bytes`
                      bounds what a file costs Redis memory)

A runner works on a batch only while it holds the batch's lease (`claim`, renewed while
it runs, released on shutdown), and a line's result is stored once per (batch, line):
a stored line never runs again, on this proxy or another sharing the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bastion_edge.batch.batch_shapes import Json
from bastion_edge.batch.blobs import split_lines
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.state.responses_store import store_location as responses_store_location

SQLITE_FILE = "batches.sqlite3"
BLOB_DIR = "batch-files"


class BatchStoreError(Exception):
    """The batch store failed."""


@dataclass(frozen=True, slots=True)
class Creator:
    """Who created a batch: its lines run as that app (never with its key itself)."""

    partition: str
    app: str | None
    client: str | None
    key_sha256: str | None


@dataclass(frozen=True, slots=True)
class StoredFile:
    body: Json
    sealed: bool


class BlobWriting(Protocol):
    size: int

    @property
    def sealed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...


class Blobs(Protocol):
    """File bytes; blocking calls (run them on a thread)."""

    cipher: BodyCipher

    def writer(self, name: str) -> BlobWriting: ...

    def read(self, name: str, sealed: bool) -> Iterator[bytes]: ...

    def delete(self, name: str) -> None: ...


def blob_lines(blobs: Blobs, name: str, sealed: bool) -> Iterator[bytes]:
    """A blob's plain bytes, line by line (without the newline; see split_lines)."""
    return split_lines(blobs.read(name, sealed))


class BatchStore(Protocol):
    @property
    def blobs(self) -> Blobs: ...

    @property
    def location(self) -> str: ...

    async def close(self) -> None: ...

    async def add_file(self, partition: str, body: Json, sealed: bool) -> None: ...

    async def get_file(self, partition: str, file_id: str) -> StoredFile | None: ...

    async def get_file_any(self, file_id: str) -> StoredFile | None: ...

    async def add_file_for_batch(self, batch_id: str, body: Json, sealed: bool) -> None: ...

    async def delete_file_any(self, file_id: str) -> None: ...

    async def list_files(self, partition: str, purpose: str | None, after: str | None,
                         limit: int, ascending: bool) -> list[Json]:
        """Up to limit + 1 files (one more tells `has_more`)."""
        ...

    async def delete_file(self, partition: str, file_id: str) -> bool: ...

    async def add_batch(self, creator: Creator, body: Json) -> None: ...

    async def get_batch(self, partition: str, batch_id: str) -> Json | None: ...

    async def batch_for_runner(self, batch_id: str) -> tuple[Json, Creator] | None: ...

    async def list_batches(self, partition: str, after: str | None, limit: int) -> list[Json]:
        ...

    async def save_batch(self, body: Json, only_if_status: str | None = None) -> bool: ...

    async def request_cancel(self, partition: str, batch_id: str, now: int) -> Json | None:
        ...

    async def status_of(self, batch_id: str) -> str | None: ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def claim(self, owner: str, lease_seconds: float, new: int) -> list[str]:
        """The active batches this runner holds now: its own (lease renewed) and up to
        `new` more that were free or whose lease expired."""
        ...

    async def holds(self, owner: str, batch_id: str) -> bool: ...

    async def release(self, owner: str) -> None: ...

    async def save_result(self, batch_id: str, line: int, ok: bool, body: Json) -> bool: ...

    async def done_lines(self, batch_id: str) -> set[int]: ...

    async def result_counts(self, batch_id: str) -> tuple[int, int]: ...

    async def write_results(self, batch_id: str, ok: bool, file_id: str) -> int: ...

    async def drop_results(self, batch_id: str) -> None: ...


def store_location(setting: str, confdir: Path) -> str:
    """The batch store's URL: the Responses store's forms, its own SQLite file."""
    return responses_store_location(setting, confdir, SQLITE_FILE)


def open_batch_store(location: str, cipher: BodyCipher) -> BatchStore:
    if location.startswith("sqlite:///"):
        from bastion_edge.batch.batch_sqlite import SqliteBatchStore
        from bastion_edge.batch.blobs import BlobDir

        path = Path(location.removeprefix("sqlite://"))
        return SqliteBatchStore(path, BlobDir(path.parent / BLOB_DIR, cipher))
    from bastion_edge.batch.batch_redis import RedisBatchStore

    return RedisBatchStore(location, cipher)

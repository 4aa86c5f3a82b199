"""SQLite batch store: metadata, leases and per-line results, one thread; bytes in a
BlobDir next to the database.

`batches.sqlite3` sits in the confdir (or at `batches.store: sqlite:///<path>`), file
bytes in the `batch-files/` directory next to it. Several proxies on one host may share
one database file: a runner works on a batch only while it holds the batch's lease.
Every call runs on the store's own thread: the event loop never waits on the disk.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bastion_edge.batch.batch_shapes import ACTIVE, Json
from bastion_edge.batch.batch_store import BatchStoreError, Creator, StoredFile
from bastion_edge.batch.blobs import BlobDir
from bastion_edge.sqlite_wal import SqliteThread

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, partition TEXT NOT NULL, created_at INTEGER NOT NULL,
    purpose TEXT NOT NULL, sealed INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_partition ON files (partition, created_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, partition TEXT NOT NULL, created_at INTEGER NOT NULL,
    status TEXT NOT NULL, body TEXT NOT NULL, owner TEXT, lease_until REAL NOT NULL DEFAULT 0,
    app TEXT, client TEXT, key_sha256 TEXT);
CREATE INDEX IF NOT EXISTS batches_partition ON batches (partition, created_at);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status);
CREATE TABLE IF NOT EXISTS results (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, ok INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (batch_id, line));
"""


class SqliteBatchStore:
    def __init__(self, path: Path, blobs: BlobDir,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.blobs = blobs
        self._clock = clock
        try:
            self._sql = SqliteThread(path, _SCHEMA, 10.0, "bastion-batch-sqlite")
        except (sqlite3.Error, OSError) as e:
            raise BatchStoreError(f"cannot open {path}: {e}") from e

    @property
    def location(self) -> str:
        return f"sqlite://{self.path}"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._sql.run(work)
        except sqlite3.Error as e:
            raise BatchStoreError(str(e)) from e

    async def close(self) -> None:
        await self._sql.close()

    # ------------------------------------------------------------------ files

    async def add_file(self, partition: str, body: Json, sealed: bool) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
            (body["id"], partition, body["created_at"], body["purpose"], int(sealed),
             json.dumps(body))))

    async def get_file(self, partition: str, file_id: str) -> StoredFile | None:
        row = await self._run(lambda db: db.execute(
            "SELECT body, sealed FROM files WHERE id = ? AND partition = ?",
            (file_id, partition)).fetchone())
        return StoredFile(json.loads(row[0]), bool(row[1])) if row else None

    async def list_files(self, partition: str, purpose: str | None, after: str | None,
                         limit: int, ascending: bool) -> list[Json]:
        """Up to limit + 1 files (one more tells `has_more`)."""
        order = "ASC" if ascending else "DESC"
        where, args = ["partition = ?"], [partition]
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if after:
            cmp = ">" if ascending else "<"
            where.append(f"(created_at, id) {cmp} (SELECT created_at, id FROM files "
                         "WHERE id = ? AND partition = ?)")
            args += [after, partition]
        sql = (f"SELECT body FROM files WHERE {' AND '.join(where)} "
               f"ORDER BY created_at {order}, id {order} LIMIT ?")
        rows = await self._run(lambda db: db.execute(sql, (*args, limit + 1)).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def get_file_any(self, file_id: str) -> StoredFile | None:
        """A file whatever its partition (the runner reading a batch's input)."""
        row = await self._run(lambda db: db.execute(
            "SELECT body, sealed FROM files WHERE id = ?", (file_id,)).fetchone())
        return StoredFile(json.loads(row[0]), bool(row[1])) if row else None

    async def add_file_for_batch(self, batch_id: str, body: Json, sealed: bool) -> None:
        """An output/error file, in the partition of the batch that made it."""
        await self._run(lambda db: db.execute(
            "INSERT INTO files SELECT ?, partition, ?, ?, ?, ? FROM batches WHERE id = ?",
            (body["id"], body["created_at"], body["purpose"], int(sealed), json.dumps(body),
             batch_id)))

    async def delete_file_any(self, file_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM files WHERE id = ?", (file_id,)))
        self.blobs.delete(file_id)

    async def delete_file(self, partition: str, file_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            gone = db.execute("DELETE FROM files WHERE id = ? AND partition = ?",
                              (file_id, partition)).rowcount > 0
            if gone:
                self.blobs.delete(file_id)
            return gone
        return await self._run(delete)

    # ------------------------------------------------------------------ batches

    async def add_batch(self, creator: Creator, body: Json) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO batches (id, partition, created_at, status, body, app, client, "
            "key_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (body["id"], creator.partition, body["created_at"], body["status"],
             json.dumps(body), creator.app, creator.client, creator.key_sha256)))

    async def get_batch(self, partition: str, batch_id: str) -> Json | None:
        row = await self._run(lambda db: db.execute(
            "SELECT body FROM batches WHERE id = ? AND partition = ?",
            (batch_id, partition)).fetchone())
        return json.loads(row[0]) if row else None

    async def batch_for_runner(self, batch_id: str) -> tuple[Json, Creator] | None:
        row = await self._run(lambda db: db.execute(
            "SELECT body, partition, app, client, key_sha256 FROM batches WHERE id = ?",
            (batch_id,)).fetchone())
        return (json.loads(row[0]), Creator(*row[1:])) if row else None

    async def list_batches(self, partition: str, after: str | None, limit: int) -> list[Json]:
        args: list[Any] = [partition]
        where = "partition = ?"
        if after:
            where += (" AND (created_at, id) < (SELECT created_at, id FROM batches "
                      "WHERE id = ? AND partition = ?)")
            args += [after, partition]
        rows = await self._run(lambda db: db.execute(
            f"SELECT body FROM batches WHERE {where} ORDER BY created_at DESC, id DESC "
            "LIMIT ?", (*args, limit + 1)).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def save_batch(self, body: Json, only_if_status: str | None = None) -> bool:
        """Replace a batch's object; with `only_if_status`, only while it still has that
        status (a cancel that came in between wins)."""
        sql = "UPDATE batches SET body = ?, status = ? WHERE id = ?"
        args: tuple[Any, ...] = (json.dumps(body), body["status"], body["id"])
        if only_if_status is not None:
            sql += " AND status = ?"
            args = (*args, only_if_status)
        return await self._run(lambda db: db.execute(sql, args).rowcount > 0)

    async def request_cancel(self, partition: str, batch_id: str, now: int) -> Json | None:
        def cancel(db: sqlite3.Connection) -> Json | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT body FROM batches WHERE id = ? AND partition = ?",
                                 (batch_id, partition)).fetchone()
                if row is None:
                    return None
                body: Json = json.loads(row[0])
                if body["status"] in ("validating", "in_progress", "finalizing"):
                    body["status"], body["cancelling_at"] = "cancelling", now
                    db.execute("UPDATE batches SET body = ?, status = ? WHERE id = ?",
                               (json.dumps(body), body["status"], batch_id))
                return body
            finally:
                db.execute("COMMIT")
        return await self._run(cancel)

    async def status_of(self, batch_id: str) -> str | None:
        row = await self._run(lambda db: db.execute(
            "SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone())
        return str(row[0]) if row else None

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._run(lambda db: db.execute(
            "SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall())
        return {str(s): int(n) for s, n in rows}

    # ------------------------------------------------------------------ leases

    async def claim(self, owner: str, lease_seconds: float, new: int) -> list[str]:
        """Active batches this runner now holds: its own, renewed, plus up to `new` free
        or expired ones (a few per call, so replicas polling the store share batches)."""
        marks = ",".join("?" * len(ACTIVE))

        def claim(db: sqlite3.Connection) -> list[str]:
            now = self._clock()
            db.execute("BEGIN IMMEDIATE")
            try:
                mine = db.execute(
                    f"SELECT id FROM batches WHERE status IN ({marks}) AND owner = ?",
                    (*ACTIVE, owner)).fetchall()
                free = db.execute(
                    f"SELECT id FROM batches WHERE status IN ({marks}) AND "
                    "(owner IS NULL OR (owner != ? AND lease_until < ?)) "
                    "ORDER BY created_at LIMIT ?", (*ACTIVE, owner, now, new)).fetchall()
                ids = [str(r[0]) for r in (*mine, *free)]
                for batch_id in ids:
                    db.execute("UPDATE batches SET owner = ?, lease_until = ? WHERE id = ?",
                               (owner, now + lease_seconds, batch_id))
                return ids
            finally:
                db.execute("COMMIT")
        return await self._run(claim)

    async def holds(self, owner: str, batch_id: str) -> bool:
        row = await self._run(lambda db: db.execute(
            "SELECT 1 FROM batches WHERE id = ? AND owner = ? AND lease_until >= ?",
            (batch_id, owner, self._clock())).fetchone())
        return row is not None

    async def release(self, owner: str) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE batches SET owner = NULL, lease_until = 0 WHERE owner = ?", (owner,)))

    # ------------------------------------------------------------------ results

    async def save_result(self, batch_id: str, line: int, ok: bool, body: Json) -> bool:
        """Store a line's result once (encrypted like the files); False if it was
        stored already."""
        sealed = self.blobs.cipher.seal(json.dumps(body, separators=(",", ":")).encode())
        return await self._run(lambda db: db.execute(
            "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
            (batch_id, line, int(ok), sealed.decode())).rowcount > 0)

    async def done_lines(self, batch_id: str) -> set[int]:
        rows = await self._run(lambda db: db.execute(
            "SELECT line FROM results WHERE batch_id = ?", (batch_id,)).fetchall())
        return {int(r[0]) for r in rows}

    async def result_counts(self, batch_id: str) -> tuple[int, int]:
        row = await self._run(lambda db: db.execute(
            "SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0) FROM results "
            "WHERE batch_id = ?", (batch_id,)).fetchone())
        return int(row[0]), int(row[1])

    async def write_results(self, batch_id: str, ok: bool, file_id: str) -> int:
        """The batch's successful (or failed) lines, in input order, into blob `file_id`;
        returns its size in bytes (0: no such lines, no blob kept)."""
        def write(db: sqlite3.Connection) -> int:
            writer = self.blobs.writer(file_id)
            try:
                for (body,) in db.execute(
                        "SELECT body FROM results WHERE batch_id = ? AND ok = ? ORDER BY line",
                        (batch_id, int(ok))):
                    writer.write(self.blobs.cipher.open(body.encode()) + b"\n")
            except BaseException:
                writer.discard()
                raise
            if writer.size == 0:
                writer.discard()
                return 0
            writer.close()
            return writer.size
        return await self._run(write)

    async def drop_results(self, batch_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM results WHERE batch_id = ?",
                                              (batch_id,)))

"""SQLite store: stdlib sqlite3 in WAL mode, every call on one dedicated thread.

The event loop never blocks on disk: each operation (JSON encoding and encryption
included) runs as one transaction on the store's own thread, which also serializes
concurrent requests. The file is created 0600 before SQLite opens it; SQLite gives its
-wal and -shm files the same mode. A trigger-maintained counter makes the size cap an
O(1) check per write.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bastion_edge.sqlite_wal import SqliteThread
from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.records import RecordMeta, StoredResponse, body_of, item_ids_of, record_from
from bastion_edge.state.responses_store import Retention, StoreError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    partition TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at REAL NOT NULL,
    touched_at REAL NOT NULL,
    expires_at REAL,
    previous_response_id TEXT,
    ancestors TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (partition, id)
);
CREATE INDEX IF NOT EXISTS responses_touched ON responses (touched_at);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('responses', (SELECT COUNT(*) FROM responses));
CREATE TRIGGER IF NOT EXISTS responses_counted_in AFTER INSERT ON responses
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'responses'; END;
CREATE TRIGGER IF NOT EXISTS responses_counted_out AFTER DELETE ON responses
    BEGIN UPDATE counters SET value = value - 1 WHERE name = 'responses'; END;
CREATE TABLE IF NOT EXISTS items (
    partition TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    PRIMARY KEY (partition, item_id)
);
CREATE INDEX IF NOT EXISTS items_response ON items (partition, response_id);
CREATE TRIGGER IF NOT EXISTS responses_items_out AFTER DELETE ON responses
    BEGIN DELETE FROM items WHERE partition = old.partition AND response_id = old.id; END;
"""
_COLUMNS = "id, created_at, previous_response_id, ancestors, body"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_BATCH = 500  # ids per IN (...) query, well under SQLite's variable limit


class SqliteBacked:
    """A store in one SQLite file, on its own thread: every call is one `work`, and any
    failure in it (SQLite, decryption, a malformed body) is a StoreError."""

    def __init__(self, path: Path, schema: str, thread_name: str) -> None:
        self.path = path
        try:
            self._sql = SqliteThread(path, schema, 5.0, thread_name)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open {path}: {e}") from e

    @property
    def location(self) -> str:
        return f"sqlite://{self.path}"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._sql.run(work)
        except (sqlite3.Error, CipherError, ValueError, KeyError) as e:
            raise StoreError(f"{self.location}: {e}") from e

    async def close(self) -> None:
        await self._sql.close()


class SqliteStore(SqliteBacked):
    def __init__(self, path: Path, retention: Retention, cipher: BodyCipher,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, _SCHEMA, "bastion-responses-sqlite")
        self.retention = retention
        self._cipher = cipher
        self._clock = clock

    # ------------------------------------------------------------------ writes

    async def put(self, record: StoredResponse) -> int:
        retention = self.retention

        def work(db: sqlite3.Connection) -> int:
            sealed = self._cipher.seal(body_of(record))
            now = self._clock()
            expires = now + retention.ttl_seconds if retention.ttl_seconds else None
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (partition, id) DO UPDATE SET touched_at = excluded.touched_at,"
                    " expires_at = excluded.expires_at, ancestors = excluded.ancestors,"
                    " previous_response_id = excluded.previous_response_id, body = excluded.body",
                    (record.partition, record.id, record.created_at, now, expires,
                     record.previous_response_id, json.dumps(record.ancestors), sealed))
                for batch in _batches(record.ancestors):
                    marks = ",".join("?" * len(batch))
                    db.execute(
                        "UPDATE responses SET touched_at = ?, expires_at = CASE WHEN"
                        " expires_at IS NULL OR ? IS NULL THEN ? ELSE MAX(expires_at, ?) END"
                        f" WHERE partition = ? AND id IN ({marks})",
                        (now, expires, expires, expires, record.partition, *batch))
                db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)",
                               [(record.partition, item_id, record.id)
                                for item_id in item_ids_of(record)])
                evicted = self._evict(db, retention.max_responses)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return evicted

        return await self._run(work)

    @staticmethod
    def _evict(db: sqlite3.Connection, max_responses: int | None) -> int:
        if not max_responses:
            return 0
        (count,) = db.execute("SELECT value FROM counters WHERE name = 'responses'").fetchone()
        excess = int(count) - max_responses
        if excess <= 0:
            return 0
        return db.execute(
            "DELETE FROM responses WHERE rowid IN "
            "(SELECT rowid FROM responses ORDER BY touched_at LIMIT ?)", (excess,)).rowcount

    async def delete(self, partition: str, response_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(f"DELETE FROM responses WHERE partition = ? AND id = ? AND {_LIVE}",
                                (partition, response_id, self._clock()))
            return cursor.rowcount > 0

        return await self._run(work)

    async def purge_expired(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM responses WHERE expires_at <= ?",
                              (self._clock(),)).rowcount

        return await self._run(work)

    # ------------------------------------------------------------------ reads

    async def get(self, partition: str, response_id: str) -> StoredResponse | None:
        found = await self.get_many(partition, (response_id,))
        return found.get(response_id)

    async def get_many(
        self, partition: str, response_ids: Sequence[str]
    ) -> dict[str, StoredResponse]:
        def work(db: sqlite3.Connection) -> dict[str, StoredResponse]:
            now = self._clock()
            found: dict[str, StoredResponse] = {}
            for batch in _batches(tuple(dict.fromkeys(response_ids))):
                marks = ",".join("?" * len(batch))
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM responses"
                    f" WHERE partition = ? AND id IN ({marks}) AND {_LIVE}",
                    (partition, *batch, now)).fetchall()
                for rid, created, previous, ancestors, sealed in rows:
                    meta = RecordMeta(created, previous, tuple(json.loads(ancestors)))
                    found[rid] = record_from(partition, rid, meta, self._cipher.open(sealed))
            return found

        return await self._run(work)

    async def responses_holding(
        self, partition: str, item_ids: Sequence[str]
    ) -> dict[str, str]:
        def work(db: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for batch in _batches(tuple(dict.fromkeys(item_ids))):
                marks = ",".join("?" * len(batch))
                found.update(db.execute(
                    f"SELECT item_id, response_id FROM items"
                    f" WHERE partition = ? AND item_id IN ({marks})",
                    (partition, *batch)).fetchall())
            return found

        return await self._run(work)

def _batches(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i:i + _BATCH] for i in range(0, len(ids), _BATCH)]

"""Where conversations live: beside the stored responses, in the same store.

The same locations (`store_location`), the same cipher (item and metadata bodies sealed
like response bodies), the same partition per app and the same retention: a
conversation expires `ttl_seconds` after its last write, and beyond `max_responses`
conversations the least recently written ones are evicted.

  SQLite  two tables in the responses file (its own connection thread, WAL)
  Redis   keys under `bastion-edge:responses:c...` (see conversation_redis.py)
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from bastion_edge.core.conversations import Conversation
from bastion_edge.core.responses_request import Item
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.state.responses_sqlite import SqliteBacked
from bastion_edge.state.responses_store import Retention

T = TypeVar("T")


class ConversationStore(Protocol):
    retention: Retention

    @property
    def location(self) -> str: ...

    async def create(self, partition: str, conversation: Conversation,
                     items: Sequence[Item]) -> int:
        """Store a new conversation with its first items; returns how many were evicted."""
        ...

    async def get(self, partition: str, conversation_id: str) -> Conversation | None: ...

    async def update(self, partition: str, conversation_id: str,
                     metadata: dict[str, str]) -> Conversation | None: ...

    async def delete(self, partition: str, conversation_id: str) -> bool: ...

    async def items(self, partition: str, conversation_id: str) -> list[Item] | None:
        """All items, oldest first; None when there is no such conversation."""
        ...

    async def append(self, partition: str, conversation_id: str,
                     items: Sequence[Item]) -> bool:
        """Add items at the end; False when there is no such conversation."""
        ...

    async def delete_item(self, partition: str, conversation_id: str, item_id: str) -> bool: ...

    async def purge_expired(self) -> int: ...

    async def close(self) -> None: ...


def open_conversation_store(location: str, retention: Retention,
                            cipher: BodyCipher) -> ConversationStore:
    """The conversation store at a Responses store location (`store_location`)."""
    if location.startswith("sqlite:///"):
        return SqliteConversations(Path(location.removeprefix("sqlite://")), retention, cipher)
    from bastion_edge.state.conversation_redis import RedisConversations

    return RedisConversations(location, retention, cipher)


def seal_item(cipher: BodyCipher, item: Item) -> bytes:
    return cipher.seal(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode())


def open_item(cipher: BodyCipher, sealed: bytes) -> Item:
    data = json.loads(cipher.open(sealed))
    if not isinstance(data, dict):
        raise ValueError("stored conversation item is not an object")
    return data


def seal_metadata(cipher: BodyCipher, metadata: dict[str, str]) -> bytes:
    return cipher.seal(json.dumps({"metadata": metadata}, ensure_ascii=False).encode())


def open_metadata(cipher: BodyCipher, sealed: bytes) -> dict[str, str]:
    data = json.loads(cipher.open(sealed))
    return dict(data.get("metadata") or {})


_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    partition TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at REAL NOT NULL,
    touched_at REAL NOT NULL,
    expires_at REAL,
    body BLOB NOT NULL,
    PRIMARY KEY (partition, id)
);
CREATE INDEX IF NOT EXISTS conversations_touched ON conversations (touched_at);
CREATE INDEX IF NOT EXISTS conversations_expires ON conversations (expires_at);
CREATE TABLE IF NOT EXISTS conversation_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    partition TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_items_of
    ON conversation_items (partition, conversation_id, seq);
CREATE TRIGGER IF NOT EXISTS conversations_items_out AFTER DELETE ON conversations
    BEGIN DELETE FROM conversation_items
          WHERE partition = old.partition AND conversation_id = old.id; END;
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SqliteConversations(SqliteBacked):
    def __init__(self, path: Path, retention: Retention, cipher: BodyCipher,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, _SCHEMA, "bastion-conversations-sqlite")
        self.retention = retention
        self._cipher = cipher
        self._clock = clock

    def _expiry(self, now: float) -> float | None:
        ttl = self.retention.ttl_seconds
        return now + ttl if ttl else None

    @staticmethod
    def _transaction(db: sqlite3.Connection, work: Callable[[], T]) -> T:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    def _insert_items(self, db: sqlite3.Connection, partition: str, conversation_id: str,
                      items: Sequence[Item]) -> None:
        db.executemany(
            "INSERT INTO conversation_items (partition, conversation_id, item_id, body)"
            " VALUES (?, ?, ?, ?)",
            [(partition, conversation_id, str(item.get("id")), seal_item(self._cipher, item))
             for item in items])

    def _live(self, db: sqlite3.Connection, partition: str, conversation_id: str,
              ) -> tuple[float, bytes] | None:
        row = db.execute(f"SELECT created_at, body FROM conversations WHERE partition = ?"
                         f" AND id = ? AND {_LIVE}",
                         (partition, conversation_id, self._clock())).fetchone()
        return None if row is None else (float(row[0]), bytes(row[1]))

    def _touch(self, db: sqlite3.Connection, partition: str, conversation_id: str) -> None:
        now = self._clock()
        db.execute("UPDATE conversations SET touched_at = ?, expires_at = ?"
                   " WHERE partition = ? AND id = ?",
                   (now, self._expiry(now), partition, conversation_id))

    async def create(self, partition: str, conversation: Conversation,
                     items: Sequence[Item]) -> int:
        def work(db: sqlite3.Connection) -> int:
            now = self._clock()
            sealed = seal_metadata(self._cipher, conversation.metadata)

            def write() -> int:
                db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)",
                           (partition, conversation.id, conversation.created_at, now,
                            self._expiry(now), sealed))
                self._insert_items(db, partition, conversation.id, items)
                return self._evict(db)

            return self._transaction(db, write)

        return await self._run(work)

    def _evict(self, db: sqlite3.Connection) -> int:
        cap = self.retention.max_responses
        if not cap:
            return 0
        (count,) = db.execute("SELECT COUNT(*) FROM conversations").fetchone()
        excess = int(count) - cap
        if excess <= 0:
            return 0
        return db.execute("DELETE FROM conversations WHERE rowid IN (SELECT rowid FROM"
                          " conversations ORDER BY touched_at LIMIT ?)", (excess,)).rowcount

    async def get(self, partition: str, conversation_id: str) -> Conversation | None:
        def work(db: sqlite3.Connection) -> Conversation | None:
            row = self._live(db, partition, conversation_id)
            if row is None:
                return None
            return Conversation(conversation_id, int(row[0]),
                                open_metadata(self._cipher, row[1]))

        return await self._run(work)

    async def update(self, partition: str, conversation_id: str,
                     metadata: dict[str, str]) -> Conversation | None:
        def work(db: sqlite3.Connection) -> Conversation | None:
            def write() -> Conversation | None:
                row = self._live(db, partition, conversation_id)
                if row is None:
                    return None
                db.execute("UPDATE conversations SET body = ? WHERE partition = ? AND id = ?",
                           (seal_metadata(self._cipher, metadata), partition, conversation_id))
                self._touch(db, partition, conversation_id)
                return Conversation(conversation_id, int(row[0]), dict(metadata))

            return self._transaction(db, write)

        return await self._run(work)

    async def delete(self, partition: str, conversation_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute(f"DELETE FROM conversations WHERE partition = ? AND id = ?"
                              f" AND {_LIVE}",
                              (partition, conversation_id, self._clock())).rowcount > 0

        return await self._run(work)

    async def items(self, partition: str, conversation_id: str) -> list[Item] | None:
        def work(db: sqlite3.Connection) -> list[Item] | None:
            if self._live(db, partition, conversation_id) is None:
                return None
            rows = db.execute("SELECT body FROM conversation_items WHERE partition = ?"
                              " AND conversation_id = ? ORDER BY seq",
                              (partition, conversation_id)).fetchall()
            return [open_item(self._cipher, bytes(body)) for (body,) in rows]

        return await self._run(work)

    async def append(self, partition: str, conversation_id: str,
                     items: Sequence[Item]) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            def write() -> bool:
                if self._live(db, partition, conversation_id) is None:
                    return False
                self._insert_items(db, partition, conversation_id, items)
                self._touch(db, partition, conversation_id)
                return True

            return self._transaction(db, write)

        return await self._run(work)

    async def delete_item(self, partition: str, conversation_id: str, item_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            def write() -> bool:
                if self._live(db, partition, conversation_id) is None:
                    return False
                deleted = db.execute("DELETE FROM conversation_items WHERE partition = ? AND"
                                     " conversation_id = ? AND item_id = ?",
                                     (partition, conversation_id, item_id)).rowcount > 0
                if deleted:
                    self._touch(db, partition, conversation_id)
                return deleted

            return self._transaction(db, write)

        return await self._run(work)

    async def purge_expired(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM conversations WHERE expires_at <= ?",
                              (self._clock(),)).rowcount

        return await self._run(work)

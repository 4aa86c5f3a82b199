"""Where stored responses live: the `ResponseStore` protocol and how one is chosen.

  sqlite             a file in mitmproxy's confdir (one proxy process)
  sqlite:///abs/path a SQLite file elsewhere (sqlite:// + an absolute path)
  redis://...        Redis (rediss:// for TLS): replicas behind one service share it,
                     so any of them can continue any conversation

Reads never return an expired record. Writes extend the retention of the turns a
response continued (an active conversation keeps its beginning) and evict the least
recently touched records beyond `max_responses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bastion_edge.config.store_url import store_location as config_store_location
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.state.records import StoredResponse

SQLITE_FILE = "responses.sqlite3"


class StoreError(Exception):
    """The store failed (unreachable, corrupt, undecryptable); the request cannot be served."""


@dataclass(frozen=True, slots=True)
class Retention:
    ttl_seconds: float | None = None  # None: kept until evicted or deleted
    max_responses: int | None = None  # None: no size cap


class ResponseStore(Protocol):
    retention: Retention

    @property
    def location(self) -> str:
        """Where the data lives, for logs (no credentials)."""
        ...

    async def put(self, record: StoredResponse) -> int:
        """Store (or replace) a record; returns how many records were evicted for size."""
        ...

    async def get(self, partition: str, response_id: str) -> StoredResponse | None: ...

    async def get_many(
        self, partition: str, response_ids: Sequence[str]
    ) -> dict[str, StoredResponse]:
        """The records found (missing and expired ids are left out)."""
        ...

    async def responses_holding(
        self, partition: str, item_ids: Sequence[str]
    ) -> dict[str, str]:
        """item id -> id of the stored response that holds it (input or output item), for
        the ids found; the response itself may since have expired (`get_many` tells)."""
        ...

    async def delete(self, partition: str, response_id: str) -> bool: ...

    async def purge_expired(self) -> int:
        """Drop expired records now; returns how many."""
        ...

    async def close(self) -> None: ...


def store_location(setting: str, confdir: Path, sqlite_file: str = SQLITE_FILE) -> str:
    """The store URL for a rules/option value (`sqlite` means `sqlite_file` in `confdir`).
    The Responses store and the batch store take the same forms."""
    return config_store_location(setting, confdir, sqlite_file)


def open_store(location: str, retention: Retention, cipher: BodyCipher) -> ResponseStore:
    if location.startswith("sqlite:///"):
        from bastion_edge.state.responses_sqlite import SqliteStore

        return SqliteStore(Path(location.removeprefix("sqlite://")), retention, cipher)
    from bastion_edge.state.responses_redis import RedisStore

    return RedisStore(location, retention, cipher)

"""Where the canary's state lives, shared by every worker and replica, across restarts.

  sqlite             `canary.sqlite3` in mitmproxy's confdir (the workers of one host)
  sqlite:///abs/path a SQLite file elsewhere
  redis://...        Redis (rediss:// for TLS): replicas behind one service share it

The forms are those of `responses_state.store` (one setting serves every store). It
holds the current step and its start (core.canary.CanaryState), the current step's
evidence (counts per side, and the most recent latencies for the p95 gate) and every
decision. A transition is a compare-and-set on the state's version, so two workers
deciding at once move the canary once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from sqlite3 import Connection
from typing import NamedTuple, Protocol

from bastion_edge.core.canary import (
    MAX_LATENCY_SAMPLES,
    CanaryState,
    Decision,
    SideStats,
    StepStats,
    decision_fields,
    initial_state,
    step_key,
)
from bastion_edge.sqlite_wal import SqliteThread
from bastion_edge.state.responses_store import store_location

SQLITE_FILE = "canary.sqlite3"
MAX_DECISIONS = 1000  # kept in the store's history
SIDES = ("bastion", "openai")


class CanaryStoreError(Exception):
    """The store failed (unreachable, locked beyond its wait, corrupt)."""


class Observation(NamedTuple):
    """One exchange of the current step, as the gates count it."""

    side: str  # bastion | openai
    failed: bool
    duration_ms: float | None
    agreed: bool | None = None  # a mirrored answer's agreement verdict, when judged


class CanaryStore(Protocol):
    @property
    def location(self) -> str: ...

    async def state(self, now: float) -> CanaryState:
        """The current state; the first call on an empty store starts the canary."""
        ...

    async def record(self, key: str, observations: Sequence[Observation]) -> None:
        """Add exchanges to the evidence of step `key` (core.canary.step_key)."""
        ...

    async def step_stats(self, key: str) -> StepStats: ...

    async def transition(self, before: CanaryState, after: CanaryState, decision: Decision,
                         now: float) -> bool:
        """`after` replaces the state if it is still `before` (by version), and the
        decision joins the history; False when another worker moved first."""
        ...

    async def decisions(self, limit: int = 20) -> list[dict[str, object]]:
        """The most recent decisions, oldest first."""
        ...

    async def close(self) -> None: ...


def canary_store_location(setting: str, confdir: Path) -> str:
    return store_location(setting, confdir, SQLITE_FILE)


def open_canary_store(location: str) -> CanaryStore:
    if location.startswith("sqlite:///"):
        return SqliteCanaryStore(Path(location.removeprefix("sqlite://")))
    from bastion_edge.state.canary_redis import RedisCanaryStore

    return RedisCanaryStore(location)


def history_entry(decision: Decision, now: float) -> dict[str, object]:
    return {"time": now, **decision_fields(decision)}


SCHEMA = """
CREATE TABLE IF NOT EXISTS canary_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), step INTEGER NOT NULL,
    step_started REAL NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS canary_counts (
    step_key TEXT NOT NULL, side TEXT NOT NULL, requests INTEGER NOT NULL,
    errors INTEGER NOT NULL, judged INTEGER NOT NULL, agreed INTEGER NOT NULL,
    PRIMARY KEY (step_key, side));
CREATE TABLE IF NOT EXISTS canary_latency (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, step_key TEXT NOT NULL, side TEXT NOT NULL,
    ms REAL NOT NULL);
CREATE TABLE IF NOT EXISTS canary_decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL);
"""


class SqliteCanaryStore:
    def __init__(self, path: Path, wait_seconds: float = 10.0) -> None:
        self.path = path
        try:
            self._db = SqliteThread(path, SCHEMA, wait_seconds, "canary-store")
        except Exception as e:
            raise CanaryStoreError(f"cannot open {path}: {e}") from e

    @property
    def location(self) -> str:
        return f"sqlite://{self.path}"

    async def _run[T](self, work: Callable[[Connection], T]) -> T:
        try:
            return await self._db.run(work)
        except Exception as e:  # sqlite3.Error, or closed
            raise CanaryStoreError(str(e)) from e

    async def state(self, now: float) -> CanaryState:
        def read(db: Connection) -> CanaryState:
            fresh = initial_state(now)
            db.execute("INSERT OR IGNORE INTO canary_state VALUES (1, ?, ?, ?, ?)",
                       (fresh.step, fresh.step_started, fresh.status, fresh.version))
            row = db.execute("SELECT step, step_started, status, version FROM canary_state"
                             ).fetchone()
            return CanaryState(int(row[0]), float(row[1]), row[2], int(row[3]))

        return await self._run(read)

    async def record(self, key: str, observations: Sequence[Observation]) -> None:
        def write(db: Connection) -> None:
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                for side in SIDES:
                    mine = [o for o in observations if o.side == side]
                    if not mine:
                        continue
                    db.execute(
                        "INSERT INTO canary_counts VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (step_key, side) DO UPDATE SET "
                        "requests = requests + excluded.requests, "
                        "errors = errors + excluded.errors, judged = judged + excluded.judged,"
                        " agreed = agreed + excluded.agreed",
                        (key, side, len(mine), sum(o.failed for o in mine),
                         sum(o.agreed is not None for o in mine),
                         sum(o.agreed is True for o in mine)))
                    db.executemany("INSERT INTO canary_latency (step_key, side, ms) "
                                   "VALUES (?, ?, ?)",
                                   [(key, side, o.duration_ms) for o in mine
                                    if o.duration_ms is not None])
                    db.execute(
                        "DELETE FROM canary_latency WHERE step_key = ? AND side = ? AND seq <= "
                        "(SELECT seq FROM canary_latency WHERE step_key = ? AND side = ? "
                        "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                        (key, side, key, side, MAX_LATENCY_SAMPLES))

        await self._run(write)

    async def step_stats(self, key: str) -> StepStats:
        def read(db: Connection) -> StepStats:
            sides = {}
            for side in SIDES:
                row = db.execute("SELECT requests, errors, judged, agreed FROM canary_counts "
                                 "WHERE step_key = ? AND side = ?", (key, side)).fetchone()
                latencies = [r[0] for r in db.execute(
                    "SELECT ms FROM canary_latency WHERE step_key = ? AND side = ? "
                    "ORDER BY seq DESC LIMIT ?", (key, side, MAX_LATENCY_SAMPLES))]
                n, e, j, a = row if row else (0, 0, 0, 0)
                sides[side] = SideStats(n, e, tuple(reversed(latencies)), j, a)
            return StepStats(sides["bastion"], sides["openai"])

        return await self._run(read)

    async def transition(self, before: CanaryState, after: CanaryState, decision: Decision,
                         now: float) -> bool:
        entry = json.dumps(history_entry(decision, now))

        def write(db: Connection) -> bool:
            with db:
                db.execute("BEGIN IMMEDIATE")
                moved = db.execute(
                    "UPDATE canary_state SET step = ?, step_started = ?, status = ?, "
                    "version = ? WHERE id = 1 AND version = ?",
                    (after.step, after.step_started, after.status, after.version,
                     before.version)).rowcount
                if not moved:
                    return False
                db.execute("INSERT INTO canary_decisions (entry) VALUES (?)", (entry,))
                db.execute("DELETE FROM canary_decisions WHERE seq <= "
                           "(SELECT MAX(seq) FROM canary_decisions) - ?", (MAX_DECISIONS,))
                if step_key(after) != step_key(before):
                    keep = step_key(after)
                    db.execute("DELETE FROM canary_counts WHERE step_key != ?", (keep,))
                    db.execute("DELETE FROM canary_latency WHERE step_key != ?", (keep,))
                return True

        return await self._run(write)

    async def decisions(self, limit: int = 20) -> list[dict[str, object]]:
        def read(db: Connection) -> list[dict[str, object]]:
            rows = db.execute("SELECT entry FROM canary_decisions ORDER BY seq DESC LIMIT ?",
                              (limit,)).fetchall()
            return [json.loads(r[0]) for r in reversed(rows)]

        return await self._run(read)

    async def close(self) -> None:
        await self._db.close()


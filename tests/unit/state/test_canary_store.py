"""The canary's shared state: SQLite and Redis stores behave alike, a transition is a
compare-and-set, and the state survives reopening (a restart)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from quota_support import redis_or_skip, run

from bastion_edge.config.canary_rules import CanaryRules
from bastion_edge.core.canary import CanaryState, Decision, manual, step_key
from bastion_edge.state.canary_control import CanaryControl
from bastion_edge.state.canary_redis import RedisCanaryStore
from bastion_edge.state.canary_store import (
    CanaryStore,
    Observation,
    canary_store_location,
    open_canary_store,
)
from bastion_edge.telemetry.cutover_metrics import CutoverMetrics, cutover_record

RULES = CanaryRules(min_requests=50, min_seconds=10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return canary_store_location("sqlite", tmp_path)
    url: str = request.getfixturevalue("redis_url")
    return url


def fresh(location: str) -> CanaryStore:
    if location.startswith("redis"):
        return RedisCanaryStore(location, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    return open_canary_store(location)


def test_state_starts_at_the_first_step_and_records_evidence(location: str) -> None:
    async def scenario() -> None:
        store = fresh(location)
        try:
            state = await store.state(100.0)
            assert state == CanaryState(0, 100.0)
            assert await store.state(200.0) == state  # the first caller started it
            key = step_key(state)
            await store.record(key, [Observation("bastion", False, 120.0),
                                     Observation("bastion", True, None),
                                     Observation("openai", False, 80.0, agreed=None),
                                     Observation("bastion", False, 90.0, agreed=True)])
            await store.record(key, [Observation("openai", True, 70.0)])
            stats = await store.step_stats(key)
            assert (stats.bastion.requests, stats.bastion.errors) == (3, 1)
            assert stats.bastion.durations_ms == (120.0, 90.0)
            assert (stats.bastion.judged, stats.bastion.agreed) == (1, 1)
            assert (stats.openai.requests, stats.openai.errors) == (2, 1)
            assert stats.openai.durations_ms == (80.0, 70.0)
        finally:
            await store.close()
    run(scenario())


def test_transition_is_compare_and_set_and_kept_in_history(location: str) -> None:
    async def scenario() -> None:
        store = fresh(location)
        try:
            state = await store.state(0.0)
            after, decision = manual(state, "promote", RULES, 5.0)
            assert await store.transition(state, after, decision, 5.0)
            stale, other = manual(state, "rollback", RULES, 6.0)
            assert not await store.transition(state, stale, other, 6.0)
            assert await store.state(7.0) == after
            history = await store.decisions()
            assert [h["decision"] for h in history] == ["promote"]
            assert history[0]["to_percent"] == 5.0 and history[0]["by"] == "hand"
        finally:
            await store.close()
    run(scenario())


def test_sqlite_state_survives_a_restart(tmp_path: Path) -> None:
    location = canary_store_location("sqlite", tmp_path)

    async def first() -> None:
        store = open_canary_store(location)
        control = CanaryControl(store, lambda: RULES, clock=lambda: 50.0)
        await control.act("rollback")
        await store.close()

    async def second() -> CanaryState:
        store = open_canary_store(location)
        try:
            return await store.state(60.0)
        finally:
            await store.close()

    run(first())
    state = run(second())
    assert state.status == "rolled_back" and state.percent(RULES) == 0.0


def test_control_waits_for_min_seconds_and_a_bounded_p95(location: str) -> None:
    clock = [0.0]
    decisions: list[tuple[Decision, CanaryState]] = []
    registry = CollectorRegistry()
    metrics = CutoverMetrics(registry)

    def on_decision(d: Decision, s: CanaryState) -> None:
        decisions.append((d, s))
        metrics.decided(d)

    async def scenario() -> None:
        store = fresh(location)
        control = CanaryControl(store, lambda: RULES, on_decision, clock=lambda: clock[0])
        other = CanaryControl(store, lambda: RULES, clock=lambda: clock[0])
        try:
            await control.refresh()
            assert control.percent == 1.0
            for i in range(60):
                control.observe("bastion", False, 100.0 + i % 7)
                control.observe("openai", False, 100.0 + i % 5)
            assert (await control.tick()).action == "wait"  # 0/10 s
            clock[0] = 20.0
            both = await asyncio.gather(control.tick(), other.tick())
            assert [d.action for d in both] == ["wait", "wait"]  # p95 unbounded at n=60
        finally:
            await store.close()
    run(scenario())


def test_control_decides_and_logs_once(location: str) -> None:
    rules = CanaryRules(min_requests=400, min_seconds=0,
                        gates=RULES.gates.__class__(1.0, None, None))
    decisions: list[Decision] = []
    registry = CollectorRegistry()
    metrics = CutoverMetrics(registry)

    def on_decision(d: Decision, s: CanaryState) -> None:
        decisions.append(d)
        metrics.decided(d)

    async def scenario() -> None:
        store = fresh(location)
        one = CanaryControl(store, lambda: rules, on_decision, clock=lambda: 1.0)
        two = CanaryControl(store, lambda: rules, on_decision, clock=lambda: 1.0)
        try:
            await one.refresh()
            for i in range(2000):
                one.observe("bastion", i % 5 == 0, 100.0)  # 20 % errors
                one.observe("openai", False, 100.0)
            await one.flush()
            await two.refresh()
            results = await asyncio.gather(one.tick(), two.tick())
            # Whichever reads second sees the rollback done (hold) or loses the race.
            assert "rollback" in {d.action for d in results}
            assert len(decisions) == 1  # moved and reported once
            state = await store.state(2.0)
            assert state.status == "rolled_back"
            assert len(await store.decisions()) == 1
        finally:
            await store.close()
    run(scenario())
    assert registry.get_sample_value("bastion_edge_cutover_decisions_total",
                                     {"decision": "rollback"}) == 1
    assert registry.get_sample_value("bastion_edge_cutover_percent") == 0.0
    line = json.loads(cutover_record(decisions[0], 1.0, -1))
    assert line["event"] == "cutover" and line["decision"] == "rollback"
    gate = line["gates"][0]
    assert gate["name"] == "error_rate_increase_pp" and gate["verdict"] == "fail"
    assert gate["low"] > 1.0


def test_two_processes_worth_of_stores_move_the_canary_once(location: str) -> None:
    """Separate connections (as separate workers have) to one store: the evidence adds
    up, and of two simultaneous deciders exactly one moves the state."""
    rules = CanaryRules(min_requests=300, min_seconds=0,
                        gates=RULES.gates.__class__(1.0, None, None))
    prefix = f"test-{uuid.uuid4().hex[:8]}:"

    def open_one() -> CanaryStore:
        if location.startswith("redis"):
            return RedisCanaryStore(location, prefix=prefix)
        return open_canary_store(location)

    moved: list[Decision] = []

    async def scenario() -> CanaryState:
        stores = [open_one(), open_one()]
        controls = [CanaryControl(s, lambda: rules, lambda d, _: moved.append(d),
                                  clock=lambda: 1.0) for s in stores]
        try:
            for control in controls:
                await control.refresh()
                for _ in range(200):  # 400 a side in all: enough only together
                    control.observe("bastion", False, 100.0)
                    control.observe("openai", False, 100.0)
                await control.flush()
            await asyncio.gather(*(c.tick() for c in controls))
            return await stores[0].state(2.0)
        finally:
            for s in stores:
                await s.close()

    state = run(scenario())
    assert [d.action for d in moved] == ["promote"]
    assert (state.step, state.version) == (1, 1)

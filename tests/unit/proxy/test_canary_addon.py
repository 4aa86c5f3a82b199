"""The canary child: opens the shared store on its first canary tick, counts served
exchanges from their access-log records, decides, logs one line per decision, and a
new process (a restart) finds the state where the last one left it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from bastion_edge.config.rules import Rules, parse_rules
from bastion_edge.proxy.canary_addon import CanaryChild
from bastion_edge.telemetry.access_log import AccessRecord

CANARY = """
cutover:
  mode: canary
  canary:
    steps: [10, 100]
    min_requests: 50
    min_seconds: 0
    gates: {max_error_rate_increase_pp: 10, max_p95_ratio: null, min_agreement: null}
"""


def record(destination: str, status: int | None) -> AccessRecord:
    return AccessRecord(
        time="2026-01-01T00:00:00.000+00:00", request_id="r", client=None, app=None,
        method="POST", path="/v1/chat/completions", endpoint="chat.completions",
        original_host="api.openai.com", upstream_host=None, original_model="gpt-4o",
        upstream_model="gpt-4o", destination=destination, decision="canary", status=status,
        duration_ms=10.0, ttfb_ms=None, bytes_in=0, bytes_out=0, stream=False)


def child(rules: list[Rules], confdir: Path, lines: list[str]) -> CanaryChild:
    return CanaryChild(lambda: rules[0], lambda: confdir, CollectorRegistry(), lines.append)


def test_decides_from_served_records_and_survives_a_restart(tmp_path: Path) -> None:
    rules = [parse_rules(CANARY)]
    lines: list[str] = []

    async def first() -> float:
        canary = child(rules, tmp_path, lines)
        try:
            assert canary.percent == 0.0
            assert (await canary.tick()).action == "wait"  # type: ignore[union-attr]
            assert canary.percent == 10.0
            for _ in range(60):
                canary.observe_record(record("bastion", 200))
                canary.observe_record(record("openai", 200))
                canary.observe_record(record("proxy", 400))  # refusals are not evidence
            decision = await canary.tick()
            assert decision is not None and decision.action == "promote"
            return canary.percent
        finally:
            await canary.done()

    async def second() -> float:
        canary = child(rules, tmp_path, lines)
        try:
            await canary.tick()
            return canary.percent
        finally:
            await canary.done()

    assert asyncio.run(first()) == 100.0
    (line,) = lines
    entry = json.loads(line)
    assert (entry["event"], entry["decision"], entry["to_percent"]) == ("cutover", "promote",
                                                                         100.0)
    assert asyncio.run(second()) == 100.0  # the restart reads the shared state


def test_rolls_back_on_a_failing_bastion(tmp_path: Path) -> None:
    rules = [parse_rules(CANARY)]
    lines: list[str] = []

    async def scenario() -> float:
        canary = child(rules, tmp_path, lines)
        try:
            await canary.tick()
            for i in range(200):
                canary.observe_record(record("bastion", 500 if i % 3 == 0 else 200))
                canary.observe_record(record("openai", 200))
            await canary.tick()
            return canary.percent
        finally:
            await canary.done()

    assert asyncio.run(scenario()) == 0.0
    assert json.loads(lines[0])["decision"] == "rollback"


def test_inactive_outside_canary_mode(tmp_path: Path) -> None:
    rules = [parse_rules("cutover: {mode: split, split_percent: 30}\n")]

    async def scenario() -> None:
        canary = child(rules, tmp_path, [])
        assert await canary.tick() is None
        canary.observe_record(record("bastion", 200))
        assert canary.percent == 0.0 and canary.control is None
        canary.running()
        await canary.done()

    asyncio.run(scenario())
    assert not (tmp_path / "canary.sqlite3").exists()


def test_tick_is_five_seconds_unless_the_test_only_variable_shortens_it() -> None:
    from bastion_edge.proxy.canary_addon import TICK_ENV, TICK_SECONDS, canary_tick_seconds

    assert canary_tick_seconds({}) == TICK_SECONDS == 5.0
    assert canary_tick_seconds({TICK_ENV: "0.5"}) == 0.5
    assert canary_tick_seconds({TICK_ENV: "x"}) == canary_tick_seconds({TICK_ENV: "-1"}) == 5.0

"""The canary's decisions (core.canary) and its rules section (config.canary_rules)."""

from __future__ import annotations

import pytest

from bastion_edge.config.canary_rules import CanaryGates, CanaryRules
from bastion_edge.config.rules import RulesError, parse_rules
from bastion_edge.core.canary import (
    ROLLED_BACK,
    CanaryState,
    SideStats,
    StepStats,
    apply,
    canary_destination,
    decide,
    evaluate_gates,
    initial_state,
    manual,
)
from bastion_edge.core.cutover import destination_for, split_bucket

RULES = CanaryRules(min_seconds=60)
FAST = tuple(float(100 + i % 50) for i in range(2000))


def side(n: int, errors: int, durations: tuple[float, ...] = FAST, judged: int = 0,
         agreed: int = 0) -> SideStats:
    return SideStats(n, errors, durations[:n], judged, agreed)


def test_waits_for_min_requests_and_min_seconds() -> None:
    state = initial_state(0.0)
    few = StepStats(side(100, 0), side(5000, 0))
    d = decide(state, few, RULES, now=100)
    assert d.action == "wait" and "bastion 100/200" in d.reason
    enough = StepStats(side(2000, 0), side(2000, 0))
    early = decide(state, enough, RULES, now=10)
    assert early.action == "wait" and "10/60 s" in early.reason


def test_promotes_when_every_interval_is_within_its_bound() -> None:
    state = initial_state(0.0)
    d = decide(state, StepStats(side(2000, 20), side(2000, 20)), RULES, now=100)
    assert d.action == "promote" and (d.from_percent, d.to_percent) == (1.0, 5.0)
    after = apply(state, d, RULES, 100)
    assert (after.step, after.step_started, after.status, after.version) == (1, 100, "running", 1)


def test_rolls_back_only_when_the_interval_excludes_passing() -> None:
    state = initial_state(0.0)
    bad = decide(state, StepStats(side(2000, 200), side(2000, 20)), RULES, now=100)
    assert bad.action == "rollback" and bad.to_percent == 0.0
    after = apply(state, bad, RULES, 100)
    assert after.step == ROLLED_BACK and after.percent(RULES) == 0.0
    # 4 % vs 2 % on 200 requests: the interval spans 1 pp, so wait rather than fail.
    unsure = decide(state, StepStats(side(200, 8), side(2000, 40)), RULES, now=100)
    assert unsure.action == "wait" and "error_rate_increase_pp" in unsure.reason


def test_hold_on_fail_keeps_the_step() -> None:
    rules = CanaryRules(min_seconds=0, on_fail="hold")
    state = CanaryState(2, 0.0)
    d = decide(state, StepStats(side(2000, 200), side(2000, 20)), rules, now=1)
    assert d.action == "hold" and d.to_percent == 25.0
    held = apply(state, d, rules, 1)
    assert held.status == "held" and held.step == 2
    assert decide(held, StepStats(side(2000, 0), side(2000, 0)), rules, 2).action == "hold"


def test_p95_gate_fails_on_a_slow_side_and_agreement_gate_on_disagreement() -> None:
    slow = tuple(3 * d for d in FAST)
    gates = {g.name: g for g in evaluate_gates(
        StepStats(side(2000, 0, slow), side(2000, 0)), RULES)}
    assert gates["p95_ratio"].verdict == "fail"
    assert gates["agreement"].verdict == "off"
    gates = {g.name: g for g in evaluate_gates(
        StepStats(side(2000, 0, judged=300, agreed=200), side(2000, 0)), RULES)}
    assert gates["agreement"].verdict == "fail"
    gates = {g.name: g for g in evaluate_gates(
        StepStats(side(2000, 0, judged=300, agreed=299), side(2000, 0)), RULES)}
    assert gates["agreement"].verdict == "pass"


def test_gates_set_to_null_are_off() -> None:
    rules = CanaryRules(min_seconds=0, gates=CanaryGates(None, None, None))
    d = decide(initial_state(0), StepStats(side(200, 100), side(200, 0)), rules, 1)
    assert d.action == "promote" and {g.verdict for g in d.gates} == {"off"}


def test_last_promotion_completes_and_then_holds() -> None:
    state = CanaryState(3, 0.0)
    d = decide(state, StepStats(side(2000, 0), side(2000, 0)), RULES, 100)
    done = apply(state, d, RULES, 100)
    assert done.status == "complete" and done.percent(RULES) == 100.0
    assert decide(done, StepStats(), RULES, 200).action == "hold"


def test_manual_events() -> None:
    state = initial_state(0.0)
    paused, d = manual(state, "pause", RULES, 5)
    assert paused.status == "paused" and d.by == "hand"
    assert decide(paused, StepStats(side(2000, 0), side(2000, 0)), RULES, 500).action == "hold"
    resumed, _ = manual(paused, "resume", RULES, 6)
    assert resumed.status == "running" and resumed.step_started == 6
    promoted, d = manual(resumed, "promote", RULES, 7)
    assert promoted.step == 1 and d.to_percent == 5.0
    back, d = manual(promoted, "rollback", RULES, 8)
    assert back.percent(RULES) == 0.0 and d.action == "rollback"
    again, _ = manual(back, "resume", RULES, 9)
    assert again.step == 0 and again.percent(RULES) == 1.0
    assert [s.version for s in (paused, resumed, promoted, back, again)] == [1, 2, 3, 4, 5]


def test_destination_is_sticky_by_percent() -> None:
    keys = [f"app-{i}" for i in range(400)]
    at5 = {k for k in keys if canary_destination(5, k) == "bastion"}
    at25 = {k for k in keys if canary_destination(25, k) == "bastion"}
    assert at5 <= at25 and 0 < len(at5) < len(at25) < len(keys)
    assert all((split_bucket(k) < 5) == (k in at5) for k in keys)


def test_canary_mode_in_rules_and_its_destination() -> None:
    rules = parse_rules("""
cutover:
  mode: canary
  canary:
    steps: [1, 5, 25, 50, 100]
    min_requests: 200
    min_seconds: 1800
    gates: {max_error_rate_increase_pp: 1, max_p95_ratio: 1.5, min_agreement: 0.9}
    on_fail: rollback
""")
    assert rules.cutover.mode == "canary"
    assert rules.cutover.canary == CanaryRules()
    # Until the canary store says otherwise, canary mode sends nothing to Bastion.
    assert destination_for(rules.cutover, "any") == "openai"
    assert destination_for(rules.cutover, "any", canary_percent=100) == "bastion"


@pytest.mark.parametrize(("text", "message"), [
    ("steps: [5, 1, 100]", r"canary.steps\[1\]: expected steps in increasing order"),
    ("steps: [1, 50]", "expected the last step to be 100"),
    ("steps: [0, 100]", "expected a percent above 0"),
    ("min_requests: 0", "canary.min_requests: expected a positive integer"),
    ("on_fail: panic", "expected one of rollback, hold"),
    ("gates: {min_agreement: 2}", "expected a share from 0 to 1"),
    ("gates: {max_latency: 2}", "unknown key"),
    ("bogus: 1", "unknown key; expected one of steps"),
])
def test_bad_canary_rules_name_their_location(text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(f"cutover:\n  mode: canary\n  canary:\n    {text}\n")


def test_gate_can_be_turned_off_with_null() -> None:
    rules = parse_rules("cutover:\n  canary:\n    gates: {min_agreement: null}\n")
    assert rules.cutover.canary.gates == CanaryGates(1.0, 1.5, None)

"""The canary: Bastion's share moves through `steps` by evidence (pure, no I/O).

Each step runs until both sides have `min_requests` exchanges and `min_seconds` have
passed; then every gate is judged on its 95 % interval (core.intervals):

  error-rate increase  Bastion's rate less OpenAI's, in points (Newcombe)
  p95 ratio            Bastion's p95 latency over OpenAI's (exact order statistics)
  agreement            share of mirrored answers that agree (Wilson)

A gate FAILS only when its whole interval is on the wrong side of the bound, PASSES
when its whole interval is within the bound, and otherwise says "wait": more data
narrows the interval. A gate set to null, or agreement with no judged answers, is off.
Any failure: `on_fail` (rollback to 0 %, or hold where it is); all pass: promote to the
next step (the last step, 100 %, completes the canary); else wait. A human can
promote, roll back, pause and resume (`manual`); paused, held, rolled-back and
completed canaries make no decisions of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from bastion_edge.config.canary_rules import CanaryRules
from bastion_edge.core.cutover import BASTION, OPENAI, split_bucket
from bastion_edge.core.intervals import Interval, newcombe, quantile_ratio, wilson

Action = Literal["promote", "hold", "rollback", "wait"]
Status = Literal["running", "paused", "held", "rolled_back", "complete"]
Verdict = Literal["pass", "fail", "wait", "off"]
ManualEvent = Literal["promote", "rollback", "pause", "resume"]
ROLLED_BACK = -1  # the step index of 0 % (everything on OpenAI)
MAX_LATENCY_SAMPLES = 5000  # per side and step: the p95 gate's sample (the most recent)


@dataclass(frozen=True, slots=True)
class CanaryState:
    step: int  # index into rules.steps; ROLLED_BACK for 0 %
    step_started: float  # epoch seconds
    status: Status = "running"
    version: int = 0  # bumped by every transition (the store's compare-and-set)

    def percent(self, rules: CanaryRules) -> float:
        if self.step == ROLLED_BACK or not rules.steps:
            return 0.0
        return rules.steps[min(self.step, len(rules.steps) - 1)]


def initial_state(now: float) -> CanaryState:
    return CanaryState(0, now)


@dataclass(frozen=True, slots=True)
class SideStats:
    """One side's exchanges in the current step."""

    requests: int = 0
    errors: int = 0
    durations_ms: tuple[float, ...] = ()
    judged: int = 0  # mirrored answers with an agreement verdict
    agreed: int = 0


@dataclass(frozen=True, slots=True)
class StepStats:
    bastion: SideStats = SideStats()
    openai: SideStats = SideStats()


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    verdict: Verdict
    figure: Interval | None  # None when off
    bound: float | None
    why: str


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    from_percent: float
    to_percent: float
    gates: tuple[GateResult, ...] = ()
    by: str = "auto"  # auto, or `hand` for a manual event


def canary_destination(percent: float, sticky_key: str) -> str:
    """Sticky as split: a key below the current percent goes to Bastion."""
    return BASTION if split_bucket(sticky_key) < percent else OPENAI


def _judge(interval: Interval, bound: float, higher_is_worse: bool) -> Verdict:
    if higher_is_worse:
        return "fail" if interval.low > bound else "pass" if interval.high <= bound \
            else "wait"
    return "fail" if interval.high < bound else "pass" if interval.low >= bound else "wait"


def evaluate_gates(stats: StepStats, rules: CanaryRules) -> tuple[GateResult, ...]:
    gates, b, o = rules.gates, stats.bastion, stats.openai
    out: list[GateResult] = []
    bound = gates.max_error_rate_increase_pp
    if bound is None:
        out.append(GateResult("error_rate_increase_pp", "off", None, None, "gate off"))
    else:
        diff = newcombe(b.errors, b.requests, o.errors, o.requests)
        pp = Interval(diff.estimate * 100, diff.low * 100, diff.high * 100)
        out.append(GateResult("error_rate_increase_pp", _judge(pp, bound, True), pp, bound,
                              f"Bastion {b.errors}/{b.requests} vs OpenAI "
                              f"{o.errors}/{o.requests}"))
    bound = gates.max_p95_ratio
    if bound is None:
        out.append(GateResult("p95_ratio", "off", None, None, "gate off"))
    elif not b.durations_ms or not o.durations_ms:
        out.append(GateResult("p95_ratio", "wait", Interval(math.nan, 0.0, math.inf), bound,
                              "no timings on one side"))
    else:
        ratio = quantile_ratio(b.durations_ms, o.durations_ms)
        out.append(GateResult("p95_ratio", _judge(ratio, bound, True), ratio, bound,
                              f"{len(b.durations_ms)} vs {len(o.durations_ms)} timings"))
    bound = gates.min_agreement
    if bound is None:
        out.append(GateResult("agreement", "off", None, None, "gate off"))
    elif b.judged == 0:
        out.append(GateResult("agreement", "off", None, bound, "no judged answers"))
    else:
        share = wilson(b.agreed, b.judged)
        out.append(GateResult("agreement", _judge(share, bound, False), share, bound,
                              f"{b.agreed} of {b.judged} agree"))
    return tuple(out)


def decide(state: CanaryState, stats: StepStats, rules: CanaryRules,
           now: float) -> Decision:
    """What the canary does next on the current step's evidence."""
    here = state.percent(rules)
    if state.status != "running":
        return Decision("hold", _STILL[state.status], here, here)
    if state.step >= len(rules.steps) - 1:
        return Decision("hold", "at the last step", here, here)
    short = [f"{side} {n}/{rules.min_requests} requests"
             for side, n in ((BASTION, stats.bastion.requests),
                             (OPENAI, stats.openai.requests)) if n < rules.min_requests]
    elapsed = now - state.step_started
    if elapsed < rules.min_seconds:
        short.append(f"{elapsed:.0f}/{rules.min_seconds:.0f} s")
    gates = evaluate_gates(stats, rules)
    if short:
        return Decision("wait", "not enough data: " + ", ".join(short), here, here, gates)
    failed = [g for g in gates if g.verdict == "fail"]
    if failed:
        names = ", ".join(g.name for g in failed)
        if rules.on_fail == "rollback":
            return Decision("rollback", f"gate failed: {names}", here, 0.0, gates)
        return Decision("hold", f"gate failed: {names}", here, here, gates)
    waiting = [g.name for g in gates if g.verdict == "wait"]
    if waiting:
        return Decision("wait", "interval still spans the bound: " + ", ".join(waiting),
                        here, here, gates)
    target = rules.steps[state.step + 1]
    return Decision("promote", "every gate passed", here, target, gates)


_STILL: dict[Status, str] = {"paused": "paused by hand", "held": "held after a failed gate",
                             "rolled_back": "rolled back", "complete": "complete",
                             "running": "running"}


def apply(state: CanaryState, decision: Decision, rules: CanaryRules,
          now: float) -> CanaryState:
    """The state after an automatic decision (wait changes nothing)."""
    if decision.action == "promote":
        step = state.step + 1
        status: Status = "complete" if step >= len(rules.steps) - 1 else "running"
        return CanaryState(step, now, status, state.version + 1)
    if decision.action == "rollback":
        return CanaryState(ROLLED_BACK, now, "rolled_back", state.version + 1)
    if decision.action == "hold" and state.status == "running" and decision.gates:
        return replace(state, status="held", version=state.version + 1)
    return state


def manual(state: CanaryState, event: ManualEvent, rules: CanaryRules,
           now: float) -> tuple[CanaryState, Decision]:
    """A human's promote, rollback, pause or resume, as the state after it and the
    decision recorded for it. Resume from a rollback starts again at the first step."""
    here = state.percent(rules)
    last = len(rules.steps) - 1
    if event == "promote":
        step = min(state.step + 1, last)
        status: Status = "complete" if step == last else "running"
        after = CanaryState(step, now, status, state.version + 1)
        return after, Decision("promote", "promoted by hand", here, after.percent(rules),
                               by="hand")
    if event == "rollback":
        after = CanaryState(ROLLED_BACK, now, "rolled_back", state.version + 1)
        return after, Decision("rollback", "rolled back by hand", here, 0.0, by="hand")
    if event == "pause":
        after = replace(state, status="paused", version=state.version + 1)
        return after, Decision("hold", "paused by hand", here, here, by="hand")
    step = max(state.step, 0)
    status = "complete" if step == last else "running"
    after = CanaryState(step, now, status, state.version + 1)
    return after, Decision("wait", "resumed by hand", here, after.percent(rules), by="hand")


def step_stats(observations: Sequence[tuple[str, bool, float | None]]) -> StepStats:
    """StepStats from (side, failed, duration_ms) triples (the simulation, tests)."""
    sides: dict[str, tuple[int, int, list[float]]] = {BASTION: (0, 0, []), OPENAI: (0, 0, [])}
    for side, failed, duration in observations:
        n, e, ds = sides[side]
        if duration is not None:
            ds.append(duration)
        sides[side] = (n + 1, e + failed, ds)
    return StepStats(*(SideStats(n, e, tuple(ds[-MAX_LATENCY_SAMPLES:]))
                       for n, e, ds in (sides[BASTION], sides[OPENAI])))


def step_key(state: CanaryState) -> str:
    """What a step's evidence is filed under: a new step, a rollback or a resume starts
    afresh."""
    return f"{state.step}@{state.step_started:.3f}"


def _number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None  # JSON has no inf or NaN


def decision_fields(decision: Decision) -> dict[str, object]:
    """A decision as plain JSON values (the store's history, the access-log record)."""
    return {
        "decision": decision.action, "reason": decision.reason, "by": decision.by,
        "from_percent": decision.from_percent, "to_percent": decision.to_percent,
        "gates": [{"name": g.name, "verdict": g.verdict, "bound": g.bound, "why": g.why,
                   **({"estimate": _number(g.figure.estimate), "low": _number(g.figure.low),
                       "high": _number(g.figure.high)} if g.figure is not None else {})}
                  for g in decision.gates],
    }

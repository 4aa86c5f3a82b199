"""`bastion-edge cutover status | promote | rollback | pause | resume`: the canary by hand.

Reads the same store the proxies share (`responses_state.store` of the rules, in the
confdir for SQLite), so a running proxy follows an event at its next state read.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from bastion_edge.config.canary_rules import CanaryRules
from bastion_edge.config.rules import Rules, RulesError, apply_environment, load_rules
from bastion_edge.core.canary import GateResult
from bastion_edge.state.canary_control import CanaryControl, Status
from bastion_edge.state.canary_store import (
    CanaryStoreError,
    canary_store_location,
    open_canary_store,
)
from bastion_edge.telemetry.cutover_metrics import cutover_record

ACTIONS = ("status", "promote", "rollback", "pause", "resume")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cutover = subparsers.add_parser(
        "cutover", help="the canary: its step, gates and next decision; act by hand",
        description="status prints the step, each gate's figure with its 95 %% interval "
                    "and the next decision; promote, rollback, pause and resume act on "
                    "the state every proxy shares.")
    cutover.add_argument("action", choices=ACTIONS)
    cutover.add_argument("--rules", default=None, metavar="rules.yaml",
                         help="default: $BASTION_RULES, else ./rules.yaml")
    cutover.add_argument("--confdir", default="~/.bastion-edge",
                         help="the proxy's confdir (where the SQLite store lives)")
    cutover.add_argument("--access-log", default=None, metavar="PATH",
                         help="also append the decision to this access log")
    cutover.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = args.rules or os.environ.get("BASTION_RULES") or "rules.yaml"
    try:
        rules = load_rules(path)
    except (RulesError, OSError) as e:
        print(f"bastion-edge cutover: rules {path}: {e}", file=sys.stderr)
        return 1
    location = canary_store_location(rules.responses_state.store,
                                     Path(os.path.expanduser(args.confdir)))
    canary = rules.cutover.canary
    if rules.cutover.mode != "canary":
        print(f"note: cutover.mode is {rules.cutover.mode}, not canary: the proxy does not "
              "follow this state", file=sys.stderr)
    try:
        return asyncio.run(_act(args, location, canary))
    except CanaryStoreError as e:
        print(f"bastion-edge cutover: store {location}: {e}", file=sys.stderr)
        return 1


async def _act(args: argparse.Namespace, location: str, canary: CanaryRules) -> int:
    store = open_canary_store(location)
    try:
        control = CanaryControl(store, lambda: canary)
        if args.action != "status":
            state, decision = await control.act(args.action)
            if args.access_log:
                with open(args.access_log, "a", encoding="utf-8") as log:
                    log.write(cutover_record(decision, state.step_started, state.step) + "\n")
            print(f"{args.action}: {decision.from_percent:g} % -> {decision.to_percent:g} %"
                  f" ({state.status})")
        print(render_status(await control.status(), canary, store.location))
    finally:
        await store.close()
    return 0


def _figure(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3g}"


def gate_line(gate: GateResult) -> str:
    if gate.figure is None:
        return f"  {gate.name:<24} off ({gate.why})"
    f = gate.figure
    estimate = "-" if math.isnan(f.estimate) else _figure(f.estimate)
    bound = "≥" if gate.name == "agreement" else "≤"
    return (f"  {gate.name:<24} {estimate:>7}  95 % [{_figure(f.low)}, {_figure(f.high)}]  "
            f"need {bound} {gate.bound:g}  -> {gate.verdict}  ({gate.why})")


def render_status(status: Status, canary: CanaryRules, location: str) -> str:
    state = status.state
    started = datetime.fromtimestamp(state.step_started, UTC).isoformat(timespec="seconds")
    steps = " ".join(f"[{s:g}]" if i == state.step else f"{s:g}"
                     for i, s in enumerate(canary.steps))
    lines = [f"store:    {location}",
             f"status:   {state.status}, Bastion gets {status.percent:g} % "
             f"(steps {steps}%), step since {started}",
             f"evidence: at least {canary.min_requests} requests a side and "
             f"{canary.min_seconds:g} s per step; on failure {canary.on_fail}",
             "gates:"]
    lines += [gate_line(g) for g in status.gates]
    lines.append(f"next:     {status.next.action} ({status.next.reason})")
    if status.history:
        lines.append("decisions:")
        for entry in status.history:
            when = entry.get("time")
            stamp = (datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
                     if isinstance(when, int | float) else "?")
            lines.append(f"  {stamp}  {entry.get('decision')}  {entry.get('from_percent')} "
                         f"-> {entry.get('to_percent')} %  by {entry.get('by')}: "
                         f"{entry.get('reason')}")
    return "\n".join(lines)


def describe_cutover(rules: Rules) -> list[str]:
    """The cutover mode and both upstreams (`check`, the `run` banner)."""
    c = rules.cutover
    mode = {"split": f"split ({c.split_percent:g} % to Bastion, sticky by {c.sticky_by})",
            "canary": "canary (steps " + ", ".join(f"{s:g}" for s in c.canary.steps)
                      + f" %; on failure {c.canary.on_fail}; `bastion-edge cutover status`)",
            "mirror": f"mirror (at most {c.mirror_max_in_flight} copies in flight, "
                      f"{c.mirror_agreement_share:g} of pairs compared by bge-m3)"}
    line = f"cutover: {mode.get(c.mode, c.mode)}"
    if c.mode == "rewrite":
        return [line]
    return [line, f"  Bastion: {rules.upstream.base_url}   OpenAI: {c.openai_base_url}"]


def cutover_banner(path: Path) -> str:
    """What `run` prints about the cutover at start ("" when the rules cannot be read:
    the proxy itself reports that)."""
    try:
        rules = apply_environment(load_rules(path), os.environ)
    except (RulesError, OSError):
        return ""
    return "\n".join(describe_cutover(rules))

"""`cutover.canary` of rules.yaml: the steps a canary moves Bastion's share through and
the gates that decide each move (read here, decided by core.canary).

    cutover:
      mode: canary
      canary:
        steps: [1, 5, 25, 50, 100]       # percent of traffic to Bastion, sticky as in split
        min_requests: 200                # per step, on each side, before a decision
        min_seconds: 1800                # per step
        gates: {max_error_rate_increase_pp: 1, max_p95_ratio: 1.5, min_agreement: 0.9}
        on_fail: rollback                # to 0 % (OpenAI), or `hold`
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bastion_edge.config.reader import Path_, Reader

OnFail = Literal["rollback", "hold"]
CANARY_KEYS = ("steps", "min_requests", "min_seconds", "gates", "on_fail")
GATE_KEYS = ("max_error_rate_increase_pp", "max_p95_ratio", "min_agreement")


@dataclass(frozen=True, slots=True)
class CanaryGates:
    max_error_rate_increase_pp: float | None = 1.0  # None: the gate is off
    max_p95_ratio: float | None = 1.5
    min_agreement: float | None = 0.9


@dataclass(frozen=True, slots=True)
class CanaryRules:
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    min_requests: int = 200
    min_seconds: float = 1800.0
    gates: CanaryGates = field(default_factory=CanaryGates)
    on_fail: OnFail = "rollback"


def read_canary(reader: Reader, value: object, path: Path_) -> CanaryRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, CANARY_KEYS)
    canary = CanaryRules()
    if "steps" in section:
        canary = replace(canary, steps=_steps(reader, section["steps"], (*path, "steps")))
    if "min_requests" in section:
        canary = replace(canary, min_requests=reader.positive_integer(
            section["min_requests"], (*path, "min_requests")))
    if "min_seconds" in section:
        seconds = section["min_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise reader.fail((*path, "min_seconds"), "expected a number of seconds >= 0")
        canary = replace(canary, min_seconds=float(seconds))
    if "gates" in section:
        canary = replace(canary, gates=_gates(reader, section["gates"], (*path, "gates")))
    if "on_fail" in section:
        on_fail: OnFail = reader.choice(section["on_fail"], (*path, "on_fail"),
                                        ("rollback", "hold"))
        canary = replace(canary, on_fail=on_fail)
    return canary


def _steps(reader: Reader, value: object, path: Path_) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise reader.fail(path, "expected a list of percents, e.g. [1, 5, 25, 50, 100]")
    steps: list[float] = []
    for i, step in enumerate(value):
        if isinstance(step, bool) or not isinstance(step, int | float) or not 0 < step <= 100:
            raise reader.fail((*path, i), "expected a percent above 0, at most 100")
        if steps and step <= steps[-1]:
            raise reader.fail((*path, i), "expected steps in increasing order")
        steps.append(float(step))
    if steps[-1] != 100:
        raise reader.fail(path, "expected the last step to be 100 (all traffic to Bastion)")
    return tuple(steps)


def _gates(reader: Reader, value: object, path: Path_) -> CanaryGates:
    """Each gate a number, or null to turn it off; unnamed gates keep their default."""
    section = reader.mapping(value, path)
    reader.only_keys(section, path, GATE_KEYS)
    gates = CanaryGates()
    for name in GATE_KEYS:
        if name not in section:
            continue
        raw = section[name]
        if raw is not None:
            raw = reader.number(raw, (*path, name))
            if name == "min_agreement" and raw > 1:
                raise reader.fail((*path, name), "expected a share from 0 to 1")
        gates = replace(gates, **{name: raw})
    return gates

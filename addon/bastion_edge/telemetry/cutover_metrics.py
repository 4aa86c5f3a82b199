"""`bastion_edge_cutover_*` metrics and the access-log record of a canary decision.

  bastion_edge_cutover_percent               Bastion's share of traffic now (canary step)
  bastion_edge_cutover_decisions_total{decision}
                                             decisions made: promote, hold, rollback, wait
                                             (by the canary or by hand)

Every worker reads the same shared state, so with `--workers` the gauge keeps the most
recent value a live worker set.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from bastion_edge.core.canary import Decision, decision_fields

DECISIONS = ("promote", "hold", "rollback", "wait")


class CutoverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.percent = Gauge(
            "bastion_edge_cutover_percent",
            "Share of traffic the cutover sends to Bastion now, in percent (a canary's "
            "current step).", registry=registry, multiprocess_mode="livemostrecent")
        self.decisions = Counter(
            "bastion_edge_cutover_decisions",
            "Canary decisions, automatic or by hand.", ["decision"], registry=registry)
        self._children = {d: self.decisions.labels(d) for d in DECISIONS}

    def decided(self, decision: Decision) -> None:
        self._children[decision.action].inc()
        self.percent.set(decision.to_percent)

    def at(self, percent: float) -> None:
        self.percent.set(percent)


def cutover_record(decision: Decision, now: float, step: int) -> str:
    """The access-log line of one decision (`"event": "cutover"`), without newline."""
    fields = {"time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
              "event": "cutover", "step": step, **decision_fields(decision)}
    return json.dumps(fields, separators=(",", ":"))

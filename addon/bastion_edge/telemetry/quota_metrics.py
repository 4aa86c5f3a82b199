"""`bastion_edge_quota_*` metrics, registered on BastionEdge's registry.

  bastion_edge_quota_rejections_total{app,kind}   kind: requests, tokens (over a quota),
                                                  store_outage (fail_closed refusals)
  bastion_edge_quota_remaining{app,limit}         headroom left in the current window as
                                                  of the app's last request (limit:
                                                  requests_per_minute, tokens_per_minute,
                                                  tokens_per_day)
  bastion_edge_quota_store_errors_total{operation,mode}
                                                  store failures (admit, debit) and the
                                                  outage mode that answered them

Labels are bounded: `app_label` maps undeclared apps to `other` (Metrics.app_label).
With `--workers`, the gauge keeps the most recent value any live worker set: every
worker reads the same shared counters, so the latest reading is the freshest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from bastion_edge.core.quota import Admitted, Rejected, Verdict

STORE_OUTAGE = "store_outage"


class QuotaMetrics:
    def __init__(self, registry: CollectorRegistry,
                 app_label: Callable[[str | None], str]) -> None:
        r = registry
        self._app_label = app_label
        self.rejections = Counter(
            "bastion_edge_quota_rejections",
            "Requests refused by a per-app quota (kind: requests, tokens) or by a quota "
            "store outage in fail_closed mode (kind: store_outage).",
            ["app", "kind"], registry=r)
        self.remaining = Gauge(
            "bastion_edge_quota_remaining",
            "Headroom left in an app's current quota window, as of its last request.",
            ["app", "limit"], registry=r, multiprocess_mode="livemostrecent")
        self.store_errors = Counter(
            "bastion_edge_quota_store_errors",
            "Quota store failures, by operation and the outage mode that answered them.",
            ["operation", "mode"], registry=r)
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Counter | Gauge, *labels: str) -> Any:
        """Label children are cached: `labels()` costs microseconds per call."""
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, app: str | None, verdict: Verdict) -> None:
        """One admission decision: a rejection counted, or the headroom it leaves."""
        label = self._app_label(app)
        if isinstance(verdict, Rejected):
            self._child(self.rejections, label, verdict.kind).inc()
            return
        if not isinstance(verdict, Admitted):
            self._child(self.rejections, label, STORE_OUTAGE).inc()
            return
        if verdict.unmetered:
            return
        quota, usage = verdict.quota, verdict.usage
        for limit, value, used in (
                ("requests_per_minute", quota.requests_per_minute, usage.requests_this_minute),
                ("tokens_per_minute", quota.tokens_per_minute, usage.tokens_this_minute),
                ("tokens_per_day", quota.tokens_per_day, usage.tokens_today)):
            if value is not None:
                self._child(self.remaining, label, limit).set(max(0, value - used))

    def store_failed(self, operation: str, mode: str) -> None:
        """One store failure (operation: admit or debit), answered by `mode`."""
        self._child(self.store_errors, operation, mode).inc()

    def forget_apps(self) -> None:
        """After a reload: drop cached children (apps and quotas may have changed)."""
        self._children.clear()

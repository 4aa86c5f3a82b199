"""Prometheus metrics, `bastion_edge_*`, with bounded label values.

Model labels only take ids named in the rules (as sources or targets); anything
else is reported as `other`, so a client sending random model ids cannot blow up
the series count.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .rules import Rules

OTHER = "other"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bastion_edge_requests", "Requests handled by bastion-edge.",
            ["endpoint", "original_model", "upstream_model", "destination", "status_class",
             "stream"], registry=r)
        self.duration = Histogram(
            "bastion_edge_request_duration_seconds", "Time from request start to response end.",
            ["endpoint", "destination"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram(
            "bastion_edge_time_to_first_byte_seconds",
            "Time from request start to the upstream's response headers.",
            ["endpoint", "destination"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter(
            "bastion_edge_upstream_errors", "Upstream failures answered by the proxy.",
            ["kind"], registry=r)
        self.proxy_errors = Counter(
            "bastion_edge_proxy_errors", "Requests the proxy refused itself (bad input, no key).",
            ["code"], registry=r)
        self.rewrites = Counter(
            "bastion_edge_rewrites", "Rewrites applied, by kind.", ["kind"], registry=r)
        self.reloads = Counter(
            "bastion_edge_rules_reloads", "Rules file (re)loads.", ["result"], registry=r)
        self.last_reload = Gauge(
            "bastion_edge_rules_last_reload_timestamp_seconds",
            "Unix time of the last successful rules load.", registry=r)
        self.rules_info = Info("bastion_edge_rules", "The loaded rules file.", registry=r)
        self.mirror = Counter(
            "bastion_edge_mirror", "Mirrored copies sent to Bastion, by outcome.",
            ["result"], registry=r)
        self.mirror_duration = Histogram(
            "bastion_edge_mirror_duration_seconds", "Duration of mirrored copies.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self._known_models: frozenset[str] = frozenset()

    def rules_loaded(self, rules: Rules, timestamp: float) -> None:
        self._known_models = frozenset(
            {m.pattern for m in rules.models if not m.is_glob}
            | {c.use for m in rules.models for c in m.choices}
        )
        self.reloads.labels("success").inc()
        self.last_reload.set(timestamp)
        self.rules_info.info({"sha256": rules.sha256, "source": rules.source})

    def model_label(self, model: str | None) -> str:
        if not model:
            return "none"
        return model if model in self._known_models else OTHER

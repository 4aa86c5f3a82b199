"""Prometheus metrics, `bastion_edge_*`, with bounded label values.

Model labels only take ids named in the rules (as sources or targets); anything
else is reported as `other`, so a client sending random model ids cannot blow up
the series count.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bastion_edge.config.schema import Rules
from bastion_edge.telemetry.pool_info import MULTIPROC_ENV, GaugeInfo
from bastion_edge.telemetry.token_metrics import TokenMetrics

OTHER = "other"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bastion_edge_requests", "Requests handled by bastion-edge.",
            ["endpoint", "app", "original_model", "upstream_model", "destination",
             "status_class", "stream"], registry=r)
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
            "Unix time of the last successful rules load.", registry=r,
            multiprocess_mode="max")
        self.rules_info: Info | GaugeInfo = Info(
            "bastion_edge_rules", "The loaded rules file.", registry=r) \
            if not os.environ.get(MULTIPROC_ENV) else GaugeInfo(  # `run --workers`
                "bastion_edge_rules", "The loaded rules file.", ["sha256", "source"], r)
        self.mirror = Counter(
            "bastion_edge_mirror", "Mirrored copies sent to Bastion, by outcome.",
            ["result"], registry=r)
        self.mirror_duration = Histogram(
            "bastion_edge_mirror_duration_seconds", "Duration of mirrored copies.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.model_available = Gauge(
            "bastion_edge_model_available",
            "1 when Bastion's GET /v1/models lists the model (for every configured key) and "
            "it has not answered 404 model_not_found since; 0 otherwise.",
            ["model"], registry=r, multiprocess_mode="livemin")
        self.models_last_refresh = Gauge(
            "bastion_edge_models_last_refresh_timestamp_seconds",
            "Unix time Bastion's model list was last read successfully.", registry=r,
            multiprocess_mode="max")
        self.models_refresh_failures = Counter(
            "bastion_edge_models_refresh_failures",
            "Failed reads of Bastion's model list (the last good list is kept).", registry=r)
        self.model_fallbacks = Counter(
            "bastion_edge_model_fallbacks",
            "Requests served by another model than their mapped target: why (unlisted, "
            "not_found after a 404 retry, or the capability the target lacks).",
            ["from_model", "to_model", "reason"], registry=r)
        self.limit_rejections = Counter(
            "bastion_edge_limit_rejections",
            "Requests refused and connections closed by a limit (limits: in the rules).",
            ["limit"], registry=r)
        self.client_connections = Gauge(
            "bastion_edge_client_connections", "Client connections open now.", registry=r,
            multiprocess_mode="livesum")  # --workers: summed over the live workers
        self._known_models: frozenset[str] = frozenset()
        self._known_apps: frozenset[str] = frozenset()
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}
        self._rewrite_children: dict[str, Any] = {}
        self.token_metrics = TokenMetrics(self)  # bastion_edge_tokens_total and friends

    def rules_loaded(self, rules: Rules, timestamp: float) -> None:
        self._known_models = frozenset(
            {m.pattern for m in rules.models if not m.is_glob}
            | {c.use for m in rules.models for c in m.choices}
            | set(rules.fallbacks) | {m for ms in rules.fallbacks.values() for m in ms}
        )
        self._known_apps = frozenset(app.name for app in rules.clients.apps)
        self._children.clear()  # model labels may map differently now
        self.token_metrics.rules_changed()
        self.reloads.labels("success").inc()
        self.last_reload.set(timestamp)
        self.rules_info.info({"sha256": rules.sha256, "source": rules.source})

    def exchange_finished(
        self, *, endpoint: str, app: str | None, original_model: str | None,
        upstream_model: str | None,
        destination: str, status: int | None, stream: bool, duration: float,
        ttfb: float | None, rewrites: list[str],
    ) -> None:
        """Count one exchange. Label children are cached: `labels()` costs microseconds
        per call, and this runs for every request."""
        status_class = f"{status // 100}xx" if status else "error"
        key = (endpoint, self.app_label(app), self.model_label(original_model),
               self.model_label(upstream_model),
               destination, status_class, "true" if stream else "false")
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key),
                self.duration.labels(endpoint, destination),
                self.ttfb.labels(endpoint, destination))
        requests, durations, ttfbs = children
        requests.inc()
        durations.observe(duration)
        if ttfb is not None:
            ttfbs.observe(ttfb)
        for kind in rewrites:
            rewrite = self._rewrite_children.get(kind)
            if rewrite is None:
                rewrite = self._rewrite_children[kind] = self.rewrites.labels(kind)
            rewrite.inc()

    def model_fallback(self, from_model: str, to_model: str | None, reason: str) -> None:
        """One request moved off its target (labels: configured models, fixed reasons)."""
        self.model_fallbacks.labels(self.model_label(from_model), self.model_label(to_model),
                                    reason).inc()

    def models_available(self, availability: dict[str, bool]) -> None:
        """Per Bastion model the rules name (a bounded set): listed now or not."""
        if not os.environ.get(MULTIPROC_ENV):  # no clear() across processes
            self.model_available.clear()
        for model, available in availability.items():
            self.model_available.labels(model).set(1 if available else 0)

    def app_label(self, app: str | None) -> str:
        """An app declared in the rules (a bounded set), else `none`/`other`."""
        if not app:
            return "none"
        return app if app in self._known_apps else OTHER

    def model_label(self, model: str | None) -> str:
        if not model:
            return "none"
        return model if model in self._known_models else OTHER

    def limit_rejected(self, limit: str) -> None:
        """One rejection by `limit` (a name from core.limits.LIMIT_NAMES: bounded)."""
        self.limit_rejections.labels(limit).inc()

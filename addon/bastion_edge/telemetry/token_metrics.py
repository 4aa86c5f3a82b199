"""Token metrics: `bastion_edge_tokens_total`, tokens per request, TTS characters.

Labels are bounded as for `bastion_edge_requests_total` (`Metrics.model_label`,
`Metrics.app_label`). Only figures the upstream reported are counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from bastion_edge.core.usage import DIRECTIONS, INPUT, OUTPUT, Usage

if TYPE_CHECKING:
    from bastion_edge.telemetry.metrics import Metrics

# The OpenTelemetry GenAI semantic conventions' advised boundaries for
# `gen_ai.client.token.usage` (powers of 4 from 1 to 4^13).
GENAI_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
                       4194304, 16777216, 67108864)


class TokenMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        r = metrics.registry
        self.tokens = Counter(
            "bastion_edge_tokens", "Tokens the upstream reported, by direction "
            "(input, output, cached_input, reasoning).",
            ["direction", "app", "original_model", "upstream_model", "destination"],
            registry=r)
        self.per_request = Histogram(
            "bastion_edge_tokens_per_request", "Input or output tokens of one request, as "
            "the upstream reported them (GenAI convention buckets).",
            ["direction", "upstream_model", "destination"], buckets=GENAI_TOKEN_BUCKETS,
            registry=r)
        self.tts_characters = Counter(
            "bastion_edge_tts_characters", "Characters of speech input synthesized.",
            ["app", "original_model", "destination"], registry=r)
        self.unreported = Counter(
            "bastion_edge_tokens_unreported",
            "Exchanges whose reply carried no usage (nothing counted, nothing estimated).",
            ["endpoint", "destination"], registry=r)
        self._children: dict[tuple[object, ...], Any] = {}
        self._series: dict[tuple[str, ...], tuple[tuple[Any, Any], ...]] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)  # labels() costs microseconds: cache the children
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def rules_changed(self) -> None:
        self._children.clear()
        self._series.clear()

    def exchange(self, *, endpoint: str, app: str | None, original_model: str | None,
                 upstream_model: str | None, destination: str, usage: Usage | None,
                 tts_characters: int | None) -> None:
        m = self._metrics
        app_l, original_l = m.app_label(app), m.model_label(original_model)
        upstream_l = m.model_label(upstream_model)
        if tts_characters is not None:
            self._child(self.tts_characters, app_l, original_l, destination).inc(tts_characters)
        if usage is None:
            if tts_characters is None:
                self._child(self.unreported, endpoint, destination).inc()
            return
        key = (app_l, original_l, upstream_l, destination)
        children = self._series.get(key)
        if children is None:
            children = self._series[key] = self._children_of(*key)
        for (counter, histogram), count in zip(children, usage, strict=True):
            if count is not None:
                counter.inc(count)
                if histogram is not None:
                    histogram.observe(count)

    def _children_of(self, app: str, original: str, upstream: str,
                     destination: str) -> tuple[tuple[Any, Any], ...]:
        """Per direction (in `Usage` order): its counter child, its histogram child."""
        return tuple((self.tokens.labels(direction, app, original, upstream, destination),
                      self.per_request.labels(direction, upstream, destination)
                      if direction in (INPUT, OUTPUT) else None)
                     for direction in DIRECTIONS)

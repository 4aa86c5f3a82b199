"""The Agents SDKs' spans (core/agent_traces.py) exported with the proxy's own spans.

Through the OTLP pipeline `OtelExport` owns (same provider, resource and exporter), on
a tracer of its own whose id generator hands out the ids derived from the SDK's, so
parent links and trace grouping survive: a span's parent is the span the SDK named.
Without OpenTelemetry configured the spans are dropped and counted
(`bastion_edge_traces_dropped_total`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from bastion_edge.core.agent_traces import AgentSpan
from bastion_edge.telemetry.otel import OtelExport

TRACER_NAME = "bastion_edge.agents"


class TraceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter(
            "bastion_edge_traces_dropped",
            "Agents SDK trace spans answered by the proxy and dropped (no OpenTelemetry).",
            registry=registry)
        self.exported = Counter(
            "bastion_edge_traces_exported",
            "Agents SDK trace spans exported over OpenTelemetry.", registry=registry)


class _NextIds:
    """An OTel id generator that hands out the ids set for the next span (else random)."""

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback
        self.trace_id: int | None = None
        self.span_id: int | None = None

    def generate_trace_id(self) -> int:
        chosen, self.trace_id = self.trace_id, None
        return chosen or int(self._fallback.generate_trace_id())

    def generate_span_id(self) -> int:
        chosen, self.span_id = self.span_id, None
        return chosen or int(self._fallback.generate_span_id())

    def is_trace_id_random(self) -> bool:
        return False


class AgentSpanExport:
    """Agent spans onto `otel`'s tracer provider (None: dropped and counted)."""

    def __init__(self, otel: OtelExport | None, metrics: TraceMetrics) -> None:
        self.metrics = metrics
        self._tracer: Any = None
        self._ids: _NextIds | None = None
        if otel is not None:
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

            provider = otel._traces  # the proxy's own provider, exporter and resource
            self._tracer = provider.get_tracer(TRACER_NAME)
            self._ids = _NextIds(RandomIdGenerator())
            self._tracer.id_generator = self._ids

    @property
    def exporting(self) -> bool:
        return self._tracer is not None

    def export(self, spans: Sequence[AgentSpan]) -> None:
        if self._tracer is None or self._ids is None:
            self.metrics.dropped.inc(len(spans))
            return
        from opentelemetry import trace
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        for span in spans:
            parent = None
            if span.trace_id and span.parent_span_id:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(
                    span.trace_id, span.parent_span_id, is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED))))
            self._ids.trace_id, self._ids.span_id = span.trace_id, span.span_id
            started = self._tracer.start_span(span.name, context=parent,
                                              attributes=span.attributes,
                                              start_time=span.start_ns)
            if span.error is not None:
                started.set_status(Status(StatusCode.ERROR, span.error))
            started.end(end_time=span.end_ns)
        self.metrics.exported.inc(len(spans))

"""OpenTelemetry (optional: `pip install bastion-edge[otel]`): one span per exchange with
the GenAI semantic-convention attributes, and the `gen_ai.client.token.usage` metric,
exported over OTLP/HTTP by the OpenTelemetry SDK.

Configured by the standard variables only: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or its
`_TRACES_`/`_METRICS_` forms) is set and `OTEL_SDK_DISABLED` is not `true`; the SDK reads
the rest (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`, ...). An app's incoming `traceparent` is
continued: the exchange's span is its child, in its trace (and the header still goes
upstream as the app sent it).

The span is made when the exchange ends, from plain values, with the exchange's own
start and end times; export runs on the SDK's background threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from bastion_edge.core.usage import Usage
from bastion_edge.telemetry.token_metrics import GENAI_TOKEN_BUCKETS

log = logging.getLogger("bastion_edge")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
# gen_ai.operation.name by endpoint (the convention's names where it has one).
OPERATIONS = {"chat.completions": "chat", "responses": "chat", "completions": "text_completion",
              "embeddings": "embeddings"}
# The convention's advised boundaries for gen_ai.client.operation.duration (seconds).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for OTLP export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def error_type(error: str | None, status: int | None) -> str | None:
    """`error.type`: the proxy's error code, else the failing HTTP status, else None."""
    if error is not None:
        return error
    if status is None:
        return "no_response"
    return str(status) if status >= 400 else None


class GenAiExchange(NamedTuple):
    """One finished exchange, as plain values."""

    endpoint: str
    started: float  # unix seconds
    finished: float
    headers: Mapping[str, str]  # the app's request headers, lower-cased (traceparent)
    destination: str  # bastion | openai | proxy
    server_address: str | None
    original_model: str | None
    request_model: str | None  # the model the upstream was asked for
    response_model: str | None  # the model the reply named
    usage: Usage | None
    status: int | None
    rewrites: Sequence[str]
    app: str | None
    decision: str
    error: str | None
    tts_characters: int | None = None


class OtelExport:
    """Owns its tracer and meter providers (the process-wide globals are left alone)."""

    def __init__(self, environ: Mapping[str, str], bound: Callable[[str | None], str]) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from bastion_edge import __version__

        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "bastion-edge"}
        resource = Resource.create({**attributes, "service.version": __version__})
        self._traces = TracerProvider(resource=resource)
        self._traces.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._metrics = MeterProvider(resource=resource, metric_readers=[
            PeriodicExportingMetricReader(OTLPMetricExporter())])
        self._tracer = self._traces.get_tracer("bastion_edge", __version__)
        meter = self._metrics.get_meter("bastion_edge", __version__)
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=[float(b) for b in GENAI_TOKEN_BUCKETS])
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self._propagator = TraceContextTextMapPropagator()
        self._client_kind = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._bound = bound  # model ids on metrics: the rules' bounded set

    @classmethod
    def from_environment(cls, environ: Mapping[str, str],
                         bound: Callable[[str | None], str]) -> OtelExport | None:
        """The exporter the environment asks for; None when off or the extra is missing."""
        if not wanted(environ):
            return None
        try:
            return cls(environ, bound)
        except ImportError:
            log.warning("bastion-edge: OTEL_EXPORTER_OTLP_* is set but OpenTelemetry is not "
                        "installed; run `pip install 'bastion-edge[otel]'`")
            return None

    def exchange(self, done: GenAiExchange) -> None:
        operation = OPERATIONS.get(done.endpoint, done.endpoint)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": done.destination,
            "bastion_edge.endpoint": done.endpoint,
            "bastion_edge.destination": done.destination,
            "bastion_edge.decision": done.decision,
            "bastion_edge.rewrites": list(done.rewrites),
            "bastion_edge.tokens_source": "upstream" if done.usage else "not_reported",
        }
        optional = {
            "gen_ai.request.model": done.request_model,
            "gen_ai.response.model": done.response_model,
            "server.address": done.server_address,
            "bastion_edge.original_model": done.original_model,
            "bastion_edge.app": done.app,
            "http.response.status_code": done.status,
            "error.type": error_type(done.error, done.status),
            "bastion_edge.tts_characters": done.tts_characters,
        }
        if done.usage is not None:
            optional.update({
                "gen_ai.usage.input_tokens": done.usage.input,
                "gen_ai.usage.output_tokens": done.usage.output,
                "bastion_edge.usage.cached_input_tokens": done.usage.cached_input,
                "bastion_edge.usage.reasoning_tokens": done.usage.reasoning,
            })
        attributes.update({k: v for k, v in optional.items() if v is not None})
        parent = self._propagator.extract(carrier=dict(done.headers))
        name = f"{operation} {done.request_model}" if done.request_model else operation
        span = self._tracer.start_span(name, context=parent, kind=self._client_kind,
                                       attributes=attributes,
                                       start_time=int(done.started * 1e9))
        if "error.type" in attributes:
            span.set_status(self._error)
        span.end(end_time=int(done.finished * 1e9))
        self._record_metrics(done, operation)

    def _record_metrics(self, done: GenAiExchange, operation: str) -> None:
        common = {"gen_ai.operation.name": operation, "gen_ai.provider.name": done.destination,
                  "gen_ai.request.model": self._bound(done.request_model),
                  "gen_ai.response.model": self._bound(done.response_model)}
        if done.server_address:
            common["server.address"] = done.server_address
        self._duration.record(done.finished - done.started, common)
        if done.usage is None:
            return
        for kind, count in (("input", done.usage.input), ("output", done.usage.output)):
            if count is not None:
                self._token_usage.record(count, {**common, "gen_ai.token.type": kind})

    def shutdown(self) -> None:
        """Export what is pending and stop the SDK's threads (blocking: run off the loop)."""
        self._traces.shutdown()
        self._metrics.shutdown()

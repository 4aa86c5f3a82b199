"""Agents SDK trace uploads: the payload the real `openai-agents` SDK builds, read into
GenAI agent spans, exported on an OTel provider (in memory) or dropped and counted."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from bastion_edge.core import agent_traces
from bastion_edge.core.agent_traces import NotAnUpload, parse_upload, trace_upload_destination
from bastion_edge.telemetry.agent_spans import AgentSpanExport, TraceMetrics

agents_tracing = pytest.importorskip("agents.tracing")


class _Collect:
    """A trace processor that keeps what the SDK's backend exporter would upload."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def on_trace_start(self, trace: Any) -> None:
        exported = trace.export()
        if exported:
            self.items.append(exported)

    def on_trace_end(self, trace: Any) -> None:
        pass

    def on_span_start(self, span: Any) -> None:
        pass

    def on_span_end(self, span: Any) -> None:
        exported = span.export()
        if exported:
            self.items.append(exported)

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


@pytest.fixture
def sdk_upload(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """`{"data": [...]}` as BackendSpanExporter posts it, from real SDK spans. On a
    provider of the test's own: the SDK's global one (made lazily, with its network
    client) is left for the end-to-end tests to make under the proxy's environment."""
    from agents.tracing import setup
    from agents.tracing.provider import DefaultTraceProvider

    collect = _Collect()
    provider = DefaultTraceProvider()
    provider.register_processor(collect)
    monkeypatch.setattr(setup, "GLOBAL_TRACE_PROVIDER", provider)
    with agents_tracing.trace("Weather workflow", group_id="g1"), \
            agents_tracing.agent_span(name="Assistant", tools=["get_weather"],
                                      handoffs=["Expert"]):
        with agents_tracing.generation_span(
                model="gpt-4o", usage={"input_tokens": 12, "output_tokens": 3}):
            pass
        with agents_tracing.function_span(name="get_weather", input='{"city": "Paris"}',
                                          output="sunny") as tool:
            tool.set_error({"message": "tool failed", "data": None})
        with agents_tracing.handoff_span(from_agent="Assistant", to_agent="Expert"):
            pass
    return json.dumps({"data": collect.items}).encode()


def by_type(spans: Any) -> dict[str, Any]:
    return {span.attributes["openai_agents.span_type"]: span for span in spans}


def test_sdk_payload_becomes_genai_agent_spans(sdk_upload: bytes) -> None:
    upload = parse_upload(sdk_upload)
    assert upload.traces == 1 and upload.skipped == 0
    spans = by_type(upload.spans)
    assert set(spans) == {"agent", "generation", "function", "handoff"}
    agent = spans["agent"]
    assert agent.name == "invoke_agent Assistant"
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "Assistant"
    assert agent.attributes["openai_agents.tools"] == ["get_weather"]
    assert agent.attributes["openai_agents.trace_id"].startswith("trace_")
    assert "openai_agents.parent_id" not in agent.attributes  # the root
    tool = spans["function"]
    assert tool.name == "execute_tool get_weather"
    assert tool.attributes["gen_ai.tool.name"] == "get_weather"
    assert tool.attributes["openai_agents.parent_id"] == agent.attributes["openai_agents.span_id"]
    assert tool.error == "tool failed" and tool.attributes["error.type"] == "tool failed"
    assert "Paris" not in json.dumps(tool.attributes) and "sunny" not in json.dumps(
        tool.attributes)  # tool content stays out of telemetry
    generation = spans["generation"]
    assert generation.name == "chat gpt-4o"
    assert generation.attributes["gen_ai.usage.input_tokens"] == 12
    assert generation.attributes["gen_ai.usage.output_tokens"] == 3
    assert spans["handoff"].attributes["openai_agents.to_agent"] == "Expert"
    assert tool.parent_span_id == agent.span_id and tool.trace_id == agent.trace_id
    assert agent.start_ns is not None and agent.end_ns is not None
    assert agent.start_ns <= tool.start_ns <= tool.end_ns <= agent.end_ns


def test_not_an_upload() -> None:
    for raw in (b"nope", b"[]", b'{"data": 1}'):
        with pytest.raises(NotAnUpload):
            parse_upload(raw)
    assert parse_upload(b'{"data": [1, {"object": "x"}]}').skipped == 2


def test_destination_follows_the_apps_traffic() -> None:
    assert trace_upload_destination("openai") == "openai"
    assert trace_upload_destination("bastion") == "proxy"
    assert agent_traces.is_ingest_path("/v1/traces/ingest")
    assert not agent_traces.is_ingest_path("/v1/traces")


def test_exported_with_the_sdk_ids_and_parent_links(sdk_upload: bytes) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    metrics = TraceMetrics(CollectorRegistry())
    export = AgentSpanExport(SimpleNamespace(_traces=provider), metrics)  # type: ignore[arg-type]
    upload = parse_upload(sdk_upload)
    export.export(upload.spans)
    finished = {span.name: span for span in memory.get_finished_spans()}
    assert set(finished) == {"invoke_agent Assistant", "execute_tool get_weather",
                             "chat gpt-4o", "handoff Expert"}
    agent, tool = finished["invoke_agent Assistant"], finished["execute_tool get_weather"]
    sdk_trace = str(agent.attributes["openai_agents.trace_id"])
    assert agent.context.trace_id == int(sdk_trace.removeprefix("trace_"), 16)
    assert tool.context.trace_id == agent.context.trace_id
    assert tool.parent is not None and tool.parent.span_id == agent.context.span_id
    assert agent.parent is None
    assert tool.status.status_code.name == "ERROR"
    assert metrics.exported._value.get() == 4
    assert metrics.dropped._value.get() == 0


def test_without_otel_spans_are_counted_as_dropped(sdk_upload: bytes) -> None:
    metrics = TraceMetrics(CollectorRegistry())
    export = AgentSpanExport(None, metrics)
    assert not export.exporting
    export.export(parse_upload(sdk_upload).spans)
    assert metrics.dropped._value.get() == 4

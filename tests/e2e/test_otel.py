"""OpenTelemetry export end to end: `bastion-edge run` with the standard OTEL_EXPORTER_OTLP_*
variables sends a span per exchange and `gen_ai.client.token.usage` to an OTLP/HTTP
receiver the test runs on 127.0.0.1; every attribute is checked, and the app's incoming
`traceparent` is continued (same trace, the app's span as parent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from harness import APP_KEY, BASTION_KEY, Proxy, Sandbox, proxy_env, start_proxy, wait_until
from otlp_receiver import OtlpReceiver, attributes
from trust_support import BILLING_SECRET, rules_with_apps, with_credentials

from bastion_edge.telemetry.token_metrics import GENAI_TOKEN_BUCKETS

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{APP_SPAN_ID}-01"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def edge(sandbox: Sandbox, receiver: OtlpReceiver,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("otel")
    env = proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BASTION_KEY,
                    OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                    OTEL_SERVICE_NAME="billing-sidecar",
                    OTEL_BSP_SCHEDULE_DELAY="100", OTEL_METRIC_EXPORT_INTERVAL="300")
    running = start_proxy(tmp, env, rules_with_apps(tmp))
    yield running
    assert running.process.stop() == 0, running.process.log()


@pytest.fixture
def billing(monkeypatch: pytest.MonkeyPatch, edge: Proxy) -> openai.OpenAI:
    """The app `billing`, authenticated by the credentials in its proxy URL."""
    for name, value in edge.app_env().items():
        monkeypatch.setenv(name, value)
    proxy = with_credentials(edge.app_env()["HTTPS_PROXY"], "billing", BILLING_SECRET)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return openai.OpenAI(api_key=APP_KEY, max_retries=0)


def span_named(receiver: OtlpReceiver, name: str) -> Any:
    wait_until(lambda: any(s.name == name for s in receiver.spans()), what=f"span {name}")
    return next(s for s in receiver.spans() if s.name == name)


def test_chat_span_continues_the_app_trace_with_genai_attributes(
        billing: openai.OpenAI, receiver: OtlpReceiver, edge: Proxy) -> None:
    billing.chat.completions.create(model="gpt-4o", messages=MESSAGES,  # type: ignore[arg-type]
                                    extra_headers={"traceparent": TRACEPARENT})
    span = span_named(receiver, "chat gpt-oss-120b")
    assert span.trace_id.hex() == TRACE_ID  # continued, not replaced
    assert span.parent_span_id.hex() == APP_SPAN_ID
    assert span.span_id.hex() != APP_SPAN_ID
    assert span.kind == span.SPAN_KIND_CLIENT
    assert span.end_time_unix_nano > span.start_time_unix_nano
    got = attributes(span.attributes)
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.request.model"] == "gpt-oss-120b"
    assert got["gen_ai.response.model"] == "gpt-oss-120b"
    assert got["gen_ai.usage.input_tokens"] == 3
    assert got["gen_ai.usage.output_tokens"] == 4
    assert got["server.address"] == "127.0.0.1"  # the sandbox standing in for Bastion
    assert got["gen_ai.provider.name"] == "bastion"
    assert got["bastion_edge.original_model"] == "gpt-4o"
    assert got["bastion_edge.app"] == "billing"
    assert got["bastion_edge.rewrites"] == ["host", "key", "model"]
    assert got["bastion_edge.usage.cached_input_tokens"] == 2
    assert got["bastion_edge.usage.reasoning_tokens"] == 0
    assert got["bastion_edge.tokens_source"] == "upstream"
    assert got["http.response.status_code"] == 200
    assert "error.type" not in got
    assert {"service.name": "billing-sidecar"}.items() <= receiver.resources()[0].items()
    assert ('bastion_edge_tokens_total{app="billing",destination="bastion",direction="input",'
            'original_model="gpt-4o",upstream_model="gpt-oss-120b"} 3.0') in edge.metrics()


def test_stream_span_has_the_usage_the_app_did_not_ask_for(
        billing: openai.OpenAI, receiver: OtlpReceiver) -> None:
    list(billing.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi",
                                    stream=True))
    span = span_named(receiver, "text_completion gpt-oss-20b")
    got = attributes(span.attributes)
    assert got["gen_ai.operation.name"] == "text_completion"
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (1, 4)
    assert len(span.parent_span_id) == 0  # no traceparent: a root span of its own trace


def test_token_usage_metric(billing: openai.OpenAI, receiver: OtlpReceiver) -> None:
    billing.embeddings.create(model="text-embedding-3-small", input="one two three")

    def embeddings_points() -> list[Any]:
        return [p for p in receiver.metric_points("gen_ai.client.token.usage")
                if attributes(p.attributes).get("gen_ai.operation.name") == "embeddings"]
    wait_until(embeddings_points, what="gen_ai.client.token.usage for embeddings")
    point = embeddings_points()[-1]
    got = attributes(point.attributes)
    assert got == {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "bastion",
                   "gen_ai.request.model": "bge-m3", "gen_ai.response.model": "bge-m3",
                   "server.address": "127.0.0.1", "gen_ai.token.type": "input"}
    assert point.count == 1 and point.sum == 3
    assert list(point.explicit_bounds) == [float(b) for b in GENAI_TOKEN_BUCKETS]

    def chat_token_types() -> set[str]:  # the first test's chat, in some export by now
        return {attributes(p.attributes)["gen_ai.token.type"]
                for p in receiver.metric_points("gen_ai.client.token.usage")
                if attributes(p.attributes).get("gen_ai.operation.name") == "chat"}
    wait_until(lambda: chat_token_types() == {"input", "output"},
               what="gen_ai.client.token.usage for chat, input and output")

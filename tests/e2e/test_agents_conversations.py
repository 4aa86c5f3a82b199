"""The real OpenAI Agents SDK (`openai-agents`) through `bastion-edge run`, unchanged:
`OpenAIConversationsSession`, `Runner.run(conversation_id=...)`, a streamed run in a
conversation, tracing on. Bastion (the sandbox) never sees /v1/conversations nor
/v1/traces/ingest; the agent spans reach the OTLP receiver the test runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import make_client
from harness import APP_KEY, REPO, Proxy, Sandbox, proxy_env, start_proxy, wait_until
from otlp_receiver import OtlpReceiver, attributes
from test_cutover import cutover_proxy
from test_node24 import node24
from test_otel import receiver
from test_transparent import app_env

__all__ = ["receiver"]  # test_otel's module-scoped OTLP receiver fixture

agents = pytest.importorskip("agents")
from agents import (  # noqa: E402
    Agent,
    OpenAIConversationsSession,
    Runner,
    function_tool,
    set_default_openai_client,
)
from agents.tracing import get_trace_provider  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402


@pytest.fixture(scope="module")
def edge(sandbox: Sandbox, receiver: OtlpReceiver,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    env = proxy_env(sandbox, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                    OTEL_BSP_SCHEDULE_DELAY="100", OTEL_METRIC_EXPORT_INTERVAL="300")
    running = start_proxy(tmp_path_factory.mktemp("agents"), env)
    yield running
    assert running.process.stop() == 0, running.process.log()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, edge: Proxy) -> AsyncOpenAI:
    """The app's environment: the proxy's lines and an `sk-` key, nothing else."""
    for name, value in edge.app_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_AGENTS_DISABLE_TRACING", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", APP_KEY)
    # As in a fresh app process: the SDK makes its tracing provider and uploader (with
    # its HTTP client, which reads the proxy variables) on first use, under this env.
    from agents.tracing import processors, setup
    for name, module in (("GLOBAL_TRACE_PROVIDER", setup), ("_global_exporter", processors),
                         ("_global_processor", processors)):
        monkeypatch.setattr(module, name, None)
    client = AsyncOpenAI(api_key=APP_KEY, max_retries=0)
    set_default_openai_client(client, use_for_tracing=True)
    return client


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def agent() -> Agent[Any]:
    return Agent(name="Assistant", instructions="Be brief.", model="gpt-4o",
                 tools=[get_weather])


def journal_paths(sandbox: Sandbox) -> list[str]:
    return [entry["path"] for entry in sandbox.journal()]


def responses_bodies(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(e["body"]) for e in sandbox.journal() if e["path"] == "/v1/responses"]


def test_session_and_conversation_runs_never_reach_bastion(
        app: AsyncOpenAI, sandbox: Sandbox, receiver: OtlpReceiver) -> None:
    sandbox.clear_journal()

    async def scenario() -> tuple[str, list[Any], list[Any]]:
        session = OpenAIConversationsSession(openai_client=app)
        first = await Runner.run(agent(), "What is the weather in Paris?", session=session)
        second = await Runner.run(agent(), "And in Rome?", session=session)
        assert first.final_output and second.final_output
        session_items = await session.get_items()
        conversation = await app.conversations.create(
            items=[{"type": "message", "role": "user", "content": "Remember: blue."}])
        run = await Runner.run(agent(), "What did I ask you to remember?",
                               conversation_id=conversation.id)
        assert run.final_output
        streamed = Runner.run_streamed(agent(), "Say more.",
                                       conversation_id=conversation.id)
        async for _ in streamed.stream_events():
            pass
        assert streamed.final_output
        listed = [item async for item in app.conversations.items.list(
            conversation.id, order="asc")]
        return conversation.id, session_items, listed

    conversation_id, session_items, listed = asyncio.run(scenario())
    get_trace_provider().force_flush()

    texts = [json.dumps(item.model_dump() if hasattr(item, "model_dump") else item)
             for item in session_items]
    assert any("Paris" in t for t in texts) and any("Rome" in t for t in texts)
    user_texts = [part.text for item in listed if getattr(item, "role", None) == "user"
                  for part in item.content]
    assert user_texts == ["Remember: blue.", "What did I ask you to remember?", "Say more."]
    assert sum(1 for item in listed if getattr(item, "role", None) == "assistant") >= 2

    paths = journal_paths(sandbox)
    assert "/v1/responses" in paths
    assert not any(p.startswith("/v1/conversations") for p in paths), paths
    assert not any(p.startswith("/v1/traces") for p in paths), paths
    for body in responses_bodies(sandbox):
        assert "conversation" not in body and body.get("store") is False
    # The conversation run's request to Bastion carried the stored history first.
    remembered = [b for b in responses_bodies(sandbox)
                  if "Remember: blue." in json.dumps(b.get("input"))]
    assert remembered, "the conversation's items were not prepended"

    def agent_spans() -> list[Any]:
        return [s for s in receiver.spans()
                if attributes(s.attributes).get("gen_ai.operation.name") == "invoke_agent"]

    wait_until(lambda: len(agent_spans()) >= 4, what="invoke_agent spans")
    span = agent_spans()[0]
    got = attributes(span.attributes)
    assert got["gen_ai.agent.name"] == "Assistant"
    assert str(got["openai_agents.trace_id"]).startswith("trace_")
    assert span.trace_id.hex() == str(got["openai_agents.trace_id"]).removeprefix("trace_")
    wait_until(lambda: any(attributes(s.attributes).get("gen_ai.operation.name")
                           == "execute_tool" for s in receiver.spans()),
               what="execute_tool span")
    assert conversation_id.startswith("conv_")


JS_AGENTS = REPO / "tests" / "agents_js"
JS_APP = """
import { Agent, run, tool, getGlobalTraceProvider } from '@openai/agents';
import { z } from 'zod';

const getWeather = tool({
  name: 'get_weather', description: 'The weather in a city.',
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});
const agent = new Agent({ name: 'JsAssistant', instructions: 'Be brief.', model: 'gpt-4o',
                          tools: [getWeather] });
const result = await run(agent, 'What is the weather in Paris?');
await getGlobalTraceProvider().forceFlush();
console.log(JSON.stringify({ final: result.finalOutput }));
"""


def test_js_agents_sdk_traces_stay_off_bastion(
        edge: Proxy, sandbox: Sandbox, receiver: OtlpReceiver, tmp_path: Path) -> None:
    if not (JS_AGENTS / "node_modules" / "@openai" / "agents").is_dir():
        pytest.fail("tests/agents_js/node_modules is missing: npm ci --prefix tests/agents_js")
    node = node24()
    sandbox.clear_journal()
    app = JS_AGENTS / "app.mjs"  # beside its node_modules, so imports resolve
    app.write_text(JS_APP)
    try:
        done = subprocess.run([str(node), str(app)], env=app_env(tmp_path, **edge.app_env()),
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        app.unlink()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["final"]
    assert "Tracing" not in done.stderr or "error" not in done.stderr.lower(), done.stderr
    paths = journal_paths(sandbox)
    assert "/v1/responses" in paths
    assert not any(p.startswith("/v1/traces") for p in paths), paths

    def js_spans() -> list[Any]:
        return [s for s in receiver.spans()
                if attributes(s.attributes).get("gen_ai.agent.name") == "JsAssistant"]

    wait_until(lambda: bool(js_spans()), what="the JS agent's invoke_agent span")
    assert js_spans()[0].name == "invoke_agent JsAssistant"


TRACE_BATCH = {"data": [{"object": "trace.span", "id": "span_0123456789abcdef01234567",
                         "trace_id": "trace_0123456789abcdef0123456789abcdef",
                         "parent_id": None, "started_at": "2026-01-01T00:00:00+00:00",
                         "ended_at": "2026-01-01T00:00:01+00:00", "error": None,
                         "span_data": {"type": "agent", "name": "Counted"}}]}


def test_without_otel_uploads_are_answered_and_counted(
        monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sandbox: Sandbox) -> None:
    sandbox.clear_journal()
    client = make_client(monkeypatch, proxy)
    reply = client.post("/traces/ingest", body=TRACE_BATCH, cast_to=httpx.Response,
                        options={"headers": {"OpenAI-Beta": "traces=v1"}})
    assert reply.status_code == 204
    assert sandbox.journal() == []
    assert "bastion_edge_traces_dropped_total 1.0" in proxy.metrics()


def test_observe_mode_keeps_conversations_and_traces_with_openai(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: Sandbox,
        openai_standin: Sandbox) -> None:
    edge = cutover_proxy(tmp_path, sandbox, openai_standin, "  mode: observe\n")
    try:
        sandbox.clear_journal()
        openai_standin.clear_journal()
        client = make_client(monkeypatch, edge)
        for path, body in (("/traces/ingest", TRACE_BATCH), ("/conversations", {})):
            with contextlib.suppress(openai.APIStatusError):  # the stand-in's own answer
                client.post(path, body=body, cast_to=httpx.Response)
        seen = [e["path"] for e in openai_standin.journal()]
        assert "/v1/traces/ingest" in seen and "/v1/conversations" in seen
        assert all(e["headers"]["authorization"] == f"Bearer {APP_KEY}"
                   for e in openai_standin.journal())
        assert sandbox.journal() == []
    finally:
        edge.process.stop()

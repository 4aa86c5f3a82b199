"""Responses state driven through BastionEdge's hooks, with mitmproxy's test helpers:
the paths the end-to-end tests do not reach (buffered replies, composed SSE rewriting,
cutover, configuration and hot reload)."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, hooks, http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow

from bastion_edge.config.rules import ResponsesStateRules
from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.proxy.exchange import METADATA_KEY, Exchange
from bastion_edge.proxy.responses_keeper import ResponsesKeeper
from bastion_edge.state.responses_sqlite import SqliteStore

SHIPPED_RULES = (Path(__file__).resolve().parents[2] / "rules.yaml").read_text()
ENV = {"QUBITTRON_API_KEY": "bk-test", "BASTION_BASE_URL": "https://127.0.0.1:9443/v1"}
APP_KEY = "sk-app-hooks-test"


@contextlib.asynccontextmanager
async def addons(
    tmp_path: Path, rules_text: str = SHIPPED_RULES, environ: dict[str, str] | None = None
) -> AsyncIterator[tuple[BastionEdge, ResponsesKeeper]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    edge = BastionEdge(environ=environ or dict(ENV))
    state = edge.requests.responses
    with taddons.context(proxyserver.Proxyserver(), edge) as tctx:
        tctx.configure(edge, confdir=str(tmp_path / "confdir"), bastion_rules=str(rules),
                       bastion_metrics_port=0)
        try:
            yield edge, state
        finally:
            await tctx.master.addons.invoke_addon(edge, hooks.DoneHook())


def app_flow(path: str, body: dict[str, Any] | None = None, method: str = "POST",
             key: str = APP_KEY) -> http.HTTPFlow:
    flow = tflow.tflow()
    request = flow.request
    request.method, request.scheme, request.host, request.port = method, "https", \
        "api.openai.com", 443
    request.path = path
    request.headers = http.Headers(host="api.openai.com", authorization=f"Bearer {key}",
                                   content_type="application/json")
    request.content = json.dumps(body).encode() if body is not None else b""
    return flow


async def send(edge: BastionEdge, state: ResponsesKeeper, flow: http.HTTPFlow) -> None:
    edge.requests.requestheaders(flow)
    await _awaited(edge.requests.request(flow))


async def _awaited(result: Any) -> None:
    """A hook that may return a coroutine, awaited as mitmproxy does."""
    if result is not None:
        await result


async def respond(edge: BastionEdge, state: ResponsesKeeper, flow: http.HTTPFlow, body: bytes,
                  content_type: str = "application/json", **headers: str) -> bytes:
    """Upstream answers; returns what the app receives."""
    flow.response = http.Response.make(200, b"", {
        "content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}})
    flow.response.data.content = None
    edge.replies.responseheaders(flow)
    stream = flow.response.stream
    if callable(stream):
        out = b"".join(_bytes(stream(body[i:i + 11])) for i in range(0, len(body), 11))
        out += _bytes(stream(b""))
    else:
        flow.response.raw_content = body  # buffered: the bytes as they came off the wire
        out = b""
    await _awaited(edge.replies.response(flow))
    return out or (flow.response.raw_content or b"")


def _bytes(out: bytes | Any) -> bytes:
    return out if isinstance(out, bytes) else b"".join(out)


def reply(rid: str, model: str, text: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": 1, "model": model,
            "output": [{"id": f"msg_{rid}", "type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": text}]}]}


def exchange_of(flow: http.HTTPFlow) -> Exchange:
    found = flow.metadata[METADATA_KEY]
    assert isinstance(found, Exchange)
    return found


def sent_json(flow: http.HTTPFlow) -> dict[str, Any]:
    body = json.loads(flow.request.get_content() or b"")
    assert isinstance(body, dict)
    return body


async def test_buffered_reply_with_original_model_is_stored_as_the_app_saw_it(
    tmp_path: Path
) -> None:
    rules = SHIPPED_RULES.replace("reply_model: upstream", "reply_model: original")
    async with addons(tmp_path, rules) as (edge, state):
        first = app_flow("/v1/responses", {"model": "gpt-4o", "input": "hi"})
        await send(edge, state, first)
        seen = await respond(edge, state, first,
                             json.dumps(reply("resp_1", "gpt-oss-120b", "hello")).encode())
        assert json.loads(seen)["model"] == "gpt-4o"

        get = app_flow("/v1/responses/resp_1", method="GET")
        await send(edge, state, get)
        assert get.response is not None and get.response.status_code == 200
        assert json.loads(get.response.content or b"")["model"] == "gpt-4o"
        assert exchange_of(get).notes == ["answered from the response store"]


async def test_sse_rewriting_and_capture_compose_bytes_for_bytes(tmp_path: Path) -> None:
    rules = SHIPPED_RULES.replace("reply_model: upstream", "reply_model: original")
    async with addons(tmp_path, rules) as (edge, state):
        flow = app_flow("/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True})
        await send(edge, state, flow)
        final = reply("resp_s", "gpt-oss-120b", "streamed")
        events = [{"type": "response.created", "response": {**final, "output": []}},
                  {"type": "response.completed", "response": final}]
        body = b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())
                        for e in events)
        seen = await respond(edge, state, flow, body, "text/event-stream")
        assert b'"model":"gpt-4o"' in seen and b"gpt-oss-120b" not in seen

        chained = app_flow("/v1/responses", {"model": "gpt-4o", "input": "again",
                                             "previous_response_id": "resp_s"})
        await send(edge, state, chained)
        history = sent_json(chained)["input"]
        assert history[1]["content"][0]["text"] == "streamed"
        assert exchange_of(chained).notes == ["expanded previous_response_id: 2 items"]


async def test_compressed_json_reply_is_stored_and_passed_on_compressed(tmp_path: Path) -> None:
    async with addons(tmp_path) as (edge, state):
        flow = app_flow("/v1/responses", {"model": "gpt-4o", "input": "hi"})
        await send(edge, state, flow)
        body = gzip.compress(json.dumps(reply("resp_gz", "gpt-oss-120b", "zipped")).encode())
        seen = await respond(edge, state, flow, body, content_encoding="gzip")
        assert seen == body
        assert state.store is not None
        stored = await state.store.get(_partition(flow), "resp_gz")
        assert stored is not None and stored.output_items[0]["content"][0]["text"] == "zipped"


async def test_store_false_upstream_error_and_foreign_key_leave_nothing(tmp_path: Path) -> None:
    async with addons(tmp_path) as (edge, state):
        private = app_flow("/v1/responses", {"model": "gpt-4o", "input": "x", "store": False})
        await send(edge, state, private)
        await respond(edge, state, private, json.dumps(reply("resp_p", "m", "t")).encode())
        failed = app_flow("/v1/responses", {"model": "gpt-4o", "input": "x"})
        await send(edge, state, failed)
        failed.response = http.Response.make(502, b'{"error": {}}',
                                             {"content-type": "application/json"})
        edge.replies.responseheaders(failed)
        await _awaited(edge.replies.response(failed))
        kept = app_flow("/v1/responses", {"model": "gpt-4o", "input": "x"})
        await send(edge, state, kept)
        await respond(edge, state, kept, json.dumps(reply("resp_k", "m", "t")).encode())
        assert state.store is not None
        assert await state.store.get_many(_partition(kept), ["resp_p", "resp_k"]) == {
            "resp_k": await state.store.get(_partition(kept), "resp_k")}
        stranger = app_flow("/v1/responses/resp_k", method="DELETE", key="sk-stranger")
        await send(edge, state, stranger)
        assert stranger.response is not None and stranger.response.status_code == 404
        assert await state.store.get(_partition(kept), "resp_k") is not None


def _partition(flow: http.HTTPFlow) -> str:
    facts = exchange_of(flow).plan.facts
    assert facts is not None and facts.app_key_sha256 is not None
    return facts.app_key_sha256


async def test_cutover_to_openai_leaves_previous_response_id_to_openai(tmp_path: Path) -> None:
    async with addons(tmp_path, SHIPPED_RULES + "\ncutover: {mode: observe}\n") as (edge, state):
        flow = app_flow("/v1/responses", {"model": "gpt-4o", "input": "x",
                                          "previous_response_id": "resp_at_openai"})
        await send(edge, state, flow)
        assert flow.response is None
        assert sent_json(flow)["previous_response_id"] == "resp_at_openai"
        get = app_flow("/v1/responses/resp_at_openai", method="GET")
        await send(edge, state, get)
        assert get.response is None and get.request.host != "127.0.0.1"


async def test_unknown_previous_id_refused_before_upstream(tmp_path: Path) -> None:
    async with addons(tmp_path) as (edge, state):
        flow = app_flow("/v1/responses", {"model": "gpt-4o", "input": "x",
                                          "previous_response_id": 7})
        await send(edge, state, flow)
        assert flow.response is not None and flow.response.status_code == 400
        assert flow.response.headers["x-bastion-edge-error"] == "invalid_type"
        flow = app_flow("/v1/responses/resp_1/input_items?limit=500", method="GET")
        await send(edge, state, flow)
        assert flow.response is not None and flow.response.status_code == 400


async def test_hot_reloaded_retention_and_store(tmp_path: Path) -> None:
    async with addons(tmp_path) as (edge, state):
        first = state.store
        assert isinstance(first, SqliteStore)
        assert first.path == tmp_path / "confdir" / "responses.sqlite3"
        rules = edge.rules.responses_state
        edge.shared.publish(replace(edge.rules, responses_state=replace(rules, ttl_seconds=5)))
        state.follow(edge.rules.responses_state)
        assert state.store is first and first.retention.ttl_seconds == 5
        other = tmp_path / "elsewhere.sqlite3"
        edge.shared.publish(replace(edge.rules, responses_state=ResponsesStateRules(f"sqlite://{other}")))
        state.follow(edge.rules.responses_state)
        assert isinstance(state.store, SqliteStore) and state.store.path == other
        edge.shared.publish(replace(edge.rules, responses_state=ResponsesStateRules(
            encryption_key_env="UNSET_KEY")))
        state.follow(edge.rules.responses_state)  # rejected: keeps serving from the last good store
        assert isinstance(state.store, SqliteStore) and state.store.path == other


async def test_missing_encryption_key_fails_configuration(tmp_path: Path) -> None:
    rules = SHIPPED_RULES.replace("  # encryption_key_env: BASTION_RESPONSES_KEY",
                          "  encryption_key_env: BASTION_RESPONSES_KEY")
    with pytest.raises(exceptions.OptionsError, match=r"\$BASTION_RESPONSES_KEY is not set"):
        async with addons(tmp_path, rules):
            pass

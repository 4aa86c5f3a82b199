"""The conversations/traces child addon through its hooks (mitmproxy's taddons/tflow):
the Conversations API answered from a real SQLite store, `conversation` on Responses
expanded and its reply appended (buffered and streamed), trace uploads answered, and
traffic bound for OpenAI left alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mitmproxy import hooks, http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry
from test_responses_state_hooks import ENV, SHIPPED_RULES, app_flow

from bastion_edge.config.rules import ResponsesStateRules
from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.proxy.conversations_addon import (
    TURN_KEY,
    ConversationsAddon,
    FlowRoute,
    mark_answered,
    route_from_exchange,
)
from bastion_edge.proxy.flow_edit import exchange_of
from bastion_edge.state.conversation_store import SqliteConversations
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.state.responses_store import Retention

TRACE_UPLOAD = {"data": [
    {"object": "trace", "id": "trace_0123456789abcdef0123456789abcdef",
     "workflow_name": "w", "group_id": None, "metadata": None},
    {"object": "trace.span", "id": "span_0123456789abcdef01234567",
     "trace_id": "trace_0123456789abcdef0123456789abcdef", "parent_id": None,
     "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:01+00:00",
     "span_data": {"type": "agent", "name": "Assistant", "handoffs": [], "tools": [],
                   "output_type": None}, "error": None}]}


class Harness:
    def __init__(self, addon: ConversationsAddon, routes: dict[str, FlowRoute],
                 answered: list[str]) -> None:
        self.addon, self.routes, self.answered = addon, routes, answered

    def flow(self, method: str, path: str, body: Any = None, partition: str = "app",
             destination: str = "bastion") -> http.HTTPFlow:
        flow = tflow.tflow()
        flow.request.method = method
        flow.request.host = "bastion.example"
        flow.request.path = "/prefix" + path  # where the main path pointed it
        flow.request.content = json.dumps(body).encode() if body is not None else b""
        bare, _, query = path.partition("?")
        self.routes[flow.id] = FlowRoute(partition, destination, bare, query, False)
        return flow

    async def call(self, method: str, path: str, body: Any = None,
                   partition: str = "app") -> tuple[int, Any]:
        flow = self.flow(method, path, body, partition)
        pending = self.addon.request(flow)
        if pending is not None:
            await pending
        assert flow.response is not None
        content = flow.response.content or b""
        return flow.response.status_code, json.loads(content) if content else None


@asynccontextmanager
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    routes: dict[str, FlowRoute] = {}
    answered: list[str] = []
    store = SqliteConversations(tmp_path / "responses.sqlite3",
                                Retention(3600, 100), BodyCipher())
    addon = ConversationsAddon(ResponsesStateRules, CollectorRegistry(), environ={},
                               route_of=lambda flow: routes.get(flow.id),
                               answered=lambda flow, note: answered.append(note),
                               store=store)
    with taddons.context(addon):
        try:
            yield Harness(addon, routes, answered)
        finally:
            await addon.done()


async def test_conversation_lifecycle(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        status, created = await h.call("POST", "/v1/conversations", {
            "items": [{"type": "message", "role": "user", "content": "Hello!"}],
            "metadata": {"topic": "demo"}})
        assert status == 200 and created["object"] == "conversation"
        cid = created["id"]
        assert cid.startswith("conv_") and created["metadata"] == {"topic": "demo"}
        assert h.answered == ["conversations.create answered from the conversation store"]
        assert (await h.call("GET", f"/v1/conversations/{cid}"))[1] == created
        status, updated = await h.call("POST", f"/v1/conversations/{cid}",
                                       {"metadata": {"topic": "changed"}})
        assert updated["metadata"] == {"topic": "changed"}
        status, added = await h.call("POST", f"/v1/conversations/{cid}/items", {"items": [
            {"type": "message", "role": "assistant", "content": "Hi"},
            {"type": "message", "role": "user", "content": "Bye"}]})
        assert status == 200 and added["object"] == "list" and len(added["data"]) == 2
        status, page = await h.call("GET", f"/v1/conversations/{cid}/items?limit=2&order=asc")
        texts = [i["content"][0]["text"] for i in page["data"]]
        assert texts == ["Hello!", "Hi"] and page["has_more"] is True
        first = page["data"][0]
        status, item = await h.call("GET", f"/v1/conversations/{cid}/items/{first['id']}")
        assert item == first
        status, after = await h.call("DELETE", f"/v1/conversations/{cid}/items/{first['id']}")
        assert after["id"] == cid  # deleting an item answers the conversation
        status, page = await h.call("GET", f"/v1/conversations/{cid}/items")
        assert [i["content"][0]["text"] for i in page["data"]] == ["Bye", "Hi"]  # desc
        status, gone = await h.call("DELETE", f"/v1/conversations/{cid}")
        assert gone == {"id": cid, "object": "conversation.deleted", "deleted": True}
        status, error = await h.call("GET", f"/v1/conversations/{cid}")
        assert status == 404 and error["error"]["code"] == "not_found"


async def test_another_apps_conversation_is_not_found(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        _, created = await h.call("POST", "/v1/conversations", {})
        cid = created["id"]
        for method, path in (("GET", f"/v1/conversations/{cid}"),
                             ("GET", f"/v1/conversations/{cid}/items"),
                             ("POST", f"/v1/conversations/{cid}/items"),
                             ("DELETE", f"/v1/conversations/{cid}")):
            body = {"items": []} if method == "POST" else None
            status, error = await h.call(method, path, body, partition="other-app")
            assert status == 404, path
            assert error["error"]["message"] == f"Conversation with id '{cid}' not found."
        assert (await h.call("GET", f"/v1/conversations/{cid}"))[0] == 200
        status, error = await h.call("GET", "/v1/conversations/conv_unknown")
        assert status == 404
        status, error = await h.call("POST", "/v1/conversations", {"items": "x"})
        assert status == 400 and error["error"]["param"] == "items"


async def test_openai_bound_traffic_is_left_alone(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        for path, body in (("/v1/conversations", {}), ("/v1/traces/ingest", TRACE_UPLOAD),
                           ("/v1/responses", {"conversation": "conv_1", "input": "x"})):
            flow = h.flow("POST", path, body, destination="openai")
            assert h.addon.request(flow) is None
            assert flow.response is None and TURN_KEY not in flow.metadata
        assert h.answered == []


async def test_trace_upload_answered_and_dropped_without_otel(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        flow = h.flow("POST", "/v1/traces/ingest", TRACE_UPLOAD)
        assert h.addon.request(flow) is None
        assert flow.response is not None and flow.response.status_code == 204
        assert h.addon.metrics.traces.dropped._value.get() == 2
        assert h.answered == ["trace upload answered: 1 spans dropped"]
        bad = h.flow("POST", "/v1/traces/ingest", {"nope": 1})
        h.addon.request(bad)
        assert bad.response is not None and bad.response.status_code == 400


def respond(flow: http.HTTPFlow, body: bytes, content_type: str,
            stream: Callable[[bytes], bytes] | None = None) -> None:
    flow.response = http.Response.make(200, b"", {"content-type": content_type})
    flow.response.data.content = None if stream else body
    if stream is not None:
        flow.response.stream = stream


def completed(text: str) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": "completed", "output": [
        {"type": "message", "id": "msg_out", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": text}]}]}


async def test_responses_create_in_a_conversation_buffered(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        _, created = await h.call("POST", "/v1/conversations", {
            "items": [{"type": "message", "role": "user", "content": "Earlier"}]})
        cid = created["id"]
        flow = h.flow("POST", "/v1/responses", {"model": "gpt-4o", "input": "Now",
                                                "conversation": {"id": cid}})
        pending = h.addon.request(flow)
        assert pending is not None
        await pending
        assert flow.response is None  # goes on to the main path, rewritten
        sent = json.loads(flow.request.content or b"")
        assert "conversation" not in sent and sent["store"] is False
        assert [i["role"] for i in sent["input"]] == ["user", "user"]
        assert sent["input"][0]["content"] == [{"type": "input_text", "text": "Earlier"}]
        respond(flow, json.dumps(completed("Answer")).encode(), "application/json")
        h.addon.replies.responseheaders(flow)
        await h.addon.replies.response(flow)
        _, page = await h.call("GET", f"/v1/conversations/{cid}/items?order=asc")
        assert [i.get("role") for i in page["data"]] == ["user", "user", "assistant"]
        assert page["data"][2]["id"] == "msg_out"


async def test_responses_create_in_a_conversation_streamed(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        _, created = await h.call("POST", "/v1/conversations", {})
        cid = created["id"]
        flow = h.flow("POST", "/v1/responses", {"input": "Stream it", "stream": True,
                                                "conversation": cid})
        await h.addon.request(flow)  # type: ignore[misc]
        seen: list[bytes] = []

        def main_path_stream(chunk: bytes) -> bytes:  # what the main path set
            seen.append(chunk)
            return chunk

        respond(flow, b"", "text/event-stream", main_path_stream)
        h.addon.replies.responseheaders(flow)
        stream = flow.response.stream  # type: ignore[union-attr]
        assert callable(stream) and stream is not main_path_stream
        event = {"type": "response.completed", "response": completed("Streamed")}
        raw = b"event: response.created\ndata: {}\n\n" \
            + f"event: response.completed\ndata: {json.dumps(event)}\n\n".encode()
        out = [stream(raw[:30]), stream(raw[30:]), stream(b"")]
        assert b"".join(out) == raw and b"".join(seen) == raw  # passes unchanged
        await h.addon.replies.response(flow)
        _, page = await h.call("GET", f"/v1/conversations/{cid}/items?order=asc")
        assert [i["content"][0]["text"] for i in page["data"]] == ["Stream it", "Streamed"]


async def test_conversation_errors_on_responses(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        flow = h.flow("POST", "/v1/responses", {"input": "x", "conversation": "conv_1",
                                                "previous_response_id": "resp_1"})
        await h.addon.request(flow)  # type: ignore[misc]
        assert flow.response is not None and flow.response.status_code == 400
        missing = h.flow("POST", "/v1/responses", {"input": "x", "conversation": "conv_nope"})
        await h.addon.request(missing)  # type: ignore[misc]
        assert missing.response is not None and missing.response.status_code == 404
        error = json.loads(missing.response.content or b"")["error"]
        assert error["param"] == "conversation"
        failed = h.flow("POST", "/v1/responses", {"input": "x"})
        assert h.addon.request(failed) is None  # no `conversation`: untouched


async def test_a_failed_reply_appends_nothing(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        _, created = await h.call("POST", "/v1/conversations", {})
        cid = created["id"]
        flow = h.flow("POST", "/v1/responses", {"input": "x", "conversation": cid})
        await h.addon.request(flow)  # type: ignore[misc]
        flow.response = http.Response.make(500, b"{}", {"content-type": "application/json"})
        h.addon.replies.responseheaders(flow)
        await h.addon.replies.response(flow)
        _, page = await h.call("GET", f"/v1/conversations/{cid}/items")
        assert page["data"] == []


async def test_a_reply_retried_on_another_model_is_appended(tmp_path: Path) -> None:
    """The main path holds a 404 model_not_found and replaces it with the retry's reply
    (a streamed one buffered whole): what the app finally gets is appended."""
    async with harness(tmp_path) as h:
        _, created = await h.call("POST", "/v1/conversations", {})
        cid = created["id"]
        flow = h.flow("POST", "/v1/responses", {"input": "x", "stream": True,
                                                "conversation": cid})
        await h.addon.request(flow)  # type: ignore[misc]
        flow.response = http.Response.make(404, b"{}", {"content-type": "application/json"})
        h.addon.replies.responseheaders(flow)
        event = {"type": "response.completed", "response": completed("Retried")}
        flow.response = http.Response.make(
            200, f"event: response.completed\ndata: {json.dumps(event)}\n\n".encode(),
            {"content-type": "text/event-stream"})
        await h.addon.replies.response(flow)
        _, page = await h.call("GET", f"/v1/conversations/{cid}/items?order=asc")
        assert [i["content"][0]["text"] for i in page["data"]] == ["x", "Retried"]


async def test_route_from_the_main_paths_exchange(tmp_path: Path) -> None:
    """With the real main path: an OpenAI-bound flow carries its app's partition and
    destination, and `mark_answered` makes the access log say the proxy answered; an app
    already talking to Bastion itself is passed through, never answered here."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(SHIPPED_RULES)
    edge = BastionEdge(environ=dict(ENV))
    with taddons.context(proxyserver.Proxyserver(), edge) as tctx:
        tctx.configure(edge, confdir=str(tmp_path / "confdir"), bastion_rules=str(rules))
        try:
            flow = app_flow("/v1/conversations", {})
            edge.requests.requestheaders(flow)
            route = route_from_exchange(flow)
            assert route is not None and not route.refused
            assert route.destination == "bastion" and route.path == "/v1/conversations"
            assert route.partition not in ("", "anonymous")
            other = app_flow("/v1/conversations", {}, key="sk-another-app")
            edge.requests.requestheaders(other)
            other_route = route_from_exchange(other)
            assert other_route is not None and other_route.partition != route.partition
            mark_answered(flow, "answered here")
            exchange = exchange_of(flow)
            assert exchange is not None and exchange.destination == "proxy"
            direct = app_flow("/v1/conversations", {})
            direct.request.host = "api.qubittron.ai"  # rules.yaml's bastion_hosts
            direct.request.headers["host"] = "api.qubittron.ai"
            edge.requests.requestheaders(direct)
            assert exchange_of(direct) is not None  # the main path passes it through
            assert route_from_exchange(direct) is None
        finally:
            await tctx.master.addons.invoke_addon(edge, hooks.DoneHook())

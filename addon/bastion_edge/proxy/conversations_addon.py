"""Conversations and Agents SDK trace uploads, which Bastion lacks: answered here.

Two addons, one concern, placed around the main request path:

  ConversationsAddon   BEFORE the main path. Answers /v1/conversations* from the
                       conversation store and POST /v1/traces/ingest (spans to
                       OpenTelemetry, else dropped and counted); rewrites a Responses
                       create that names `conversation` into a self-contained one
                       (history prepended, `store: false`, no `conversation`).
  ConversationReplies  AFTER the main path (it wraps the reply stream the main path set):
                       at `response.completed` (or the buffered JSON reply) appends the
                       turn's input and output items to the conversation.

Both read the main path's decision for the flow through `route_of` (whose partition,
where it goes): traffic that goes to OpenAI (observe, mirror, split) is left alone, so
its conversations and traces stay with OpenAI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from mitmproxy import ctx, http
from prometheus_client import CollectorRegistry, Counter

from bastion_edge.config.rules import ResponsesStateRules
from bastion_edge.core import conversations as conv
from bastion_edge.core.agent_traces import (
    ACCEPTED_STATUS,
    NotAnUpload,
    is_ingest_path,
    parse_upload,
    trace_upload_destination,
)
from bastion_edge.core.plan import Destination, Route
from bastion_edge.core.responses_request import Item
from bastion_edge.core.routing import HostKind
from bastion_edge.errors import ApiError, bad_request
from bastion_edge.proxy.flow_edit import exchange_of
from bastion_edge.proxy.responses_keeper import (  # the Responses capture, reused
    STORE_UNAVAILABLE,
    WRITE_WAIT_SECONDS,
    _Observed,
)
from bastion_edge.state.capture import JsonObserver, SseObserver, response_from_json
from bastion_edge.state.conversation_store import ConversationStore, open_conversation_store
from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.responses_store import Retention, StoreError, store_location
from bastion_edge.telemetry.agent_spans import AgentSpanExport, TraceMetrics
from bastion_edge.telemetry.otel import OtelExport

log = logging.getLogger("bastion_edge")

TURN_KEY = "bastion_edge.conversation_turn"
PURGE_EVERY_SECONDS = 60.0
JSON_TYPE = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class FlowRoute:
    """What the main path decided for a flow, as far as this addon needs it."""

    partition: str
    destination: str  # bastion | openai | ...
    path: str  # the path the app sent, without the query
    query: str
    refused: bool


RouteOf = Callable[[http.HTTPFlow], FlowRoute | None]
Answered = Callable[[http.HTTPFlow, str], None]


def route_from_exchange(flow: http.HTTPFlow) -> FlowRoute | None:
    """The main path's plan for the flow (None: not ours, or an app already talking to
    Bastion itself, whose requests pass through as sent)."""
    exchange = exchange_of(flow)
    if exchange is None or exchange.plan.kind is not HostKind.OPENAI:
        return None
    plan = exchange.plan
    return FlowRoute(plan.partition, str(plan.route.destination), plan.path,
                     flow.request.path.partition("?")[2], plan.refusal is not None)


def mark_answered(flow: http.HTTPFlow, note: str) -> None:
    """Tell the main path the proxy answered (access log and metrics say `proxy`)."""
    exchange = exchange_of(flow)
    if exchange is not None:
        plan = exchange.plan
        exchange.plan = plan._replace(
            route=Route(Destination.PROXY, plan.route.target,
                        drop_headers=plan.route.drop_headers),
            notes=(*plan.notes, note))


class ConversationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.answered = Counter(
            "bastion_edge_conversations_answered",
            "Conversations API calls answered by the proxy, by operation and status.",
            ["operation", "status"], registry=registry)
        self.appended = Counter(
            "bastion_edge_conversation_items_appended",
            "Items appended to conversations by completed responses.", registry=registry)
        self.traces = TraceMetrics(registry)


@dataclass(frozen=True, slots=True)
class _Opened:
    location: str
    keys: tuple[bytes, ...]


class ConversationsAddon:
    def __init__(self, rules: Callable[[], ResponsesStateRules], registry: CollectorRegistry,
                 environ: Mapping[str, str] | None = None,
                 otel: Callable[[], OtelExport | None] = lambda: None,
                 route_of: RouteOf = route_from_exchange,
                 answered: Answered = mark_answered,
                 store: ConversationStore | None = None) -> None:
        self._rules = rules
        self._environ = environ if environ is not None else os.environ
        self._otel = otel
        self._route_of = route_of
        self._answered = answered
        self.metrics = ConversationMetrics(registry)
        self.store = store
        self._fixed = store is not None  # a store given (tests): never reopened
        self._opened: _Opened | None = None
        self._seen: tuple[object, str, str] | None = None
        self._spans: tuple[OtelExport | None, AgentSpanExport] | None = None
        self._purger: asyncio.Task[None] | None = None
        self.writes: set[asyncio.Task[None]] = set()
        self.replies = ConversationReplies(self)

    # ------------------------------------------------------------------ lifecycle

    async def running(self) -> None:
        self._purger = asyncio.get_running_loop().create_task(self._purge_forever())

    async def done(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
        if self.writes:
            await asyncio.wait(set(self.writes), timeout=WRITE_WAIT_SECONDS)
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.store.close()
        self.store = None
        self._opened = None

    async def _purge_forever(self) -> None:
        while True:
            store = self.store
            if store is not None:
                with contextlib.suppress(StoreError):
                    await store.purge_expired()
            await asyncio.sleep(PURGE_EVERY_SECONDS)

    def current_store(self) -> ConversationStore:
        """The store the Responses state settings name now (opened on first use, reopened
        when its location or keys change; retention followed)."""
        if self._fixed:
            assert self.store is not None
            return self.store
        rules = self._rules()
        setting = getattr(ctx.options, "bastion_responses_store", "") or rules.store
        confdir = str(ctx.options.confdir)
        if self.store is not None and self._seen == (rules, setting, confdir):
            return self.store
        try:
            location = store_location(setting, Path(os.path.expanduser(confdir)))
            cipher = BodyCipher.from_env(rules.encryption_key_env, self._environ)
        except (ValueError, CipherError) as e:
            log.error("bastion-edge: conversations: %s", e)
            raise STORE_UNAVAILABLE from e
        retention = Retention(rules.ttl_seconds, rules.max_responses)
        opened = _Opened(location, cipher.keys)
        if self.store is None or opened != self._opened:
            old, self.store = self.store, open_conversation_store(location, retention, cipher)
            self._opened = opened
            if old is not None:
                asyncio.get_running_loop().create_task(old.close())
        self.store.retention = retention
        self._seen = (rules, setting, confdir)
        return self.store

    # ------------------------------------------------------------------ request side

    def request(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        if flow.response is not None or flow.error is not None:
            return None
        route = self._route_of(flow)
        if route is None or route.refused:
            return None
        method = flow.request.method.upper()
        if is_ingest_path(route.path) and method == "POST":
            if trace_upload_destination(route.destination) == "proxy":
                self._answer_traces(flow)
            return None
        if route.destination != Destination.BASTION:
            return None  # OpenAI keeps its own conversations
        if conv.is_conversations_path(route.path):
            return self._answer_conversations(flow, route, method)
        if route.path.rstrip("/") == "/v1/responses" and method == "POST" \
                and b'"conversation"' in (flow.request.get_content(strict=False) or b""):
            return self._expand(flow, route)
        return None

    def _answer_traces(self, flow: http.HTTPFlow) -> None:
        try:
            upload = parse_upload(flow.request.get_content(strict=False) or b"")
        except NotAnUpload as e:
            self._respond_error(flow, bad_request(f"Invalid trace upload: {e}",
                                                  "invalid_value"), "traces")
            return
        otel = self._otel()
        if self._spans is None or self._spans[0] is not otel:
            self._spans = (otel, AgentSpanExport(otel, self.metrics.traces))
        spans = self._spans[1]
        if spans.exporting:
            spans.export(upload.spans)
        else:
            self.metrics.traces.dropped.inc(len(upload.spans) + upload.traces)
        flow.response = http.Response.make(ACCEPTED_STATUS, b"")
        self._answered(flow, f"trace upload answered: {len(upload.spans)} spans "
                       + ("exported" if spans.exporting else "dropped"))

    async def _answer_conversations(self, flow: http.HTTPFlow, route: FlowRoute,
                                    method: str) -> None:
        operation = "conversations"
        try:
            call = conv.classify(method, route.path)
            operation = f"conversations.{call.action}"
            body = await self._call(self.current_store(), call, route, flow)
        except ApiError as e:
            self._respond_error(flow, e, operation)
            return
        except StoreError as e:
            log.error("bastion-edge: conversation store failed: %s", e)
            self._respond_error(flow, STORE_UNAVAILABLE, operation)
            return
        self.metrics.answered.labels(operation, "200").inc()
        flow.response = http.Response.make(200, json.dumps(body).encode(), JSON_TYPE)
        self._answered(flow, f"{operation} answered from the conversation store")

    async def _call(self, store: ConversationStore, call: conv.Call, route: FlowRoute,
                    flow: http.HTTPFlow) -> Item:
        action, partition = call.action, route.partition
        if action is conv.Action.CREATE:
            body = _json_body(flow)
            items = conv.items_of(body, required=False)
            created = conv.Conversation(conv.new_conversation_id(), int(time.time()),
                                        conv.metadata_of(body))
            await store.create(partition, created, items)
            return created.to_json()
        cid = call.conversation_id or ""
        if not conv.valid_conversation_id(cid):
            raise conv.not_found(cid)
        if action is conv.Action.RETRIEVE:
            return (await _existing(store, partition, cid)).to_json()
        if action is conv.Action.UPDATE:
            updated = await store.update(partition, cid, conv.metadata_of(_json_body(flow)))
            if updated is None:
                raise conv.not_found(cid)
            return updated.to_json()
        if action is conv.Action.DELETE:
            if not await store.delete(partition, cid):
                raise conv.not_found(cid)
            return conv.deleted(cid)
        if action is conv.Action.ITEMS_CREATE:
            items = conv.items_of(_json_body(flow), required=True)
            if not await store.append(partition, cid, items):
                raise conv.not_found(cid)
            return conv.list_of(items)
        stored = await store.items(partition, cid)
        if stored is None:
            raise conv.not_found(cid)
        if action is conv.Action.ITEMS_LIST:
            return conv.items_page(stored, conv.list_params(parse_qsl(route.query)))
        item_id = call.item_id or ""
        if action is conv.Action.ITEM_RETRIEVE:
            return conv.find_item(stored, item_id)
        if not await store.delete_item(partition, cid, item_id):  # ITEM_DELETE
            raise conv.item_not_found(item_id)
        return (await _existing(store, partition, cid)).to_json()

    async def _expand(self, flow: http.HTTPFlow, route: FlowRoute) -> None:
        try:
            body = _json_body(flow)
            cid = conv.conversation_wanted(body)
            if cid is None:
                return
            history = await self.current_store().items(route.partition, cid) \
                if conv.valid_conversation_id(cid) else None
            if history is None:
                raise conv.not_found(cid, "conversation")
            expanded, turn = conv.expand(body, history, route.partition, cid)
        except ApiError as e:
            self._respond_error(flow, e, "responses.conversation")
            return
        except StoreError as e:
            log.error("bastion-edge: conversation store failed: %s", e)
            self._respond_error(flow, STORE_UNAVAILABLE, "responses.conversation")
            return
        flow.request.content = json.dumps(expanded, ensure_ascii=False).encode()
        flow.metadata[TURN_KEY] = turn

    def _respond_error(self, flow: http.HTTPFlow, error: ApiError, operation: str) -> None:
        self.metrics.answered.labels(operation, str(error.status)).inc()
        flow.response = http.Response.make(
            error.status, error.body(), {**JSON_TYPE, "x-bastion-edge-error": error.code})
        self._answered(flow, f"{operation} refused: {error.code}")

    # ------------------------------------------------------------------ response side

    def appended(self, turn: conv.ConversationTurn, final: Item) -> asyncio.Task[None] | None:
        """The final response object seen: append its items (a write in the background)."""
        items = conv.appended_items(turn, final)
        store = self.store
        if items is None or store is None:
            return None
        task = asyncio.get_running_loop().create_task(self._append(store, turn, items))
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)
        return task

    async def _append(self, store: ConversationStore, turn: conv.ConversationTurn,
                      items: list[Item]) -> None:
        try:
            if await store.append(turn.partition, turn.conversation_id, items):
                self.metrics.appended.inc(len(items))
            else:
                log.warning("bastion-edge: conversation %s is gone; response not appended",
                            turn.conversation_id)
        except StoreError as e:
            log.error("bastion-edge: could not append to conversation %s: %s",
                      turn.conversation_id, e)


@dataclass(slots=True)
class _Pending:
    turn: conv.ConversationTurn
    write: asyncio.Task[None] | None = None


class ConversationReplies:
    """The response side: placed after the main path, so the stream it wraps is final."""

    def __init__(self, owner: ConversationsAddon) -> None:
        self._owner = owner

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        turn = flow.metadata.pop(TURN_KEY, None)
        response = flow.response
        if not isinstance(turn, conv.ConversationTurn) or response is None:
            return
        pending = _Pending(turn)
        flow.metadata[TURN_KEY] = pending
        if not response.stream or response.status_code != 200:
            return  # buffered (or held for a model fallback): read in `response`

        def on_final(final: Item) -> None:
            if pending.write is None:
                pending.write = self._owner.appended(turn, final)

        content_type = response.headers.get("content-type", "")
        observer = SseObserver(on_final) if content_type.startswith("text/event-stream") \
            else JsonObserver(on_final)
        inner = response.stream if callable(response.stream) else None
        response.stream = _Observed(inner, observer)

    async def response(self, flow: http.HTTPFlow) -> None:
        pending = flow.metadata.pop(TURN_KEY, None)
        if not isinstance(pending, _Pending) or flow.response is None:
            return
        response = flow.response
        if pending.write is None and not response.stream and response.status_code == 200:
            final = _buffered_final(response)
            if final is not None:
                pending.write = self._owner.appended(pending.turn, final)
        if pending.write is not None:  # a next turn that follows the reply finds it
            await asyncio.wait({pending.write}, timeout=WRITE_WAIT_SECONDS)

    @staticmethod
    def error(flow: http.HTTPFlow) -> None:
        flow.metadata.pop(TURN_KEY, None)


def _buffered_final(response: http.Response) -> Item | None:
    """The response object of a whole reply: JSON, or SSE events (a retried stream that
    the main path buffered)."""
    content = response.get_content(strict=False) or b""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return response_from_json(content)
    events = SseObserver()
    events.feed(content)
    events.finish()
    return events.final


async def _existing(store: ConversationStore, partition: str, cid: str) -> conv.Conversation:
    found = await store.get(partition, cid)
    if found is None:
        raise conv.not_found(cid)
    return found


def _json_body(flow: http.HTTPFlow) -> dict[str, Any]:
    raw = flow.request.get_content(strict=False) or b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise bad_request(f"We could not parse the JSON body of your request: {e}",
                          "invalid_json") from e
    if not isinstance(body, dict):
        raise bad_request("The JSON body of your request must be an object.", "invalid_type")
    return body

"""The mitmproxy addon that keeps Responses state for apps, since Bastion keeps none.

Runs after `BastionEdge` and reads its per-flow `Exchange` (only OpenAI-bound
`/v1/responses` flows that go to Bastion):

  request          a create with `previous_response_id` is expanded into a
                   self-contained request; GET/DELETE `/v1/responses/{id}` and
                   `.../input_items` are answered from the store, never sent upstream
  responseheaders  the reply stream is observed (bytes pass unchanged) for the final
                   response object; its store write starts the moment it is seen
  response         waits (bounded) for that write, so a next turn that arrives after
                   the reply ends always finds it
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mitmproxy import ctx, exceptions, http
from mitmproxy.net import encoding

from ..cutover import BASTION
from ..errors import SERVER_ERROR, ApiError, bad_request
from ..exchange import METADATA_KEY, Exchange
from ..request_facts import RESPONSES, facts_from_json, is_collection_path
from ..request_rewrite import REWRITE_MODEL, decide_model
from ..routing import HostKind
from ..rules import ResponsesStateRules
from . import shapes
from .capture import (
    JsonObserver,
    SseObserver,
    TurnRequest,
    record_from_response,
    response_from_json,
    turn_from_request,
    valid_response_id,
)
from .chain import ChainBroken, conversation, expand_request
from .crypto import BodyCipher, CipherError
from .item_refs import body_with_references_resolved
from .metrics import StateMetrics
from .records import ANONYMOUS, Item, StoredResponse
from .store import ResponseStore, Retention, StoreError, open_store, store_location

if TYPE_CHECKING:
    from ..hooks import BastionEdge

log = logging.getLogger("bastion_edge")

FLOW_KEY = "bastion_edge.responses_state"
PURGE_EVERY_SECONDS = 60.0
WRITE_WAIT_SECONDS = 2.0  # the longest a reply's end waits for its record to be stored
JSON_TYPE = {"content-type": "application/json"}
T = TypeVar("T")


@dataclass(slots=True)
class _Capture:
    """Per flow: what the request contributes to its record, and the pending write."""

    turn: TurnRequest
    write: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _Opened:
    """What the current store was opened with; a change means a new store."""

    location: str
    keys: tuple[bytes, ...]


class ResponsesState:
    def __init__(self, edge: BastionEdge) -> None:
        self.edge = edge
        self.metrics = StateMetrics(edge.metrics.registry)
        self.store: ResponseStore | None = None
        self._opened: _Opened | None = None
        self._rules_seen: ResponsesStateRules | None = None
        self._writes: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._retired: list[ResponseStore] = []
        self._purger: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def load(self, loader: Any) -> None:
        loader.add_option(
            "bastion_responses_store", str, "",
            "Where Responses state is kept, overriding rules.yaml responses_state.store: "
            "sqlite (a file in the confdir), sqlite:///<absolute path> or a redis:// URL. "
            "Empty: the rules decide.")

    def configure(self, updated: set[str]) -> None:
        if updated & {"bastion_responses_store", "bastion_rules", "confdir"}:
            try:
                self._apply(self.edge.rules.responses_state)
            except (ValueError, StoreError) as e:
                raise exceptions.OptionsError(f"bastion-edge responses_state: {e}") from e

    async def running(self) -> None:
        self._purger = asyncio.get_running_loop().create_task(self._purge_forever())
        ping = getattr(self.store, "ping", None)
        if ping is not None:
            try:
                await ping()
            except StoreError as e:
                log.warning("bastion-edge: response store not reachable yet: %s", e)

    async def done(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
        pending = [*self._writes.values(), *self._background]
        if pending:
            await asyncio.wait(pending, timeout=WRITE_WAIT_SECONDS)
        for store in [*self._retired, *([self.store] if self.store else [])]:
            with contextlib.suppress(StoreError):
                await store.close()
        self._retired.clear()
        self.store = None
        self._opened = None

    def _apply(self, rules: ResponsesStateRules) -> None:
        """Open the configured store, or only update retention if the store is unchanged."""
        self._rules_seen = rules
        confdir = Path(os.path.expanduser(ctx.options.confdir))
        location = store_location(ctx.options.bastion_responses_store or rules.store, confdir)
        try:
            cipher = BodyCipher.from_env(rules.encryption_key_env, self.edge.environ)
        except CipherError as e:
            raise ValueError(str(e)) from e
        retention = Retention(rules.ttl_seconds, rules.max_responses)
        opened = _Opened(location, cipher.keys)
        if self.store is not None and opened == self._opened:
            self.store.retention = retention
            return
        store = open_store(location, retention, cipher)
        old, self.store, self._opened = self.store, store, opened
        log.info("bastion-edge: Responses state kept in %s%s", store.location,
                 " (encrypted at rest)" if cipher.encrypts else "")
        if old is not None:
            self._retire(old)

    def _retire(self, old: ResponseStore) -> None:
        """Close a replaced store once writes in flight have had their time."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retired.append(old)
            return

        async def close_later() -> None:
            await asyncio.sleep(WRITE_WAIT_SECONDS)
            with contextlib.suppress(StoreError):
                await old.close()

        self._track(loop.create_task(close_later()))

    def _follow_rules(self) -> None:
        """Rules hot-reloaded by BastionEdge: follow them, keep the old store on failure."""
        rules = self.edge.rules.responses_state
        if rules == self._rules_seen:
            return
        try:
            self._apply(rules)
        except (ValueError, StoreError) as e:
            log.error("bastion-edge: responses_state change rejected, keeping %s: %s",
                      self.store.location if self.store else "no store", e)

    async def _purge_forever(self) -> None:
        while True:
            if self.store is not None:
                with contextlib.suppress(StoreError):
                    purged = await self._timed("purge", self.store.purge_expired())
                    if purged:
                        self.metrics.evicted.labels("expired").inc(purged)
            await asyncio.sleep(PURGE_EVERY_SECONDS)

    # ------------------------------------------------------------------ request side

    async def request(self, flow: http.HTTPFlow) -> None:
        exchange = _exchange(flow)
        if exchange is None or flow.response is not None or exchange.error is not None:
            return
        if (exchange.kind is not HostKind.OPENAI or exchange.endpoint != RESPONSES
                or exchange.destination != BASTION):
            return
        self._follow_rules()
        if self.store is None:
            return
        try:
            if flow.request.method == "POST" and is_collection_path(exchange.path):
                await self._create(flow, exchange, self.store)
            else:
                await self._answer(flow, exchange, self.store)
        except ApiError as e:
            self._refuse(flow, exchange, e)
        except StoreError as e:
            log.error("bastion-edge: response store failed: %s", e)
            self._refuse(flow, exchange, ApiError(
                503, "bastion-edge: the response store is unavailable; try again.",
                "response_store_unavailable", SERVER_ERROR))

    async def _create(self, flow: http.HTTPFlow, exchange: Exchange,
                      store: ResponseStore) -> None:
        body = response_from_json(flow.request.get_content() or b"")
        if body is None:
            return  # BastionEdge already refused what is not a JSON object
        partition = _partition(exchange)
        previous = body.get("previous_response_id")
        ancestors: tuple[str, ...] = ()
        try:
            if previous is not None:
                if not isinstance(previous, str):
                    raise bad_request("Invalid type for 'previous_response_id': expected a "
                                      "string.", "invalid_type", "previous_response_id")
                head, history = await self._history(store, partition, previous)
                expanded = expand_request(body, history)
                self._choose_model(exchange, expanded)
                flow.request.content = json.dumps(
                    expanded, separators=(",", ":"), ensure_ascii=False).encode()
                exchange.notes.append(f"expanded previous_response_id: {len(history)} items")
                self.metrics.expanded.inc()
                self.metrics.expanded_items.observe(len(history))
                ancestors = (*head.ancestors, head.id)
            await self._resolve_item_references(flow, exchange, store, partition)
            turn = turn_from_request(body, partition, ancestors)
        except ValueError as e:
            raise bad_request(f"Invalid 'input': {e}", "invalid_value", "input") from e
        if exchange.app_store is not False:
            flow.metadata[FLOW_KEY] = _Capture(turn)

    async def _resolve_item_references(self, flow: http.HTTPFlow, exchange: Exchange,
                                       store: ResponseStore, partition: str) -> None:
        """`item_reference` input items (expanded history included) -> the stored items."""
        resolved = await self._timed("items", body_with_references_resolved(
            flow.request.get_content() or b"", store, partition))
        if resolved is not None:
            body, count = resolved
            self._choose_model(exchange, body)
            flow.request.content = json.dumps(
                body, separators=(",", ":"), ensure_ascii=False).encode()
            exchange.notes.append(f"resolved item_reference: {count} items")

    async def _history(self, store: ResponseStore, partition: str,
                       response_id: str) -> tuple[StoredResponse, list[Item]]:
        head = await self._get(store, partition, response_id, "previous_response_id")
        found = await self._timed("get_many", store.get_many(partition, head.ancestors)) \
            if head.ancestors else {}
        try:
            return head, conversation(head, found)
        except ChainBroken as e:
            raise ApiError(
                404, f"Previous response with id '{response_id}' cannot be continued: the "
                f"earlier response '{e.missing}' in its conversation was deleted or expired.",
                "previous_response_not_found", param="previous_response_id") from e

    def _choose_model(self, exchange: Exchange, body: dict[str, Any]) -> None:
        """Map the model again for the whole conversation (an image or a long history
        in an earlier turn decides it as much as the new input does)."""
        requested = exchange.original_model or body.get("model")
        if not isinstance(requested, str) or exchange.facts is None:
            return
        content = facts_from_json(body)
        facts = replace(exchange.facts, has_image=content.has_image,
                        prompt_tokens=content.prompt_tokens)
        try:
            resolution = decide_model(requested, facts, self.edge.rules, self.edge.models)
        except ApiError:
            return
        if resolution is None or resolution.upstream == body.get("model"):
            return
        body["model"] = resolution.upstream
        exchange.resolution = resolution
        exchange.original_model, exchange.upstream_model = requested, resolution.upstream
        exchange.add_rewrite(REWRITE_MODEL)
        exchange.notes.append(f"model for the expanded conversation: {resolution.upstream}")

    async def _answer(self, flow: http.HTTPFlow, exchange: Exchange,
                      store: ResponseStore) -> None:
        """GET/DELETE /v1/responses/{id} and GET .../input_items, from the store."""
        parts = exchange.path.rstrip("/").split("/")
        if len(parts) not in (4, 5) or parts[:3] != ["", "v1", "responses"]:
            return
        response_id, sub = parts[3], parts[4] if len(parts) == 5 else None
        method, partition = flow.request.method, _partition(exchange)
        query = dict(flow.request.query.items())
        if sub is None and method == "GET":
            if query.get("stream", "").lower() == "true":
                raise bad_request("bastion-edge does not replay stored responses as a stream; "
                                  "retrieve without stream=true.", "unsupported_parameter",
                                  "stream")
            record = await self._get(store, partition, response_id)
            self._reply(flow, exchange, "retrieve", shapes.retrieved(record))
        elif sub is None and method == "DELETE":
            await self._settled(partition, response_id)
            deleted = valid_response_id(response_id) and await self._timed(
                "delete", store.delete(partition, response_id))
            if not deleted:
                raise shapes.not_found(response_id)
            self._reply(flow, exchange, "delete", shapes.deleted(response_id))
        elif sub == "input_items" and method == "GET":
            params = shapes.list_params(query)
            record = await self._get(store, partition, response_id)
            found = await self._timed("get_many", store.get_many(partition, record.ancestors)) \
                if record.ancestors else {}
            page = shapes.input_items_page(shapes.context_items(record, found), params)
            self._reply(flow, exchange, "input_items", page)

    async def _get(self, store: ResponseStore, partition: str, response_id: str,
                   param: str | None = None) -> StoredResponse:
        record = None
        if valid_response_id(response_id):
            await self._settled(partition, response_id)
            record = await self._timed("get", store.get(partition, response_id))
        if record is None:
            raise shapes.not_found(response_id, param)
        return record

    def _reply(self, flow: http.HTTPFlow, exchange: Exchange, operation: str,
               body: Item) -> None:
        self.metrics.answered.labels(operation, "200").inc()
        exchange.destination = "proxy"
        exchange.notes.append("answered from the response store")
        flow.response = http.Response.make(200, json.dumps(body).encode(), JSON_TYPE)

    def _refuse(self, flow: http.HTTPFlow, exchange: Exchange, error: ApiError) -> None:
        self.metrics.answered.labels(_operation(flow, exchange), str(error.status)).inc()
        self.edge.metrics.proxy_errors.labels(error.code).inc()
        exchange.error = error
        flow.response = http.Response.make(
            error.status, error.body(), {**JSON_TYPE, "x-bastion-edge-error": error.code})

    # ------------------------------------------------------------------ response side

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        capture = flow.metadata.get(FLOW_KEY)
        response = flow.response
        if not isinstance(capture, _Capture) or response is None:
            return
        content_type = response.headers.get("content-type", "")
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        observer: SseObserver | JsonObserver
        if response.status_code != 200:
            del flow.metadata[FLOW_KEY]
            return
        if content_type.startswith("text/event-stream") and coding == "identity":
            observer = SseObserver(lambda final: self._captured(capture, final))
        elif content_type.startswith("application/json"):
            decode = None if coding == "identity" else functools.partial(_decoded, coding)
            observer = JsonObserver(lambda final: self._captured(capture, final), decode=decode)
        else:
            log.warning("bastion-edge: not storing response (%s, %s)", content_type, coding)
            del flow.metadata[FLOW_KEY]
            return
        if response.stream:  # otherwise buffered: captured in `response`
            inner = response.stream if callable(response.stream) else None
            response.stream = _Observed(inner, observer)

    def _captured(self, capture: _Capture, final: Item) -> None:
        record = record_from_response(capture.turn, final, time.time())
        if record is not None and capture.write is None:
            capture.write = self._write_soon(record)

    async def response(self, flow: http.HTTPFlow) -> None:
        capture = flow.metadata.pop(FLOW_KEY, None)
        response = flow.response
        if not isinstance(capture, _Capture) or response is None:
            return
        if capture.write is None and not response.stream and response.status_code == 200:
            final = response_from_json(response.get_content() or b"")
            if final is not None:
                self._captured(capture, final)
        if capture.write is not None:
            await asyncio.wait({capture.write}, timeout=WRITE_WAIT_SECONDS)

    def error(self, flow: http.HTTPFlow) -> None:
        flow.metadata.pop(FLOW_KEY, None)

    def _write_soon(self, record: StoredResponse) -> asyncio.Task[None]:
        key = (record.partition, record.id)
        task = asyncio.get_running_loop().create_task(self._write(record))
        self._writes[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._writes.get(key) is done:
                del self._writes[key]

        task.add_done_callback(forget)
        return task

    async def _write(self, record: StoredResponse) -> None:
        if self.store is None:
            return
        try:
            evicted = await self._timed("put", self.store.put(record))
        except StoreError as e:
            log.error("bastion-edge: could not store response %s: %s", record.id, e)
            return
        self.metrics.stored.inc()
        if evicted:
            self.metrics.evicted.labels("size").inc(evicted)

    async def _settled(self, partition: str, response_id: str) -> None:
        """Wait for this proxy's own write of that response, if one is in flight."""
        task = self._writes.get((partition, response_id))
        if task is not None:
            await asyncio.wait({task}, timeout=WRITE_WAIT_SECONDS)

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except StoreError:
            self.metrics.store_errors.labels(operation).inc()
            raise
        finally:
            self.metrics.store_seconds.labels(operation).observe(time.perf_counter() - started)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Observed:
    """BastionEdge's stream callable (if any), then an observer that sees what the app gets."""

    def __init__(self, inner: Callable[[bytes], bytes | Iterable[bytes]] | None,
                 observer: SseObserver | JsonObserver) -> None:
        self._inner = inner
        self._observer: SseObserver | JsonObserver | None = observer

    def __call__(self, chunk: bytes) -> bytes | Iterable[bytes]:
        out = self._inner(chunk) if self._inner is not None else chunk
        if self._observer is None:
            return out
        if not isinstance(out, bytes):
            out = list(out)
        try:
            for piece in [out] if isinstance(out, bytes) else out:
                if piece:
                    self._observer.feed(piece)
            if not chunk:
                self._observer.finish()
        except Exception:  # observing must never break the app's stream
            log.exception("bastion-edge: response capture failed; not stored")
            self._observer = None
        return out


def _decoded(coding: str, raw: bytes) -> bytes:
    decoded = encoding.decode(raw, coding)
    return decoded if isinstance(decoded, bytes) else decoded.encode()


def _exchange(flow: http.HTTPFlow) -> Exchange | None:
    found = flow.metadata.get(METADATA_KEY)
    return found if isinstance(found, Exchange) else None


def _partition(exchange: Exchange) -> str:
    facts = exchange.facts
    return facts.app_key_sha256 if facts and facts.app_key_sha256 else ANONYMOUS


def _operation(flow: http.HTTPFlow, exchange: Exchange) -> str:
    if flow.request.method == "POST":
        return "create"
    if exchange.path.rstrip("/").endswith("/input_items"):
        return "input_items"
    return "delete" if flow.request.method == "DELETE" else "retrieve"

"""Responses state for apps, since Bastion keeps none: the proxy side of the store.

Its lifecycle is the `ResponsesAddon` child of `BastionEdge` (proxy/lifecycle.py); the
request and reply paths call it where a plan needs it.

  history   the stored conversation behind a `previous_response_id` (the planner
            expands the request with it and chooses the model once)
  answer    GET/DELETE `/v1/responses/{id}` and `.../input_items`, from the store
  observe   the reply stream is observed (bytes pass unchanged) for the final response
            object; its store write starts the moment it is seen
  settle    at the reply's end, waits (bounded) for that write, so a next turn that
            arrives after the reply ends always finds it
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from mitmproxy import ctx, exceptions, http
from mitmproxy.net import encoding
from prometheus_client import CollectorRegistry

from bastion_edge.config.schema import ResponsesStateRules
from bastion_edge.core.plan import Plan, StoreAction
from bastion_edge.core.responses_request import History, Item, TurnRequest, valid_response_id
from bastion_edge.errors import SERVER_ERROR, ApiError
from bastion_edge.state import responses_shapes as shapes
from bastion_edge.state.capture import (
    JsonObserver,
    SseObserver,
    record_from_response,
)
from bastion_edge.state.chain import ChainBroken, conversation
from bastion_edge.state.crypto import BodyCipher, CipherError
from bastion_edge.state.item_lookup import stored_items
from bastion_edge.state.records import StoredResponse
from bastion_edge.state.responses_store import (
    ResponseStore,
    Retention,
    StoreError,
    open_store,
    store_location,
)
from bastion_edge.state.state_metrics import StateMetrics

log = logging.getLogger("bastion_edge")

FLOW_KEY = "bastion_edge.responses_state"
PURGE_EVERY_SECONDS = 60.0
WRITE_WAIT_SECONDS = 2.0  # the longest a reply's end waits for its record to be stored
T = TypeVar("T")

STORE_UNAVAILABLE = ApiError(503, "bastion-edge: the response store is unavailable; try again.",
                             "response_store_unavailable", SERVER_ERROR)


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


class ResponsesKeeper:
    def __init__(self, registry: CollectorRegistry, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.metrics = StateMetrics(registry)
        self.store: ResponseStore | None = None
        self._opened: _Opened | None = None
        self._rules_seen: ResponsesStateRules | None = None
        self._writes: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._retired: list[ResponseStore] = []
        self._purger: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def load(loader: Any) -> None:
        loader.add_option(
            "bastion_responses_store", str, "",
            "Where Responses state is kept, overriding rules.yaml responses_state.store: "
            "sqlite (a file in the confdir), sqlite:///<absolute path> or a redis:// URL. "
            "Empty: the rules decide.")

    def configure(self, updated: set[str], rules: ResponsesStateRules) -> None:
        if updated & {"bastion_responses_store", "bastion_rules", "confdir"}:
            try:
                self._apply(rules)
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

    def follow(self, rules: ResponsesStateRules) -> None:
        """Rules hot-reloaded: follow them, keep the old store on failure."""
        if rules == self._rules_seen:
            return
        try:
            self._apply(rules)
        except (ValueError, StoreError) as e:
            log.error("bastion-edge: responses_state change rejected, keeping %s: %s",
                      self.store.location if self.store else "no store", e)

    def _apply(self, rules: ResponsesStateRules) -> None:
        """Open the configured store, or only update retention if the store is unchanged."""
        self._rules_seen = rules
        confdir = Path(os.path.expanduser(ctx.options.confdir))
        location = store_location(ctx.options.bastion_responses_store or rules.store, confdir)
        try:
            cipher = BodyCipher.from_env(rules.encryption_key_env, self.environ)
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

    async def _purge_forever(self) -> None:
        while True:
            if self.store is not None:
                with contextlib.suppress(StoreError):
                    purged = await self._timed("purge", self.store.purge_expired())
                    if purged:
                        self.metrics.evicted.labels("expired").inc(purged)
            await asyncio.sleep(PURGE_EVERY_SECONDS)

    # ------------------------------------------------------------------ request side

    async def history(self, partition: str, response_id: str) -> History:
        """The conversation a create continues; 404 when it is gone, 503 store down."""
        store = self._require_store()
        head = await self._get(store, partition, response_id, "previous_response_id")
        found = await self._timed("get_many", store.get_many(partition, head.ancestors)) \
            if head.ancestors else {}
        try:
            items = conversation(head, found)
        except ChainBroken as e:
            raise ApiError(
                404, f"Previous response with id '{response_id}' cannot be continued: the "
                f"earlier response '{e.missing}' in its conversation was deleted or expired.",
                "previous_response_not_found", param="previous_response_id") from e
        self.metrics.expanded.inc()
        self.metrics.expanded_items.observe(len(items))
        return History((*head.ancestors, head.id), items)

    async def items(self, partition: str, item_ids: list[str]) -> dict[str, Item]:
        """The stored items these ids name, within the partition (missing ones left out)."""
        store = self._require_store()
        return await self._timed("items", stored_items(store, partition, item_ids))

    async def answer(self, plan: Plan, query: str) -> Item:
        """The JSON answer to a store action (retrieve, delete, input items)."""
        store = self._require_store()
        partition, response_id = plan.partition, plan.response_id or ""
        action = plan.store_action
        if action is StoreAction.RETRIEVE:
            record = await self._get(store, partition, response_id)
            body = shapes.retrieved(record)
        elif action is StoreAction.DELETE:
            await self._settled(partition, response_id)
            deleted = valid_response_id(response_id) and await self._timed(
                "delete", store.delete(partition, response_id))
            if not deleted:
                raise shapes.not_found(response_id)
            body = shapes.deleted(response_id)
        else:
            params = shapes.list_params(dict(parse_qsl(query)))
            record = await self._get(store, partition, response_id)
            found = await self._timed("get_many", store.get_many(partition, record.ancestors)) \
                if record.ancestors else {}
            body = shapes.input_items_page(shapes.context_items(record, found), params)
        self.metrics.answered.labels(str(action), "200").inc()
        return body

    def refused(self, plan: Plan, error: ApiError) -> None:
        """Count a store action or expansion the proxy refused."""
        operation = str(plan.store_action) if plan.store_action else "create"
        self.metrics.answered.labels(operation, str(error.status)).inc()

    def _require_store(self) -> ResponseStore:
        if self.store is None:
            raise STORE_UNAVAILABLE
        return self.store

    async def _get(self, store: ResponseStore, partition: str, response_id: str,
                   param: str | None = None) -> StoredResponse:
        record = None
        if valid_response_id(response_id):
            await self._settled(partition, response_id)
            record = await self._timed("get", store.get(partition, response_id))
        if record is None:
            raise shapes.not_found(response_id, param)
        return record

    # ------------------------------------------------------------------ response side

    def observe(self, flow: http.HTTPFlow, turn: TurnRequest) -> None:
        """At the reply's headers: keep its final response object as a record."""
        response = flow.response
        if self.store is None or response is None or response.status_code != 200:
            return
        capture = _Capture(turn)
        content_type = response.headers.get("content-type", "")
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        observer: SseObserver | JsonObserver
        if content_type.startswith("text/event-stream") and coding == "identity":
            observer = SseObserver(lambda final: self._captured(capture, final))
        elif content_type.startswith("application/json"):
            decode = None if coding == "identity" else functools.partial(_decoded, coding)
            observer = JsonObserver(lambda final: self._captured(capture, final), decode=decode)
        else:
            log.warning("bastion-edge: not storing response (%s, %s)", content_type, coding)
            return
        flow.metadata[FLOW_KEY] = capture
        if response.stream:  # otherwise buffered: captured in `settle`
            inner = response.stream if callable(response.stream) else None
            response.stream = _Observed(inner, observer)

    async def settle(self, flow: http.HTTPFlow, reply: Item | None) -> None:
        """At the reply's end: store a buffered reply, wait (bounded) for the write."""
        capture = flow.metadata.pop(FLOW_KEY, None)
        if not isinstance(capture, _Capture):
            return
        if capture.write is None and reply is not None:
            self._captured(capture, reply)
        if capture.write is not None:
            await asyncio.wait({capture.write}, timeout=WRITE_WAIT_SECONDS)

    def waiting(self, flow: http.HTTPFlow) -> bool:
        """True when `settle` has work for this flow."""
        return isinstance(flow.metadata.get(FLOW_KEY), _Capture)

    @staticmethod
    def forget(flow: http.HTTPFlow) -> None:
        flow.metadata.pop(FLOW_KEY, None)

    def _captured(self, capture: _Capture, final: Item) -> None:
        record = record_from_response(capture.turn, final, time.time())
        if record is not None and capture.write is None:
            capture.write = self._write_soon(record)

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
    """The stream callable already set (if any), then an observer of what the app gets."""

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

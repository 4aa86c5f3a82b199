"""The request side of the proxy, a child addon of `BastionEdge`:

  requestheaders   RequestHead -> plan_head -> point the flow where the plan says (every
                   OpenAI-bound flow leaves here without the app's credentials: fail
                   closed); a large form streams with its `model` field replaced
  request          ParsedBody (+ what the planner says it needs next: stored Responses
                   history, referenced items) -> plan_body -> new body bytes, or the
                   proxy's own answer (refusal, Responses store)

Decisions live in `bastion_edge.core.planner`; nothing here decides where a request goes.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from mitmproxy import http

from bastion_edge.batch.keeper import BatchKeeper
from bastion_edge.batch.server import TOKEN_HEADER as BATCH_TOKEN_HEADER
from bastion_edge.config.key_files import KeyFiles
from bastion_edge.config.quota_rules import Quota
from bastion_edge.core.limits import LimitError
from bastion_edge.core.plan import BatchAction, BodyStep, Destination, Plan, Route
from bastion_edge.core.plan_needs import (
    NOTHING,
    Gathered,
    Need,
    NeedHistory,
    Ready,
    next_need,
)
from bastion_edge.core.planner import answered_from_store, form_model, plan_body, plan_head, refused
from bastion_edge.core.quota import Rejected, Unavailable, rejection_error, unavailable_error
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.errors import SERVER_ERROR, ApiError
from bastion_edge.proxy.body_limits import bound_body
from bastion_edge.proxy.exchange import METADATA_KEY, Exchange
from bastion_edge.proxy.flow_edit import (
    exchange_of,
    lower_headers,
    point_at,
    replace_body,
    request_host,
    set_headers,
)
from bastion_edge.proxy.gate import APP_METADATA_KEY
from bastion_edge.proxy.http_guard import never_empty
from bastion_edge.proxy.model_catalog import ModelCatalog
from bastion_edge.proxy.quotas import UPSTREAM, QuotaKeeper, estimate_of
from bastion_edge.proxy.recorder import Recorder
from bastion_edge.proxy.responses_keeper import STORE_UNAVAILABLE, ResponsesKeeper
from bastion_edge.proxy.shared import Shared
from bastion_edge.proxy.timeouts import ResponseTimeouts
from bastion_edge.state.responses_store import StoreError
from bastion_edge.streams.multipart import FormFieldRewriter, boundary_from_content_type
from bastion_edge.tts.adapter import TOKEN_HEADER, SpeechJob, TtsAdapter

log = logging.getLogger("bastion_edge")

JSON_TYPE = {"content-type": "application/json"}


class RequestPath:
    name = "bastion_request_path"

    def __init__(self, shared: Shared, *, key_files: KeyFiles, recorder: Recorder,
                 tts: TtsAdapter, batches: BatchKeeper, catalog: ModelCatalog,
                 responses: ResponsesKeeper, timeouts: ResponseTimeouts,
                 client: Callable[[], httpx.AsyncClient], quotas: QuotaKeeper,
                 canary_percent: Callable[[], float] = lambda: 0.0) -> None:
        self.shared = shared
        self.canary_percent = canary_percent  # the canary's cached step: never a store call
        self.key_files = key_files
        self.recorder = recorder
        self.tts = tts
        self.batches = batches
        self.catalog = catalog
        self.responses = responses
        self.timeouts = timeouts
        self.client = client
        self.quotas = quotas

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        headers = lower_headers(request)
        head = RequestHead(
            scheme=request.scheme, host=request_host(request, headers), method=request.method,
            path=request.path, headers=headers, http_version=request.http_version,
            client=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            app=flow.metadata.get(APP_METADATA_KEY), header_fields=request.headers.fields)
        shared = self.shared
        plan = plan_head(head, shared.policy, shared.environ, self.key_files,
                         canary_percent=self.canary_percent())
        if plan is None:
            return  # not ours: untouched
        exchange = Exchange(
            request_id=f"{random.getrandbits(64):016x}",  # correlates log lines; not a secret
            plan=plan, original_host=head.host, client=head.client)
        flow.metadata[METADATA_KEY] = exchange
        self.recorder.started(flow)
        bound_body(flow, plan, shared.rules.limits)
        try:
            self.apply_route(flow, exchange, plan.route)
            if plan.refusal is None and plan.body_step is BodyStep.STREAMED_FORM:
                self._stream_form(flow, exchange, head)
        except Exception as e:  # never crash, never fall through to OpenAI
            log.exception("bastion-edge: requestheaders failed")
            refuse(exchange, internal_error(e))

    def apply_route(self, flow: http.HTTPFlow, exchange: Exchange, route: Route) -> None:
        """Point the flow where the route says, with its header edits, in one pass."""
        request = flow.request
        target = route.target
        put = dict(route.put_headers)
        if route.destination is Destination.TTS and exchange.plan.refusal is None:
            port, token = self._speech_job(exchange.plan)
            put[TOKEN_HEADER] = token
            point_at(request, "http", "127.0.0.1", port, f"127.0.0.1:{port}",
                     put=put, drop=route.drop_headers)
            request.path = "/v1/audio/speech"
        elif route.destination is Destination.BATCH and exchange.plan.refusal is None:
            port, token = self.batches.register(exchange.plan)
            put[BATCH_TOKEN_HEADER] = token
            point_at(request, "http", "127.0.0.1", port, f"127.0.0.1:{port}",
                     put=put, drop=route.drop_headers)
            request.path = target.path
            if exchange.plan.batch_action is BatchAction.FILE_CREATE:
                request.stream = True  # the upload streams into the batch server's blob
                length = request.headers.get("content-length", "")
                exchange.bytes_in = int(length) if length.isdigit() else 0
        else:
            point_at(request, target.scheme, target.host, target.port, target.host_header,
                     put=put, drop=route.drop_headers)
            request.path = target.path
        exchange.applied_route = route

    def _speech_job(self, plan: Plan) -> tuple[int, str]:
        """`/v1/audio/speech` goes to the in-process Riva adapter; the key stays in-process."""
        rules = self.shared.rules
        upstream = rules.upstream
        assert self.tts.port is not None, "TTS adapter not started"
        assert plan.key is not None
        token = self.tts.register(SpeechJob(
            riva_url=f"https://{upstream.host}:{upstream.port}{rules.tts.path}",
            bastion_key=plan.key.key, tts=rules.tts, http_client=self.client(),
            timeout_seconds=upstream.response_timeout_seconds))
        return self.tts.port, token

    def _stream_form(self, flow: http.HTTPFlow, exchange: Exchange, head: RequestHead) -> None:
        """A large multipart upload streams through with its `model` field replaced."""
        boundary = boundary_from_content_type(head.headers.get("content-type", ""))
        assert boundary is not None
        policy = self.shared.policy
        available = self.available(exchange.plan)

        def replace_model(old: bytes) -> bytes:
            decided = form_model(exchange.plan, policy, old, streaming=True,
                                 available=available)
            exchange.plan = decided.plan
            return decided.value

        flow.request.stream = never_empty(FormFieldRewriter(boundary, b"model", replace_model).feed)
        # The replaced value may change the length: re-frame the body as chunked.
        set_headers(flow.request.headers, {"transfer-encoding": "chunked"},
                    drop=["content-length"])
        length = head.headers.get("content-length")
        exchange.bytes_in = int(length) if length and length.isdigit() else 0

    def request(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        """Sync for most flows; a coroutine (awaited by mitmproxy) when the planner
        needs the Responses store."""
        exchange = exchange_of(flow)
        if exchange is None or flow.response:
            return None
        plan = exchange.plan
        if plan.refusal is None and plan.store_action is not None:
            return self._answer_from_store(flow, exchange)
        body: ParsedBody | None = None
        if plan.refusal is None and plan.body_step not in (BodyStep.NONE,
                                                           BodyStep.STREAMED_FORM):
            body = self._parsed_body(flow, exchange)
            try:
                need = next_need(plan, body)
            except ApiError as e:
                refuse(exchange, e)
                need = Ready()
            if not isinstance(need, Ready):
                return self._gather_and_plan(flow, exchange, body, need)
            self._plan_body(flow, exchange, body, need)
        elif not exchange.streamed_request:
            exchange.bytes_in = len(flow.request.raw_content or b"")
        quota = self._quota(flow, exchange)
        if quota is not None:
            return self._admit_and_send(flow, exchange, body, quota)
        self.send_or_answer(flow, exchange)
        return None

    def _quota(self, flow: http.HTTPFlow, exchange: Exchange) -> Quota | None:
        """The app's quota when this request goes upstream (a model call: a POST to
        Bastion, OpenAI or the speech adapter); local answers cost nothing."""
        plan = exchange.plan
        if plan.refusal is not None or flow.request.method != "POST" \
                or plan.route.destination not in UPSTREAM:
            return None
        return self.quotas.quota_of(plan.facts.app)

    async def _admit_and_send(self, flow: http.HTTPFlow, exchange: Exchange,
                              body: ParsedBody | None, quota: Quota) -> None:
        """Admit by the app's quota, then send; over it, the 429 (nothing goes upstream)."""
        plan = exchange.plan
        app = plan.facts.app
        if app is not None:
            verdict = await self.quotas.admit(app, quota, estimate_of(plan, body))
            exchange.quota = verdict
            if isinstance(verdict, Rejected):
                refuse(exchange, rejection_error(verdict, app))
            elif isinstance(verdict, Unavailable):
                refuse(exchange, unavailable_error(app))
        self.send_or_answer(flow, exchange)

    def _parsed_body(self, flow: http.HTTPFlow, exchange: Exchange) -> ParsedBody:
        request = flow.request
        raw = request.raw_content or b""
        exchange.bytes_in = len(raw)
        if "content-encoding" in exchange.plan.facts.headers:
            raw = request.get_content() or b""
        return ParsedBody(raw)

    def _plan_body(self, flow: http.HTTPFlow, exchange: Exchange, body: ParsedBody,
                   ready: Ready) -> None:
        shared = self.shared
        try:
            plan = plan_body(exchange.plan, body, shared.policy, shared.environ, ready.history,
                             self.key_files, ready.referenced, self.available(exchange.plan),
                             canary_percent=self.canary_percent())
        except Exception as e:
            log.exception("bastion-edge: request rewrite failed")
            plan = refused(exchange.plan, internal_error(e))
        exchange.plan = plan
        if plan.refusal is not None:
            return
        if plan.route != exchange.applied_route:  # split by conversation: decided now
            self.apply_route(flow, exchange, plan.route)
        if plan.body is not None:
            replace_body(flow.request, plan.body, plan.facts.headers)

    async def _gather_and_plan(self, flow: http.HTTPFlow, exchange: Exchange,
                               body: ParsedBody, need: Need) -> None:
        """Fetch what the planner asks for (Responses state), until it is ready; plan."""
        plan = exchange.plan
        got: Gathered = NOTHING
        try:
            while not isinstance(need, Ready):
                if isinstance(need, NeedHistory):
                    got = got.with_history(
                        await self.responses.history(need.partition, need.response_id))
                else:
                    got = got.with_items(
                        await self.responses.items(need.partition, list(need.item_ids)))
                need = next_need(plan, body, got)
        except (ApiError, StoreError) as e:
            self._refuse_store(exchange, e)
        else:
            self._plan_body(flow, exchange, body, need)
        quota = self._quota(flow, exchange)
        if quota is not None:
            await self._admit_and_send(flow, exchange, body, quota)
            return
        self.send_or_answer(flow, exchange)

    async def _answer_from_store(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        plan = exchange.plan
        try:
            answer = await self.responses.answer(plan, flow.request.path.partition("?")[2])
        except (ApiError, StoreError) as e:
            self._refuse_store(exchange, e)
        else:
            exchange.plan = answered_from_store(plan)
            flow.response = http.Response.make(200, json.dumps(answer).encode(), JSON_TYPE)
            return
        self.send_or_answer(flow, exchange)

    def available(self, plan: Plan) -> frozenset[str] | None:
        """The models Bastion lists now for the plan's key: a lookup, never a fetch."""
        return self.catalog.available_models(plan.key.env if plan.key is not None else None)

    def _refuse_store(self, exchange: Exchange, error: ApiError | StoreError) -> None:
        """The store refused (an unknown id: its envelope) or failed (503)."""
        if isinstance(error, StoreError):
            log.error("bastion-edge: response store failed: %s", error)
            error = STORE_UNAVAILABLE
        self.responses.refused(exchange.plan, error)
        refuse(exchange, error)

    def send_or_answer(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """The request goes upstream as planned, or the proxy answers its refusal."""
        error = exchange.plan.refusal
        if error is not None:
            if exchange.applied_route != exchange.plan.route:  # no key on a refused flow
                self.apply_route(flow, exchange, exchange.plan.route)
            metrics = self.shared.metrics
            if isinstance(error, LimitError):
                metrics.limit_rejected(error.limit)
            metrics.proxy_errors.labels(error.code).inc()
            flow.response = http.Response.make(
                error.status, error.body(),
                {**JSON_TYPE, "x-bastion-edge-error": error.code})
            return
        self.timeouts.start(flow, exchange, self.shared.rules.upstream.response_timeout_seconds)


def refuse(exchange: Exchange, error: ApiError) -> None:
    exchange.plan = refused(exchange.plan, error)


def internal_error(e: Exception) -> ApiError:
    return ApiError(500, f"bastion-edge internal error: {e}", "proxy_error", SERVER_ERROR)

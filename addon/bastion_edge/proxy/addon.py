"""The mitmproxy addon: builds a plan's inputs from the flow, applies the plan, meters.

Hook order for one request:
  requestheaders   RequestHead -> plan_head -> point the flow where the plan says (every
                   OpenAI-bound flow leaves here without the app's credentials: fail
                   closed); a large form streams with its `model` field replaced
  request          ParsedBody (+ stored Responses history) -> plan_body -> new body bytes,
                   or the proxy's own answer (refusal, Responses store)
  responseheaders  reply streaming, model restoring, Responses capture, our headers
  response/error   gateway-error envelopes, metrics, the access log, the mirror copy

Decisions live in `bastion_edge.core.planner`; nothing here decides where a request goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
from mitmproxy import ctx, exceptions, http

from bastion_edge.batch.keeper import BatchKeeper
from bastion_edge.batch.runner import RunContext
from bastion_edge.batch.server import TOKEN_HEADER as BATCH_TOKEN_HEADER
from bastion_edge.config.key_files import KeyFiles
from bastion_edge.config.reload import RulesWatcher
from bastion_edge.config.rules import (
    Rules,
    RulesError,
    UpstreamRules,
    apply_environment,
    load_rules,
)
from bastion_edge.core.keys import all_key_sources, read_source
from bastion_edge.core.limits import LimitError
from bastion_edge.core.model_map import ModelMap
from bastion_edge.core.plan import BatchAction, BodyStep, Decision, Destination, Plan, Route
from bastion_edge.core.planner import (
    Policy,
    answered_from_store,
    form_model,
    history_wanted,
    plan_body,
    plan_head,
    references_wanted,
    refused,
)
from bastion_edge.core.reply_model import model_bytes_restorer, restore_model
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.core.responses import History, Item
from bastion_edge.core.usage import model_in_json
from bastion_edge.deploy.tls_bundles import upstream_bundle
from bastion_edge.errors import SERVER_ERROR, ApiError
from bastion_edge.proxy import gateway_errors, mitmproxy_seams
from bastion_edge.proxy.body_limits import bound_body
from bastion_edge.proxy.exchange import METADATA_KEY, Exchange
from bastion_edge.proxy.fallback import fall_back, holds, wants_retry
from bastion_edge.proxy.flow_edit import (
    ByteCounter,
    ReplyJson,
    annotate,
    buffered_usage,
    exchange_of,
    lower_headers,
    point_at,
    replace_body,
    request_host,
    set_headers,
    worth_streaming,
)
from bastion_edge.proxy.gate import APP_METADATA_KEY
from bastion_edge.proxy.http_guard import limit_error_of, never_empty
from bastion_edge.proxy.mirror import Mirror, MirrorRequest, MirrorResult
from bastion_edge.proxy.model_catalog import ModelCatalog
from bastion_edge.proxy.pool_env import WORKER_ID_ENV, WORKER_SOCKET_ENV
from bastion_edge.proxy.responses import STORE_UNAVAILABLE, ResponsesKeeper
from bastion_edge.proxy.timeouts import ResponseTimeouts
from bastion_edge.proxy.upstream_client import make_upstream_client
from bastion_edge.state.store import StoreError
from bastion_edge.streams.multipart import FormFieldRewriter, boundary_from_content_type
from bastion_edge.streams.sse import SseRewriter
from bastion_edge.streams.usage_stream import JsonUsageTail, UsageTap
from bastion_edge.telemetry.access_log import AccessLog, AccessRecord, loggable_body
from bastion_edge.telemetry.admin_server import AdminServer
from bastion_edge.telemetry.metrics import Metrics
from bastion_edge.telemetry.otel import OtelExport
from bastion_edge.tts.adapter import TOKEN_HEADER, SpeechJob, TtsAdapter
from bastion_edge.tts.reply import NOTE_HEADER, TTS_HEADER

log = logging.getLogger("bastion_edge")

UPSTREAM_MODEL_HEADER = "x-bastion-edge-upstream-model"
REWRITES_HEADER = "x-bastion-edge-rewrites"
WORKER_HEADER = "x-bastion-edge-worker"  # which `--workers` process answered
REDACTED = "Bearer [redacted by bastion-edge]"
JSON_TYPE = {"content-type": "application/json"}


class BastionEdge:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self.environ = environ if environ is not None else os.environ
        self.policy = Policy.of(Rules())
        self.metrics = Metrics()
        self.rules_path: Path | None = None
        self.rules_loaded = False
        self.access_log: AccessLog | None = None
        self.watcher: RulesWatcher | None = None
        self.admin: AdminServer | None = None
        self.tts = TtsAdapter()
        self.mirror = Mirror()
        self.responses = ResponsesKeeper(self.metrics.registry, self.environ)
        self.in_flight: set[str] = set()  # ids of our flows not finished yet
        self.keeps_flows = False  # mitmweb or a flow file: redact keys on flow objects
        self.draining = False
        self._upstream_client: tuple[UpstreamRules, httpx.AsyncClient] | None = None
        self.timeouts = ResponseTimeouts()
        self.catalog = ModelCatalog(self.metrics)  # Bastion's live model list
        self.key_files = KeyFiles(self.metrics.registry)  # keys.default_file, bastion_key_file
        self.batches = BatchKeeper(self.metrics.registry, self.environ)  # /v1/files, batches
        self.otel: OtelExport | None = None  # OTLP spans and gen_ai metrics, when configured
        self.worker_id = self.environ.get(WORKER_ID_ENV, "")  # in a `--workers` pool

    @property
    def rules(self) -> Rules:
        return self.policy.rules

    @property
    def models(self) -> ModelMap:
        return self.policy.models

    # ------------------------------------------------------------------ lifecycle

    def load(self, loader: Any) -> None:
        loader.add_option(
            "bastion_rules", str, "",
            "Rules file. Default: $BASTION_RULES, else ./rules.yaml. Hot-reloaded.")
        loader.add_option(
            "bastion_metrics_host", str, "127.0.0.1", "Address of /metrics, /healthz, /readyz.")
        loader.add_option(
            "bastion_metrics_port", int, 9090,
            "Port of /metrics, /healthz, /readyz; 0 disables them.")
        loader.add_option(
            "bastion_access_log", str, "",
            "JSON access log: a file path, '-' for stdout, empty for none.")
        loader.add_option(
            "bastion_access_log_bodies", bool, False,
            "Also log JSON request/response bodies (up to 64 KiB, credentials redacted).")
        self.responses.load(loader)
        mitmproxy_seams.install(lambda: self.rules.limits, self.metrics.limit_rejected)

    def configure(self, updated: set[str]) -> None:
        if "bastion_rules" in updated:
            path = Path(ctx.options.bastion_rules or self.environ.get("BASTION_RULES")
                        or "rules.yaml")
            try:
                rules = apply_environment(load_rules(path), self.environ)
            except (RulesError, OSError) as e:
                self.metrics.reloads.labels("failure").inc()
                raise exceptions.OptionsError(f"bastion-edge rules {path}: {e}") from e
            self.rules_path = path
            self._install(rules)
            if self.watcher is not None:
                self.watcher.retarget(path, rules.sha256)
        if "bastion_access_log" in updated:
            if self.access_log is not None:
                self.access_log.close()
            target = ctx.options.bastion_access_log
            self.access_log = AccessLog(target) if target else None
        self.responses.configure(updated, self.rules.responses_state)
        if updated & {"bastion_rules", "confdir"}:
            try:
                self.batches.configure(self.rules.batches)
            except ValueError as e:
                raise exceptions.OptionsError(f"bastion-edge batches: {e}") from e

    async def running(self) -> None:
        self.keeps_flows = "web_port" in ctx.options or bool(
            getattr(ctx.options, "save_stream_file", None))
        await self.tts.start()
        self.otel = OtelExport.from_environment(self.environ, self.metrics.model_label)
        await self.responses.running()
        await self.batches.running(self._batch_context, self._batch_logged,
                                   lambda: self.rules.batches)
        self.catalog.start(lambda: self.rules, self.environ,
                           Path(os.path.expanduser(ctx.options.confdir)))
        if self.rules_path is not None:
            self.watcher = RulesWatcher(
                self.rules_path, self.rules.sha256, self._reloaded, self._reload_failed)
            self.watcher.start()
        if ctx.options.bastion_metrics_port:
            self.admin = AdminServer(self.metrics.registry, self.readiness)
            await self.admin.start(ctx.options.bastion_metrics_host,
                                   ctx.options.bastion_metrics_port)
            log.info("bastion-edge metrics on http://%s:%s/metrics",
                     ctx.options.bastion_metrics_host, self.admin.port)
        if self.environ.get(WORKER_SOCKET_ENV):  # a `--workers` pool's parent asks here
            self.admin = AdminServer(self.metrics.registry, self.readiness)
            await self.admin.start_unix(self.environ[WORKER_SOCKET_ENV])

    async def done(self) -> None:
        await self.catalog.stop()
        await self.key_files.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.admin is not None:
            await self.admin.stop()
        if self.access_log is not None:
            self.access_log.close()
        self.timeouts.cancel_all()
        with contextlib.suppress(RuntimeError):
            await self.tts.stop()
        await self.mirror.drain()
        await self.responses.done()
        await self.batches.done()
        if self.otel is not None:
            await asyncio.to_thread(self.otel.shutdown)
        if self._upstream_client is not None:
            await self._upstream_client[1].aclose()

    def upstream_client(self) -> httpx.AsyncClient:
        """The proxy's own client to Bastion, rebuilt when the upstream rules change."""
        upstream = self.rules.upstream
        if self._upstream_client is None or self._upstream_client[0] != upstream:
            confdir = Path(os.path.expanduser(ctx.options.confdir))
            if self._upstream_client is not None:
                old = self._upstream_client[1]
                asyncio.get_running_loop().call_later(
                    upstream.response_timeout_seconds,
                    lambda: asyncio.ensure_future(old.aclose()))
            self._upstream_client = (upstream, make_upstream_client(upstream, confdir))
        return self._upstream_client[1]

    def _batch_context(self) -> RunContext:
        """What a batch line is planned and sent with: the live rules, keys and client."""
        return RunContext(self.policy, self.environ, self.key_files, self.upstream_client())

    def _batch_logged(self, record: AccessRecord) -> None:
        self.metrics.exchange_finished(
            endpoint=record.endpoint, app=record.app, original_model=record.original_model,
            upstream_model=record.upstream_model, destination=record.destination,
            status=record.status, stream=False, duration=(record.duration_ms or 0) / 1000,
            ttfb=None, rewrites=record.rewrites)
        if self.access_log is not None:
            self.access_log.write(record)

    async def drain(self, grace_seconds: float) -> int:
        """Stop accepting connections; wait up to `grace_seconds` for in-flight requests.

        Returns how many were still running when the grace period ended.
        """
        self.draining = True
        ctx.options.update(server=False)
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await self.mirror.drain()
        return len(self.in_flight)

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.rules_loaded:
            return False, "rules not loaded"
        server = ctx.master.addons.get("proxyserver")
        if server is None or not server.is_running or not server.listen_addrs():
            return False, "proxy not listening"
        return True, f"rules {self.rules.sha256[:12]}"

    def _install(self, rules: Rules) -> None:
        self.policy = Policy.of(rules)
        self.rules_loaded = True
        self.metrics.rules_loaded(rules, time.time())
        self.catalog.rules_changed()
        self._apply_mitmproxy_options()
        log.info("bastion-edge rules loaded from %s (sha256 %s)", rules.source, rules.sha256[:12])

    def _reloaded(self, rules: Rules) -> None:
        try:
            self._install(apply_environment(rules, self.environ))
        except (RulesError, exceptions.OptionsError) as e:
            self._reload_failed(e)
            return
        self.responses.follow(self.rules.responses_state)

    def _reload_failed(self, error: Exception) -> None:
        self.metrics.reloads.labels("failure").inc()
        log.error("bastion-edge: rejected rules change, still serving the last good rules: %s",
                  error)

    def _apply_mitmproxy_options(self) -> None:
        """Interception scope, lazy upstream connections and upstream trust follow the rules."""
        wanted: dict[str, Any] = {
            "allow_hosts": [self.rules.allow_hosts_regex()],
            "connection_strategy": "lazy",
            # SDKs speak HTTP/1.1; keeping the intercepted hop on HTTP/1.1 gives every
            # client the same error envelopes and streamed, re-framed uploads.
            "http2": False,
        }
        if self.rules.upstream.ca_file:
            confdir = Path(os.path.expanduser(ctx.options.confdir))
            wanted["ssl_verify_upstream_trusted_ca"] = str(
                upstream_bundle(confdir, self.rules.upstream.ca_file))
        changes = {k: v for k, v in wanted.items() if getattr(ctx.options, k) != v}
        if changes:
            ctx.options.update(**changes)

    # ------------------------------------------------------------------ request side

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
        plan = plan_head(head, self.policy, self.environ, self.key_files)
        if plan is None:
            return  # not ours: untouched
        exchange = Exchange(
            request_id=f"{random.getrandbits(64):016x}",  # correlates log lines; not a secret
            plan=plan, original_host=head.host, client=head.client)
        flow.metadata[METADATA_KEY] = exchange
        self.in_flight.add(flow.id)
        bound_body(flow, plan, self.rules.limits)
        try:
            self._apply_route(flow, exchange, plan.route)
            if plan.refusal is None and plan.body_step is BodyStep.STREAMED_FORM:
                self._stream_form(flow, exchange, head)
        except Exception as e:  # never crash, never fall through to OpenAI
            log.exception("bastion-edge: requestheaders failed")
            self._refuse(exchange, _internal_error(e))

    def _apply_route(self, flow: http.HTTPFlow, exchange: Exchange, route: Route) -> None:
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
        upstream = self.rules.upstream
        assert self.tts.port is not None, "TTS adapter not started"
        assert plan.key is not None
        token = self.tts.register(SpeechJob(
            riva_url=f"https://{upstream.host}:{upstream.port}{self.rules.tts.path}",
            bastion_key=plan.key.key, tts=self.rules.tts, http_client=self.upstream_client(),
            timeout_seconds=upstream.response_timeout_seconds))
        return self.tts.port, token

    def _stream_form(self, flow: http.HTTPFlow, exchange: Exchange, head: RequestHead) -> None:
        """A large multipart upload streams through with its `model` field replaced."""
        boundary = boundary_from_content_type(head.headers.get("content-type", ""))
        assert boundary is not None
        policy = self.policy
        available = self._available(exchange.plan)

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
        """Sync for most flows; a coroutine (awaited by mitmproxy) when the Responses
        store is needed."""
        exchange = exchange_of(flow)
        if exchange is None or flow.response:
            return None
        plan = exchange.plan
        if plan.refusal is None and plan.store_action is not None:
            return self._answer_from_store(flow, exchange)
        if plan.refusal is None and plan.body_step not in (BodyStep.NONE,
                                                           BodyStep.STREAMED_FORM):
            body = self._parsed_body(flow, exchange)
            try:
                previous = history_wanted(plan, body)
            except ApiError as e:
                self._refuse(exchange, e)
                previous = None
            if previous is not None or references_wanted(plan, body, None):
                return self._expand_and_plan(flow, exchange, body, previous)
            self._plan_body(flow, exchange, body)
        elif not exchange.streamed_request:
            exchange.bytes_in = len(flow.request.raw_content or b"")
        self._send_or_answer(flow, exchange)
        return None

    def _parsed_body(self, flow: http.HTTPFlow, exchange: Exchange) -> ParsedBody:
        request = flow.request
        raw = request.raw_content or b""
        exchange.bytes_in = len(raw)
        if "content-encoding" in exchange.plan.facts.headers:
            raw = request.get_content() or b""
        return ParsedBody(raw)

    def _plan_body(self, flow: http.HTTPFlow, exchange: Exchange, body: ParsedBody,
                   history: History | None = None,
                   referenced: dict[str, Item] | None = None) -> None:
        try:
            plan = plan_body(exchange.plan, body, self.policy, self.environ, history,
                             self.key_files, referenced, self._available(exchange.plan))
        except Exception as e:
            log.exception("bastion-edge: request rewrite failed")
            plan = refused(exchange.plan, _internal_error(e))
        exchange.plan = plan
        if plan.refusal is not None:
            return
        if plan.route != exchange.applied_route:  # split by conversation: decided now
            self._apply_route(flow, exchange, plan.route)
        if plan.body is not None:
            replace_body(flow.request, plan.body, plan.facts.headers)

    async def _expand_and_plan(self, flow: http.HTTPFlow, exchange: Exchange,
                               body: ParsedBody, previous: str | None) -> None:
        """Responses state first (the conversation, the referenced items), then the plan."""
        plan = exchange.plan
        try:
            history = await self.responses.history(plan.partition, previous) \
                if previous is not None else None
            wanted = references_wanted(plan, body, history)
            referenced = await self.responses.items(plan.partition, wanted) \
                if wanted else None
        except ApiError as e:
            self._refuse_store(exchange, e)
        except StoreError as e:
            log.error("bastion-edge: response store failed: %s", e)
            self._refuse_store(exchange, STORE_UNAVAILABLE)
        else:
            self._plan_body(flow, exchange, body, history, referenced)
        self._send_or_answer(flow, exchange)

    async def _answer_from_store(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        plan = exchange.plan
        try:
            answer = await self.responses.answer(plan, flow.request.path.partition("?")[2])
        except ApiError as e:
            self._refuse_store(exchange, e)
        except StoreError as e:
            log.error("bastion-edge: response store failed: %s", e)
            self._refuse_store(exchange, STORE_UNAVAILABLE)
        else:
            exchange.plan = answered_from_store(plan)
            flow.response = http.Response.make(200, json.dumps(answer).encode(), JSON_TYPE)
            return
        self._send_or_answer(flow, exchange)

    def _available(self, plan: Plan) -> frozenset[str] | None:
        """The models Bastion lists now for the plan's key: a lookup, never a fetch."""
        return self.catalog.available_models(plan.key.env if plan.key is not None else None)

    def _refuse(self, exchange: Exchange, error: ApiError) -> None:
        exchange.plan = refused(exchange.plan, error)

    def _refuse_store(self, exchange: Exchange, error: ApiError) -> None:
        self.responses.refused(exchange.plan, error)
        self._refuse(exchange, error)

    def _send_or_answer(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """The request goes upstream as planned, or the proxy answers its refusal."""
        error = exchange.plan.refusal
        if error is not None:
            if exchange.applied_route != exchange.plan.route:  # no key on a refused flow
                self._apply_route(flow, exchange, exchange.plan.route)
            if isinstance(error, LimitError):
                self.metrics.limit_rejected(error.limit)
            self.metrics.proxy_errors.labels(error.code).inc()
            flow.response = http.Response.make(
                error.status, error.body(),
                {**JSON_TYPE, "x-bastion-edge-error": error.code})
            return
        self.timeouts.start(flow, exchange, self.rules.upstream.response_timeout_seconds)

    # ------------------------------------------------------------------ response side

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.response is None:
            return
        self.timeouts.stop(flow)
        exchange.response_headers_at = time.time()
        response = flow.response
        headers = lower_headers(response)
        plan = exchange.plan
        if exchange.applied_route is not None \
                and exchange.applied_route.destination is Destination.TTS:
            self._note_tts(exchange, headers)
        ours = {}
        if exchange.upstream_model:
            ours[UPSTREAM_MODEL_HEADER] = exchange.upstream_model
        if plan.rewrites:
            ours[REWRITES_HEADER] = ",".join(plan.rewrites)
        if self.worker_id:
            ours[WORKER_HEADER] = self.worker_id
        if ours:
            set_headers(response.headers, ours)
        if self.keeps_flows and "authorization" in flow.request.headers:
            flow.request.headers["authorization"] = REDACTED  # sent already; keep it off screens
        if holds(plan, response.status_code):
            return  # buffered: `response` retries a 404 model_not_found on a fallback
        content_type = headers.get("content-type", "")
        exchange.reply_encoded = "content-encoding" in headers
        # The speech adapter's usage figures are its own estimates: never counted.
        speech = exchange.applied_route is not None \
            and exchange.applied_route.destination is Destination.TTS
        exchange.reply_json = "json" in content_type and not speech
        if content_type.startswith("text/event-stream"):
            exchange.streamed_reply = True
            original = plan.original_model or ""
            inner: Callable[[bytes], bytes] = SseRewriter(
                lambda obj: restore_model(obj, original),
                model_bytes_restorer(original, exchange.upstream_model)) \
                if self._restores_model(plan) else ByteCounter(exchange)
            # Neither ever passes an empty chunk on: mitmproxy would send it as the end of
            # a chunked body. strip: usage asked upstream by the plan, not by the app.
            response.stream = never_empty(inner) if speech else UsageTap(
                exchange.usage_reported, inner, strip=plan.strip_usage)
        elif worth_streaming(headers):
            response.stream = ByteCounter(exchange)
            if exchange.reply_json and not exchange.reply_encoded:  # a large embeddings reply
                response.stream = JsonUsageTail(exchange.usage_reported, response.stream)
        if plan.capture is not None and plan.refusal is None:
            self.responses.observe(flow, plan.capture)

    @staticmethod
    def _note_tts(exchange: Exchange, headers: dict[str, str]) -> None:
        """What the TTS adapter did (its Riva voice, notes such as ignored instructions)."""
        details = dict(part.split("=", 1) for part in
                       headers.get(TTS_HEADER, "").split(";") if "=" in part)
        exchange.tts_voice = details.get("riva_voice")
        characters = details.get("characters", "")
        exchange.tts_characters = int(characters) if characters.isdigit() else None
        exchange.reply_notes += [n for n in headers.get(NOTE_HEADER, "").split(",") if n]

    def _restores_model(self, plan: Plan) -> bool:
        return (self.rules.reply_model == "original" and plan.resolution is not None
                and plan.resolution.changed)

    def response(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        exchange = exchange_of(flow)
        if exchange is None or flow.response is None:
            return None
        self.timeouts.stop(flow)
        if wants_retry(exchange.plan, flow.response):
            return self._fall_back(flow, exchange)
        return self._responded(flow, exchange)

    async def _fall_back(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """Bastion's 404 model_not_found: the same request on the next fallbacks."""
        assert flow.response is not None
        first = exchange.plan.upstream_model
        since = flow.request.timestamp_end or exchange.started
        outcome = await fall_back(flow, exchange.plan, self.upstream_client(),
                                  self.catalog.mark_unavailable,
                                  ((flow.response.timestamp_end or time.time()) - since) * 1000)
        exchange.plan = plan = outcome.plan
        exchange.attempts = [a.to_json() for a in outcome.attempts]
        if outcome.response is not None:
            flow.response = outcome.response
            set_headers(flow.response.headers, {UPSTREAM_MODEL_HEADER: exchange.upstream_model
                                                or "", REWRITES_HEADER: ",".join(plan.rewrites)})
            if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
                exchange.streamed_reply = True
                self._buffered_stream(flow, plan)
            elif plan.capture is not None:
                self.responses.observe(flow, plan.capture)
        if first and len(outcome.attempts) > 1:
            self.metrics.model_fallback(first, plan.upstream_model, "not_found")
        pending = self._responded(flow, exchange)
        if pending is not None:
            await pending

    def _buffered_stream(self, flow: http.HTTPFlow, plan: Plan) -> None:
        """A retried SSE reply, whole: the same model restoring and Responses capture a
        streamed reply gets, applied to the buffered events."""
        response = flow.response
        assert response is not None
        if self._restores_model(plan) and plan.original_model:
            original = plan.original_model
            restore = SseRewriter(lambda obj: restore_model(obj, original))
            response.content = restore(response.raw_content or b"") + restore(b"")
        if plan.capture is not None:
            response.stream = True  # the store observes streams; feed it the events once
            self.responses.observe(flow, plan.capture)
            if callable(response.stream):
                response.stream(response.raw_content or b"")
                response.stream(b"")
            response.stream = False

    def _responded(self, flow: http.HTTPFlow,
                   exchange: Exchange) -> Coroutine[Any, Any, None] | None:
        """The reply as the app gets it: model restored, metered, logged, captured."""
        assert flow.response is not None
        response = flow.response
        plan = exchange.plan
        reply = ReplyJson(response)  # a buffered JSON reply, parsed at most once
        if not response.stream and response.raw_content is not None:
            if self.otel is not None and exchange.reply_json and not exchange.reply_encoded:
                exchange.response_model = model_in_json(response.raw_content or b"")
            if self._restores_model(plan) and plan.original_model:
                reply.restore_model(plan.original_model)
            exchange.bytes_out = len(response.raw_content or b"")
            if exchange.reply_json:
                exchange.usage = buffered_usage(response, reply, exchange.reply_encoded)
        mirrored = plan.decision is Decision.MIRROR and plan.refusal is None
        record = self._finish(flow, exchange, response.status_code, write_log=not mirrored)
        if mirrored:
            self._mirror(flow, exchange, record, reply)
        if self.responses.waiting(flow):
            return self.responses.settle(flow, reply.object() if response.status_code == 200
                                         else None)
        return None

    def error(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.error is None:
            return
        self.timeouts.stop(flow)
        self.responses.forget(flow)
        hit = limit_error_of(flow)
        if hit is not None:  # a limit ended it; proxy/http_guard.py answered the client
            self._refuse(exchange, hit)
            self.metrics.limit_rejected(hit.limit)
            self.metrics.proxy_errors.labels(hit.code).inc()
            self._finish(flow, exchange, hit.status)
            return
        envelope = gateway_errors.classify(
            flow.error.msg, where=exchange.upstream_host or "upstream",
            timed_out=exchange.timed_out,
            timeout_seconds=self.rules.upstream.response_timeout_seconds,
            connection_opened=flow.server_conn.timestamp_tcp_setup is not None,
            killed=flow.error.msg == flow.error.KILLED_MESSAGE)
        if envelope is not None:
            exchange.upstream_error = envelope.code
            self.metrics.upstream_errors.labels(envelope.code).inc()
            if flow.response is None:
                gateway_errors.register(flow.error.msg, envelope)
        self._finish(flow, exchange, envelope.status if envelope else None)

    def _key_values(self) -> list[str]:
        return [read_source(source, self.environ, self.key_files)
                for source in all_key_sources(self.rules)]

    # ------------------------------------------------------------------ mirror

    def _mirror(self, flow: http.HTTPFlow, exchange: Exchange, record: AccessRecord,
                reply: ReplyJson) -> None:
        """Send Bastion a rewritten copy of what OpenAI just answered; log when compared."""
        copy = self._mirror_copy(flow, exchange.plan, reply)
        if isinstance(copy, str):
            self._mirror_done(exchange, record, {"skipped": copy})
            return

        def done(result: MirrorResult) -> None:
            verdict = "error" if result.error else "match" if result.shape_match else "mismatch"
            self.metrics.mirror_duration.labels(exchange.endpoint).observe(
                result.duration_ms / 1000)
            self._mirror_done(exchange, record, result.to_dict(), verdict)

        limit = self.rules.cutover.mirror_max_in_flight
        if not self.mirror.try_send(self.upstream_client(), copy, limit, done):
            self._mirror_done(exchange, record, {"skipped": "max_in_flight"})

    def _mirror_done(self, exchange: Exchange, record: AccessRecord,
                     mirror: dict[str, object], verdict: str = "skipped") -> None:
        self.metrics.mirror.labels(verdict).inc()
        record.mirror = mirror
        if self.access_log is not None:
            self.access_log.write(record)

    def _mirror_copy(self, flow: http.HTTPFlow, plan: Plan,
                     reply: ReplyJson) -> MirrorRequest | str:
        """The request Bastion gets, or why there is none."""
        assert flow.response is not None
        if plan.mirror_body is None or plan.key is None or plan.mirror_target is None:
            return plan.mirror_skip or "not mirrored endpoint"
        return MirrorRequest(
            method=plan.method, url=plan.mirror_target.url,
            headers={"content-type": "application/json",
                     "authorization": f"Bearer {plan.key.key}"},
            body=plan.mirror_body, stream=plan.stream,
            primary_status=flow.response.status_code, primary_json=reply.value())

    # ------------------------------------------------------------------ the end

    def _finish(self, flow: http.HTTPFlow, exchange: Exchange, status: int | None,
                write_log: bool = True) -> AccessRecord:
        self.in_flight.discard(flow.id)
        finished = time.time()
        passed_over = exchange.plan.fallback_reason
        if passed_over is not None and exchange.plan.refusal is None:
            self.metrics.model_fallback(passed_over[0], exchange.plan.upstream_model,
                                        passed_over[1])
        self.metrics.exchange_finished(
            endpoint=exchange.endpoint, app=exchange.plan.facts.app,
            original_model=exchange.original_model,
            upstream_model=exchange.upstream_model, destination=exchange.destination,
            status=status, stream=exchange.stream, duration=finished - exchange.started,
            ttfb=(exchange.response_headers_at - exchange.started
                  if exchange.response_headers_at is not None else None),
            rewrites=exchange.rewrites)
        self.metrics.token_metrics.exchange(
            endpoint=exchange.endpoint, app=exchange.plan.facts.app,
            original_model=exchange.original_model, upstream_model=exchange.upstream_model,
            destination=exchange.destination, usage=exchange.usage,
            tts_characters=exchange.tts_characters)
        record = exchange.record(status, finished)
        if self.otel is not None:
            self.otel.exchange(exchange.genai(status, finished))
        if ctx.options.bastion_access_log_bodies:
            secrets = [*exchange.plan.app_credentials.values(), *self._key_values()]
            record.request_body = loggable_body(flow.request.raw_content, secrets)
            if flow.response is not None and not flow.response.stream:
                record.response_body = loggable_body(flow.response.raw_content, secrets)
        if self.access_log is not None and write_log:
            self.access_log.write(record)
        if self.keeps_flows:
            if "authorization" in flow.request.headers and exchange.destination != "openai":
                flow.request.headers["authorization"] = REDACTED  # every path: errors too
            annotate(flow, exchange)
        return record


def _internal_error(e: Exception) -> ApiError:
    return ApiError(500, f"bastion-edge internal error: {e}", "proxy_error", SERVER_ERROR)

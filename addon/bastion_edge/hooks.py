"""The mitmproxy addon: turns flows into plain values, calls the core, writes back.

Hook order for one request: `requestheaders` (destination, keys, request streaming:
the upstream connection may open right after it), `request` (body rewriting),
`responseheaders` (SSE streaming, model header), `response` / `error` (logging,
metrics, envelopes for gateway errors).

Fail closed: the first thing done to an OpenAI-bound flow is pointing it at Bastion
and removing the app's credentials, so no later failure can leak it to OpenAI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import ctx, exceptions, http

from . import gateway_errors
from .access_log import AccessLog, AccessRecord, loggable_body
from .admin_server import AdminServer
from .cutover import OPENAI, conversation_key, destination_for
from .errors import SERVER_ERROR, ApiError
from .exchange import METADATA_KEY, Exchange
from .flow_edit import (
    ByteCounter,
    annotate,
    exchange_of,
    lower_headers,
    point_at,
    replace_body,
    request_host,
    requested_model,
    restore_json_model,
    set_headers,
    worth_streaming,
)
from .keys import select_key
from .metrics import Metrics
from .mirror import Mirror, MirrorRequest, MirrorResult
from .model_map import ModelMap
from .multipart import FormFieldRewriter, boundary_from_content_type, replace_form_field
from .reload import RulesWatcher
from .reply_model import restore_model
from .request_facts import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    IMAGES_GENERATIONS,
    MODELS,
    RESPONSES,
    SPEECH,
    RequestFacts,
    classify_endpoint,
    is_collection_path,
    key_sha256,
)
from .request_rewrite import (
    REWRITE_HOST,
    REWRITE_HTTPS,
    REWRITE_KEY,
    REWRITE_MODEL,
    REWRITE_TTS,
    BodyRewrite,
    decide_model,
    parse_json_object,
    rewrite_json_body,
    rewrite_model_path,
)
from .routing import HostKind, bastion_destination, classify_host, map_openai_path
from .rules import Rules, RulesError, UpstreamRules, apply_environment, load_rules
from .sse import SseRewriter
from .tls_bundles import upstream_bundle
from .tts import TOKEN_HEADER, SpeechJob, TtsAdapter
from .tts.reply import NOTE_HEADER, TTS_HEADER
from .upstream_client import make_upstream_client
from .upstream_timeouts import ResponseTimeouts

log = logging.getLogger("bastion_edge")

JSON_ENDPOINTS = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, IMAGES_GENERATIONS, RESPONSES})
# Multipart uploads larger than this are streamed through, not buffered.
STREAM_UPLOADS_OVER = 1024 * 1024
APP_CREDENTIAL_HEADERS = ("authorization", "openai-organization", "openai-project")
UPSTREAM_MODEL_HEADER = "x-bastion-edge-upstream-model"
REWRITES_HEADER = "x-bastion-edge-rewrites"
REDACTED = "Bearer [redacted by bastion-edge]"


class BastionEdge:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self.environ = environ if environ is not None else os.environ
        self.rules = Rules()
        self.models = ModelMap(self.rules)
        self.metrics = Metrics()
        self.rules_path: Path | None = None
        self.rules_loaded = False
        self.access_log: AccessLog | None = None
        self.watcher: RulesWatcher | None = None
        self.admin: AdminServer | None = None
        self.tts = TtsAdapter()
        self.mirror = Mirror()
        self.in_flight: set[str] = set()  # ids of our flows not finished yet
        self.keeps_flows = False  # mitmweb or a flow file: redact keys on flow objects
        self.draining = False
        self._upstream_client: tuple[UpstreamRules, httpx.AsyncClient] | None = None
        self.timeouts = ResponseTimeouts()

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
        gateway_errors.install()

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

    async def running(self) -> None:
        self.keeps_flows = "web_port" in ctx.options or bool(
            getattr(ctx.options, "save_stream_file", None))
        await self.tts.start()
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

    async def done(self) -> None:
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
        self.rules = rules
        self.models = ModelMap(rules)
        self.rules_loaded = True
        self.metrics.rules_loaded(rules, time.time())
        self._apply_mitmproxy_options()
        log.info("bastion-edge rules loaded from %s (sha256 %s)", rules.source, rules.sha256[:12])

    def _reloaded(self, rules: Rules) -> None:
        try:
            self._install(apply_environment(rules, self.environ))
        except (RulesError, exceptions.OptionsError) as e:
            self._reload_failed(e)

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
        original_host = request_host(request, headers)
        kind = classify_host(self.rules, original_host)
        if kind is None:
            return  # not ours: untouched
        exchange = Exchange(
            request_id=f"{random.getrandbits(64):016x}",  # correlates log lines; not a secret
            kind=kind,
            endpoint=classify_endpoint(request.path),
            method=request.method,
            path=request.path.split("?", 1)[0],
            original_host=original_host,
            client=flow.client_conn.peername[0] if flow.client_conn.peername else None,
        )
        flow.metadata[METADATA_KEY] = exchange
        self.in_flight.add(flow.id)
        scheme_in = request.scheme
        # Fail closed, before anything that could raise: Bastion over https, no app creds.
        destination = bastion_destination(self.rules.upstream, kind, request.path)
        app_authorization = headers.get("authorization")
        if kind is HostKind.OPENAI:
            exchange.app_credentials = {
                name: headers[name] for name in APP_CREDENTIAL_HEADERS if name in headers}
        else:
            exchange.decision = "passthrough"
        point_at(request, "https", destination.host, destination.port, destination.host_header,
                 drop=exchange.app_credentials)
        request.path = destination.path
        exchange.upstream_host = destination.host_header
        if scheme_in == "http":
            exchange.add_rewrite(REWRITE_HTTPS)
        try:
            if kind is HostKind.OPENAI:
                self._openai_headers(flow, exchange, headers, app_authorization)
        except ApiError as e:
            exchange.error = e
        except Exception as e:  # never crash, never fall through to OpenAI
            log.exception("bastion-edge: requestheaders failed")
            exchange.error = ApiError(500, f"bastion-edge internal error: {e}", "proxy_error",
                                      SERVER_ERROR)

    def _openai_headers(
        self, flow: http.HTTPFlow, exchange: Exchange, headers: dict[str, str],
        app_authorization: str | None,
    ) -> None:
        request = flow.request
        exchange.add_rewrite(REWRITE_HOST)
        facts = RequestFacts(
            endpoint=exchange.endpoint,
            headers=headers,
            app_key_sha256=key_sha256(app_authorization),
            client_ip=exchange.client,
        )
        exchange.facts = facts
        if self._cutover_to_openai(flow, exchange, facts):
            return
        choice = select_key(self.rules, facts, self.environ)
        exchange.key_env = choice.env
        if exchange.endpoint == SPEECH and request.method == "POST":
            self._route_to_tts(flow, exchange, choice.key)
            return
        set_headers(request.headers, {"authorization": f"Bearer {choice.key}"})
        exchange.add_rewrite(REWRITE_KEY)
        self._maybe_stream_upload(flow, exchange, facts)

    def _cutover_to_openai(
        self, flow: http.HTTPFlow, exchange: Exchange, facts: RequestFacts
    ) -> bool:
        """Apply the cutover mode; True when the flow goes to OpenAI as the app sent it."""
        cutover = self.rules.cutover
        exchange.decision = cutover.mode
        if cutover.mode == "rewrite":
            return False
        if cutover.mode == "split" and cutover.sticky_by == "conversation":
            return False  # decided in `request`, once the body is there
        sticky = facts.app_key_sha256 or exchange.client or ""
        if destination_for(cutover, sticky) != OPENAI:
            return False
        self._send_to_openai(flow, exchange)
        return True

    def _send_to_openai(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """Forward unchanged (but over https) to OpenAI with the app's own credentials."""
        base = urlsplit(self.rules.cutover.openai_base_url)
        request = flow.request
        query = request.path.partition("?")[2]
        point_at(request, "https", base.hostname or "api.openai.com", base.port or 443,
                 base.netloc, put=exchange.app_credentials, drop=["authorization"])
        request.path = exchange.path + (f"?{query}" if query else "")
        exchange.destination = OPENAI
        exchange.upstream_host = base.netloc
        exchange.rewrites = [r for r in exchange.rewrites if r == REWRITE_HTTPS]

    def _route_to_tts(self, flow: http.HTTPFlow, exchange: Exchange, key: str) -> None:
        """`/v1/audio/speech` goes to the in-process Riva adapter; the key stays in-process."""
        upstream = self.rules.upstream
        assert self.tts.port is not None, "TTS adapter not started"
        token = self.tts.register(SpeechJob(
            riva_url=f"https://{upstream.host}:{upstream.port}{self.rules.tts.path}",
            bastion_key=key, tts=self.rules.tts, http_client=self.upstream_client(),
            timeout_seconds=upstream.response_timeout_seconds))
        request = flow.request
        point_at(request, "http", "127.0.0.1", self.tts.port, f"127.0.0.1:{self.tts.port}",
                 put={TOKEN_HEADER: token})
        request.path = "/v1/audio/speech"
        exchange.add_rewrite(REWRITE_TTS)

    def _maybe_stream_upload(
        self, flow: http.HTTPFlow, exchange: Exchange, facts: RequestFacts
    ) -> None:
        """Large multipart uploads are streamed with the `model` part replaced on the fly."""
        request = flow.request
        boundary = boundary_from_content_type(facts.headers.get("content-type", ""))
        if boundary is None or request.http_version not in ("HTTP/1.1", "HTTP/1.0"):
            return
        length = facts.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= STREAM_UPLOADS_OVER:
            return
        rewriter = FormFieldRewriter(
            boundary, b"model",
            lambda old: self._replace_form_model(exchange, facts, old, streaming=True))
        request.stream = rewriter.feed
        # The replaced value may change the length: re-frame the body as chunked.
        set_headers(request.headers, {"transfer-encoding": "chunked"}, drop=["content-length"])
        exchange.streamed_request = True
        exchange.bytes_in = int(length) if length and length.isdigit() else 0

    def _replace_form_model(
        self, exchange: Exchange, facts: RequestFacts, old: bytes, *, streaming: bool
    ) -> bytes:
        requested = old.decode("utf-8", "replace")
        exchange.original_model = requested
        try:
            resolution = decide_model(requested, facts, self.rules, self.models)
        except ApiError as e:
            if not streaming:
                raise
            # Too late for a 400 (the upload is already streaming): let upstream reject it.
            exchange.notes.append(f"streamed upload kept unmapped model: {e.code}")
            exchange.upstream_model = requested
            return old
        if resolution is None or not resolution.changed:
            exchange.upstream_model = requested
            return old
        exchange.resolution = resolution
        exchange.upstream_model = resolution.upstream
        exchange.add_rewrite(REWRITE_MODEL)
        return resolution.upstream.encode()

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.response:
            return
        if exchange.error is None and exchange.kind is HostKind.OPENAI:
            try:
                self._split_by_conversation(flow, exchange)
                if exchange.destination == OPENAI:
                    self._observe_body(flow, exchange)
                else:
                    self._rewrite_body(flow, exchange)
            except ApiError as e:
                exchange.error = e
                exchange.original_model = exchange.original_model or requested_model(flow)
            except Exception as e:
                log.exception("bastion-edge: request rewrite failed")
                exchange.error = ApiError(500, f"bastion-edge internal error: {e}",
                                          "proxy_error", SERVER_ERROR)
        if exchange.error is not None:
            self.metrics.proxy_errors.labels(exchange.error.code).inc()
            flow.response = http.Response.make(
                exchange.error.status, exchange.error.body(),
                {"content-type": "application/json", "x-bastion-edge-error": exchange.error.code})
            return
        self.timeouts.start(flow, exchange, self.rules.upstream.response_timeout_seconds)

    def _rewrite_body(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        request = flow.request
        if exchange.streamed_request or REWRITE_TTS in exchange.rewrites:
            return
        raw = request.raw_content or b""
        exchange.bytes_in = len(raw)
        facts = exchange.facts or RequestFacts(endpoint=exchange.endpoint)
        if exchange.endpoint == MODELS and request.method == "GET":
            self._rewrite_model_path(flow, exchange, facts)
            return
        content_type = facts.headers.get("content-type", "")
        body = raw if "content-encoding" not in facts.headers else request.get_content() or b""
        boundary = boundary_from_content_type(content_type)
        if boundary is not None and raw:
            new_raw, _ = replace_form_field(
                body, boundary, b"model",
                lambda old: self._replace_form_model(exchange, facts, old, streaming=False))
            replace_body(request, new_raw, facts.headers)
            return
        if _json_create(request, exchange):
            rewrite = rewrite_json_body(
                body, facts, self.rules, self.models, is_create=exchange.endpoint == RESPONSES)
            exchange.stream = rewrite.stream
            exchange.app_store = rewrite.app_store
            if rewrite.resolution is not None:
                self._record_resolution(exchange, rewrite.resolution.requested,
                                        rewrite.resolution.upstream)
                exchange.resolution = rewrite.resolution
            for kind in rewrite.rewrites:
                exchange.add_rewrite(kind)
            exchange.notes.extend(rewrite.notes)
            if rewrite.body is not None:
                replace_body(request, rewrite.body, facts.headers)

    def _rewrite_model_path(
        self, flow: http.HTTPFlow, exchange: Exchange, facts: RequestFacts
    ) -> None:
        """`GET /v1/models/{id}`: map the id, then place the path under the base URL."""
        original, resolution = rewrite_model_path(exchange.path, facts, self.rules, self.models)
        if resolution is None:
            return
        exchange.resolution = resolution
        self._record_resolution(exchange, resolution.requested, resolution.upstream)
        query = flow.request.path.partition("?")[2]
        mapped = map_openai_path(self.rules.upstream.path_prefix, original)
        flow.request.path = f"{mapped}?{query}" if query else mapped

    def _split_by_conversation(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        cutover = self.rules.cutover
        if (cutover.mode != "split" or cutover.sticky_by != "conversation"
                or exchange.streamed_request or exchange.destination == OPENAI):
            return
        key = None
        # Responses chains (previous_response_id) must stay where their first turn went,
        # which only the app key guarantees; chat resends history, so it can split finer.
        if exchange.endpoint != RESPONSES:
            with contextlib.suppress(ApiError):
                key = conversation_key(parse_json_object(flow.request.get_content() or b""))
        facts = exchange.facts
        sticky = key or (facts.app_key_sha256 if facts else None) or exchange.client or ""
        if destination_for(cutover, sticky) == OPENAI:
            self._send_to_openai(flow, exchange)

    def _observe_body(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """What rewriting would have done, recorded but not applied."""
        rewrite = self._would_rewrite(flow, exchange)
        if isinstance(rewrite, ApiError):
            exchange.notes.append(f"would refuse: {rewrite.code}")
            exchange.original_model = requested_model(flow)
        elif rewrite is not None:
            if rewrite.resolution is not None:
                exchange.original_model = rewrite.resolution.requested
                exchange.upstream_model = rewrite.resolution.upstream
            exchange.stream = rewrite.stream
            would = ["host", "key", *rewrite.rewrites]
            exchange.notes.append("would rewrite: " + ",".join(would))

    def _would_rewrite(
        self, flow: http.HTTPFlow, exchange: Exchange
    ) -> BodyRewrite | ApiError | None:
        request = flow.request
        if not _json_create(request, exchange):
            return None
        try:
            return rewrite_json_body(
                request.get_content() or b"", exchange.facts or RequestFacts(exchange.endpoint),
                self.rules, self.models, is_create=exchange.endpoint == RESPONSES)
        except ApiError as e:
            return e

    @staticmethod
    def _record_resolution(exchange: Exchange, requested: str, upstream: str) -> None:
        exchange.original_model = requested
        exchange.upstream_model = upstream
        if requested != upstream:
            exchange.add_rewrite(REWRITE_MODEL)

    # ------------------------------------------------------------------ timeouts

    # ------------------------------------------------------------------ response side

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.response is None:
            return
        self.timeouts.stop(flow)
        exchange.response_headers_at = time.time()
        response = flow.response
        headers = lower_headers(response)
        if REWRITE_TTS in exchange.rewrites:
            self._note_tts(exchange, headers)
        ours = {}
        if exchange.upstream_model:
            ours[UPSTREAM_MODEL_HEADER] = exchange.upstream_model
        if exchange.rewrites:
            ours[REWRITES_HEADER] = ",".join(exchange.rewrites)
        if ours:
            set_headers(response.headers, ours)
        if self.keeps_flows and "authorization" in flow.request.headers:
            flow.request.headers["authorization"] = REDACTED  # sent already; keep it off screens
        content_type = headers.get("content-type", "")
        restore = self._restores_model(exchange)
        if content_type.startswith("text/event-stream"):
            exchange.stream = True
            original = exchange.original_model or ""
            response.stream = SseRewriter(lambda obj: restore_model(obj, original)) \
                if restore else ByteCounter(exchange)
        elif worth_streaming(headers):
            response.stream = ByteCounter(exchange)

    @staticmethod
    def _note_tts(exchange: Exchange, headers: dict[str, str]) -> None:
        """What the TTS adapter did (its Riva voice, notes such as ignored instructions)."""
        details = dict(part.split("=", 1) for part in
                       headers.get(TTS_HEADER, "").split(";") if "=" in part)
        exchange.upstream_model = details.get("riva_voice")
        exchange.notes += [n for n in headers.get(NOTE_HEADER, "").split(",") if n]

    def _restores_model(self, exchange: Exchange) -> bool:
        return (self.rules.reply_model == "original" and exchange.resolution is not None
                and exchange.resolution.changed)

    def response(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.response is None:
            return
        self.timeouts.stop(flow)
        response = flow.response
        if not response.stream and response.raw_content is not None:
            if self._restores_model(exchange) and exchange.original_model:
                restore_json_model(response, exchange.original_model)
            exchange.bytes_out = len(response.raw_content or b"")
        record = self._finish(flow, exchange, response.status_code,
                              write_log=exchange.decision != "mirror")
        if exchange.decision == "mirror":
            self._mirror(flow, exchange, record)

    def error(self, flow: http.HTTPFlow) -> None:
        exchange = exchange_of(flow)
        if exchange is None or flow.error is None:
            return
        self.timeouts.stop(flow)
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
        names = [self.rules.key_env, *(r.env for r in self.rules.key_rules)]
        return [self.environ.get(name, "") for name in names]

    def _mirror(self, flow: http.HTTPFlow, exchange: Exchange, record: AccessRecord) -> None:
        """Send Bastion a rewritten copy of what OpenAI just answered; log when compared."""
        copy = self._mirror_copy(flow, exchange)
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

    def _mirror_copy(self, flow: http.HTTPFlow, exchange: Exchange) -> MirrorRequest | str:
        """The request Bastion gets, or why there is none."""
        assert flow.response is not None
        if exchange.stream and not self.rules.cutover.mirror_streaming:
            return "streaming"
        rewrite = self._would_rewrite(flow, exchange)
        if rewrite is None:
            return "not mirrored endpoint"
        if isinstance(rewrite, ApiError):
            return f"would refuse: {rewrite.code}"
        try:
            key = select_key(self.rules, exchange.facts or RequestFacts(exchange.endpoint),
                             self.environ)
        except ApiError as e:
            return e.code
        primary = None
        if not flow.response.stream:
            try:
                primary = json.loads(flow.response.get_content() or b"")
            except ValueError:
                primary = None
        destination = bastion_destination(self.rules.upstream, HostKind.OPENAI, exchange.path)
        return MirrorRequest(
            method=flow.request.method, url=destination.url,
            headers={"content-type": "application/json", "authorization": f"Bearer {key.key}"},
            body=rewrite.body or flow.request.get_content() or b"", stream=rewrite.stream,
            primary_status=flow.response.status_code, primary_json=primary)

    def _finish(self, flow: http.HTTPFlow, exchange: Exchange, status: int | None,
                write_log: bool = True) -> AccessRecord:
        self.in_flight.discard(flow.id)
        finished = time.time()
        self.metrics.exchange_finished(
            endpoint=exchange.endpoint, original_model=exchange.original_model,
            upstream_model=exchange.upstream_model, destination=exchange.destination,
            status=status, stream=exchange.stream, duration=finished - exchange.started,
            ttfb=(exchange.response_headers_at - exchange.started
                  if exchange.response_headers_at is not None else None),
            rewrites=exchange.rewrites)
        record = exchange.record(status, finished)
        if ctx.options.bastion_access_log_bodies:
            secrets = [*exchange.app_credentials.values(), *self._key_values()]
            record.request_body = loggable_body(flow.request.raw_content, secrets)
            if flow.response is not None and not flow.response.stream:
                record.response_body = loggable_body(flow.response.raw_content, secrets)
        if self.access_log is not None and write_log:
            self.access_log.write(record)
        if self.keeps_flows:
            annotate(flow, exchange)
        return record


def _json_create(request: http.Request, exchange: Exchange) -> bool:
    """A JSON create on an endpoint whose body is rewritten (not a sub-resource, not a form)."""
    headers = exchange.facts.headers if exchange.facts else lower_headers(request)
    return (exchange.endpoint in JSON_ENDPOINTS and request.method == "POST"
            and is_collection_path(exchange.path)
            and "multipart" not in headers.get("content-type", ""))

"""The reply side of the proxy, a child addon of `BastionEdge`:

  responseheaders  reply streaming, model restoring, Responses capture, our headers
  response/error   fallback retries, gateway-error envelopes, then the recorder
                   (metrics, the access log) and the mirror copy
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from mitmproxy import http

from bastion_edge.core.plan import Decision, Destination, Plan
from bastion_edge.core.reply_model import model_bytes_restorer, restore_model
from bastion_edge.core.usage import model_in_json
from bastion_edge.core.usage_stream import JsonUsageTail, UsageTap
from bastion_edge.proxy import gateway_errors
from bastion_edge.proxy.exchange import Exchange
from bastion_edge.proxy.fallback import fall_back, holds, wants_retry
from bastion_edge.proxy.flow_edit import (
    ByteCounter,
    ReplyJson,
    buffered_usage,
    exchange_of,
    lower_headers,
    set_headers,
    worth_streaming,
)
from bastion_edge.proxy.http_guard import limit_error_of, never_empty
from bastion_edge.proxy.mirror import MirrorAddon
from bastion_edge.proxy.model_catalog import ModelCatalog
from bastion_edge.proxy.quotas import put_rate_limit_headers
from bastion_edge.proxy.recorder import Recorder
from bastion_edge.proxy.request_path import refuse
from bastion_edge.proxy.responses_keeper import ResponsesKeeper
from bastion_edge.proxy.shared import REDACTED, Shared
from bastion_edge.proxy.timeouts import ResponseTimeouts
from bastion_edge.streams.sse import SseRewriter
from bastion_edge.tts.reply import NOTE_HEADER, TTS_HEADER

log = logging.getLogger("bastion_edge")

UPSTREAM_MODEL_HEADER = "x-bastion-edge-upstream-model"
REWRITES_HEADER = "x-bastion-edge-rewrites"
WORKER_HEADER = "x-bastion-edge-worker"  # which `--workers` process answered


class ReplyPath:
    name = "bastion_reply_path"

    def __init__(self, shared: Shared, *, recorder: Recorder, responses: ResponsesKeeper,
                 timeouts: ResponseTimeouts, catalog: ModelCatalog, mirror: MirrorAddon,
                 client: Callable[[], httpx.AsyncClient], worker_id: str) -> None:
        self.shared = shared
        self.recorder = recorder
        self.responses = responses
        self.timeouts = timeouts
        self.catalog = catalog
        self.mirror = mirror
        self.client = client
        self.worker_id = worker_id

    def done(self) -> None:
        self.timeouts.cancel_all()

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
        if exchange.quota is not None:
            put_rate_limit_headers(response.headers, exchange.quota)
        if self.recorder.keeps_flows and "authorization" in flow.request.headers:
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
        exchange.speech_model = details.get("model")  # the app's model: its record's
        characters = details.get("characters", "")
        exchange.tts_characters = int(characters) if characters.isdigit() else None
        exchange.reply_notes += [n for n in headers.get(NOTE_HEADER, "").split(",") if n]

    def _restores_model(self, plan: Plan) -> bool:
        return (self.shared.rules.reply_model == "original" and plan.resolution is not None
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
        outcome = await fall_back(flow, exchange.plan, self.client(),
                                  self.catalog.mark_unavailable,
                                  ((flow.response.timestamp_end or time.time()) - since) * 1000)
        exchange.plan = plan = outcome.plan
        exchange.attempts = [a.to_json() for a in outcome.attempts]
        if outcome.response is not None:
            flow.response = outcome.response
            set_headers(flow.response.headers, {UPSTREAM_MODEL_HEADER: exchange.upstream_model
                                                or "", REWRITES_HEADER: ",".join(plan.rewrites)})
            if exchange.quota is not None:  # one admission for all the tries
                put_rate_limit_headers(flow.response.headers, exchange.quota)
            if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
                exchange.streamed_reply = True
                self._buffered_stream(flow, plan)
            elif plan.capture is not None:
                self.responses.observe(flow, plan.capture)
        if first and len(outcome.attempts) > 1:
            self.shared.metrics.model_fallback(first, plan.upstream_model, "not_found")
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
            if (self.recorder.otel is not None and exchange.reply_json
                    and not exchange.reply_encoded):
                exchange.response_model = model_in_json(response.raw_content or b"")
            if self._restores_model(plan) and plan.original_model:
                reply.restore_model(plan.original_model)
            exchange.bytes_out = len(response.raw_content or b"")
            if exchange.reply_json:
                exchange.usage = buffered_usage(response, reply, exchange.reply_encoded)
        mirrored = plan.decision is Decision.MIRROR and plan.refusal is None
        record = self.recorder.finish(flow, exchange, response.status_code, write_log=not mirrored)
        if mirrored:
            self.mirror.mirror(flow, plan, record, reply.value)
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
            refuse(exchange, hit)
            self.shared.metrics.limit_rejected(hit.limit)
            self.shared.metrics.proxy_errors.labels(hit.code).inc()
            self.recorder.finish(flow, exchange, hit.status)
            return
        envelope = gateway_errors.classify(
            flow.error.msg, where=exchange.upstream_host or "upstream",
            timed_out=exchange.timed_out,
            timeout_seconds=self.shared.rules.upstream.response_timeout_seconds,
            connection_opened=flow.server_conn.timestamp_tcp_setup is not None,
            killed=flow.error.msg == flow.error.KILLED_MESSAGE)
        if envelope is not None:
            exchange.upstream_error = envelope.code
            self.shared.metrics.upstream_errors.labels(envelope.code).inc()
            if flow.response is None:
                gateway_errors.register(flow.error.msg, envelope)
        self.recorder.finish(flow, exchange, envelope.status if envelope else None)

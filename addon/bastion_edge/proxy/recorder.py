"""The end of an exchange: metrics, OTel spans, the access-log record, flow annotations.

A child addon of `BastionEdge`: it owns the OTel exporter's lifecycle and the set of
requests still in flight (which `BastionEdge.drain` waits for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mitmproxy import ctx, http

from bastion_edge.config.key_files import KeyFiles
from bastion_edge.core.keys import all_key_sources, read_source
from bastion_edge.proxy.exchange import Exchange
from bastion_edge.proxy.flow_edit import annotate, with_comment_column
from bastion_edge.proxy.shared import REDACTED, Shared, keeps_flows
from bastion_edge.telemetry.access_log import AccessRecord, loggable_body
from bastion_edge.telemetry.otel import OtelExport


class Recorder:
    name = "bastion_recorder"

    def __init__(self, shared: Shared, key_files: KeyFiles,
                 write_log: Callable[[AccessRecord], None],
                 settle: Callable[[Exchange, int | None], None] = lambda e, s: None,
                 observe: Callable[[AccessRecord], None] = lambda record: None) -> None:
        self.shared = shared
        self.settle = settle  # the app's quota is corrected by what the exchange spent
        self.key_files = key_files
        self.write_log = write_log
        self.observe = observe  # the canary's evidence: every finished exchange
        self.in_flight: set[str] = set()  # ids of our flows not finished yet
        self.keeps_flows = False  # mitmweb or a flow file: redact keys on flow objects
        self.otel: OtelExport | None = None  # OTLP spans and gen_ai metrics, when configured

    def running(self) -> None:
        self.keeps_flows = keeps_flows(ctx.options)
        columns = getattr(ctx.options, "web_columns", None)  # mitmweb only
        if columns is not None and not ctx.options.has_changed("web_columns"):  # user's own wins
            shown = with_comment_column(columns)
            if shown is not None:  # the annotation (what was rewritten or refused) in the list
                ctx.options.update(web_columns=shown)
        self.otel = OtelExport.from_environment(self.shared.environ,
                                                self.shared.metrics.model_label)

    async def done(self) -> None:
        if self.otel is not None:
            await asyncio.to_thread(self.otel.shutdown)

    def started(self, flow: http.HTTPFlow) -> None:
        self.in_flight.add(flow.id)

    def batch_line(self, record: AccessRecord) -> None:
        """A batch line the runner finished: metered and logged like a request."""
        self.shared.metrics.exchange_finished(
            endpoint=record.endpoint, app=record.app, original_model=record.original_model,
            upstream_model=record.upstream_model, destination=record.destination,
            status=record.status, stream=False, duration=(record.duration_ms or 0) / 1000,
            ttfb=None, rewrites=record.rewrites)
        self.write_log(record)

    def finish(self, flow: http.HTTPFlow, exchange: Exchange, status: int | None,
               write_log: bool = True) -> AccessRecord:
        self.in_flight.discard(flow.id)
        metrics = self.shared.metrics
        finished = time.time()
        plan = exchange.plan
        passed_over = plan.fallback_reason
        if passed_over is not None and plan.refusal is None:
            metrics.model_fallback(passed_over[0], plan.upstream_model, passed_over[1])
        metrics.exchange_finished(
            endpoint=exchange.endpoint, app=plan.facts.app,
            original_model=exchange.original_model,
            upstream_model=exchange.upstream_model, destination=exchange.destination,
            status=status, stream=exchange.stream, duration=finished - exchange.started,
            ttfb=(exchange.response_headers_at - exchange.started
                  if exchange.response_headers_at is not None else None),
            rewrites=exchange.rewrites)
        metrics.token_metrics.exchange(
            endpoint=exchange.endpoint, app=plan.facts.app,
            original_model=exchange.original_model, upstream_model=exchange.upstream_model,
            destination=exchange.destination, usage=exchange.usage,
            tts_characters=exchange.tts_characters)
        self.settle(exchange, status)
        record = exchange.record(status, finished)
        self.observe(record)
        if self.otel is not None:
            self.otel.exchange(exchange.genai(status, finished))
        if ctx.options.bastion_access_log_bodies:
            secrets = [*plan.app_credentials.values(), *self._key_values()]
            record.request_body = loggable_body(flow.request.raw_content, secrets)
            if flow.response is not None and not flow.response.stream:
                record.response_body = loggable_body(flow.response.raw_content, secrets)
        if write_log:
            self.write_log(record)
        if self.keeps_flows:
            if "authorization" in flow.request.headers and exchange.destination != "openai":
                flow.request.headers["authorization"] = REDACTED  # every path: errors too
            annotate(flow, exchange)
        return record

    def _key_values(self) -> list[str]:
        rules = self.shared.rules
        return [read_source(source, self.shared.environ, self.key_files)
                for source in all_key_sources(rules)]

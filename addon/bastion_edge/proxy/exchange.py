"""One proxied exchange, kept in `flow.metadata`: its plan and its metering.

The plan is immutable and says what was decided and why; it is replaced whole when
a later step (the body, a streamed form field) completes it. Metering (times, bytes,
what the reply said) is the only state the hooks change as the exchange goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bastion_edge.core.plan import BatchAction, BodyStep, Plan, Route
from bastion_edge.core.quota import Verdict
from bastion_edge.core.routing import HostKind
from bastion_edge.core.usage import SOURCE_NOT_REPORTED, SOURCE_UPSTREAM, Usage
from bastion_edge.telemetry.access_log import AccessRecord
from bastion_edge.telemetry.otel import GenAiExchange

METADATA_KEY = "bastion_edge"


@dataclass(slots=True)
class Exchange:
    request_id: str
    plan: Plan
    original_host: str
    client: str | None
    started: float = field(default_factory=time.time)
    applied_route: Route | None = None  # what the flow points at now
    response_headers_at: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    streamed_reply: bool = False  # the reply came as server-sent events
    upstream_error: str | None = None
    timed_out: bool = False
    tts_voice: str | None = None  # the Riva voice the TTS adapter used
    speech_model: str | None = None  # audio.speech: the model the app asked for (its body
    # is read by the TTS adapter, not the planner; `model=` of its x-bastion-edge-tts header)
    reply_notes: list[str] = field(default_factory=list)
    attempts: list[dict[str, object]] = field(default_factory=list)  # 404 retries: each try
    usage: Usage | None = None  # what the upstream reported (never an estimate)
    tts_characters: int | None = None  # speech input characters (the TTS adapter's count)
    response_model: str | None = None  # the model the reply named (OpenTelemetry spans)
    reply_encoded: bool = False  # the reply has a content-encoding (gzip, ...)
    reply_json: bool = False  # a JSON reply whose usage is read (not the speech adapter's)
    quota: Verdict | None = None  # the app's quota admission (proxy/quotas.py), if it has one

    # What the access log, metrics and tests read: derived from the plan.

    @property
    def rewrites(self) -> list[str]:
        return list(self.plan.rewrites)

    @property
    def notes(self) -> list[str]:
        return [*self.plan.notes, *self.reply_notes]

    @property
    def kind(self) -> HostKind:
        return self.plan.kind

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint

    @property
    def key_env(self) -> str | None:
        return self.plan.key.env if self.plan.key is not None else None

    @property
    def original_model(self) -> str | None:
        return self.plan.original_model or self.speech_model

    @property
    def served_model(self) -> str | None:
        """The model that served: on OpenAI, the one its reply named (else the app's);
        elsewhere the upstream model (the plan's, or the Riva voice)."""
        if self.destination == "openai":
            return self.response_model or self.original_model
        return self.upstream_model

    @property
    def would_model(self) -> str | None:
        """On OpenAI: the Bastion model the rules would have used (observe, split, mirror)."""
        if self.destination == "openai" and self.plan.upstream_model != self.served_model:
            return self.plan.upstream_model
        return None

    @property
    def upstream_model(self) -> str | None:
        return self.tts_voice or self.plan.upstream_model

    @property
    def destination(self) -> str:
        return self.plan.destination.provider

    @property
    def decision(self) -> str:
        return self.plan.decision_label

    @property
    def stream(self) -> bool:
        return self.plan.stream or self.streamed_reply

    @property
    def streamed_request(self) -> bool:
        return (self.plan.body_step is BodyStep.STREAMED_FORM
                or self.plan.batch_action is BatchAction.FILE_CREATE) \
            and self.plan.refusal is None

    @property
    def upstream_host(self) -> str | None:
        return self.plan.upstream_host

    def record(self, status: int | None, finished: float) -> AccessRecord:
        plan = self.plan
        ttfb = self.response_headers_at
        return AccessRecord(
            time=datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds"),
            request_id=self.request_id,
            client=self.client,
            app=plan.facts.app,
            method=plan.method,
            path=plan.path,
            endpoint=plan.endpoint,
            original_host=self.original_host,
            upstream_host=self.upstream_host,
            original_model=self.original_model,
            upstream_model=self.served_model,
            would_model=self.would_model,
            destination=self.destination,
            decision=self.decision,
            status=status,
            duration_ms=round((finished - self.started) * 1000, 3),
            ttfb_ms=round((ttfb - self.started) * 1000, 3) if ttfb else None,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            stream=self.stream,
            rewrites=self.rewrites,
            key_env=self.key_env,
            error=plan.refusal.code if plan.refusal is not None else self.upstream_error,
            notes=self.notes,
            attempts=self.attempts or None,
            tokens=self.usage.counts() if self.usage is not None else None,
            tokens_source=SOURCE_UPSTREAM if self.usage is not None else SOURCE_NOT_REPORTED,
            tts_characters=self.tts_characters,
        )

    def genai(self, status: int | None, finished: float) -> GenAiExchange:
        """The exchange as OpenTelemetry spans and metrics read it."""
        plan = self.plan
        host = self.upstream_host
        return GenAiExchange(
            endpoint=plan.endpoint, started=self.started, finished=finished,
            headers=plan.facts.headers, destination=self.destination,
            server_address=host.rsplit(":", 1)[0] if host and not host.endswith("]")
            else host, original_model=self.original_model,
            request_model=self.upstream_model, response_model=self.response_model,
            usage=self.usage, status=status, rewrites=self.rewrites, app=plan.facts.app,
            decision=self.decision,
            error=plan.refusal.code if plan.refusal is not None else self.upstream_error,
            tts_characters=self.tts_characters)

    def usage_reported(self, usage: Usage, model: str | None = None) -> None:
        """A stream's usage (the last one reported wins) and the model it names."""
        self.usage = usage
        self.response_model = model or self.response_model

"""Per-flow state of one proxied exchange, kept in `flow.metadata`.

Plain data: the hooks fill it in as the exchange progresses; the access log and
the metrics are derived from it at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bastion_edge.core.facts import RequestFacts
from bastion_edge.core.model_map import Resolution
from bastion_edge.core.routing import HostKind
from bastion_edge.errors import ApiError
from bastion_edge.telemetry.access_log import AccessRecord

METADATA_KEY = "bastion_edge"


@dataclass(slots=True)
class Exchange:
    request_id: str
    kind: HostKind
    endpoint: str
    method: str
    path: str
    original_host: str
    client: str | None
    started: float = field(default_factory=time.time)
    upstream_host: str | None = None
    destination: str = "bastion"
    rewrites: list[str] = field(default_factory=list)
    key_env: str | None = None
    resolution: Resolution | None = None
    original_model: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    streamed_request: bool = False
    error: ApiError | None = None  # answered by the proxy instead of going upstream
    upstream_error: str | None = None
    timed_out: bool = False
    response_headers_at: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    notes: list[str] = field(default_factory=list)
    facts: RequestFacts | None = None  # header-level facts, taken before credentials go
    app_store: bool | None = None  # the Responses `store` flag as the app sent it (None: absent)
    decision: str = "rewrite"  # rewrite | passthrough | observe | mirror | split | refused
    # The app's own OpenAI credentials, kept only to forward them to OpenAI itself
    # (observe / mirror / split); never logged, never sent anywhere else.
    app_credentials: dict[str, str] = field(default_factory=dict, repr=False)

    def add_rewrite(self, kind: str) -> None:
        if kind not in self.rewrites:
            self.rewrites.append(kind)

    def record(self, status: int | None, finished: float) -> AccessRecord:
        ttfb = self.response_headers_at
        return AccessRecord(
            time=datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds"),
            request_id=self.request_id,
            client=self.client,
            method=self.method,
            path=self.path,
            endpoint=self.endpoint,
            original_host=self.original_host,
            upstream_host=self.upstream_host,
            original_model=self.original_model,
            upstream_model=self.upstream_model,
            destination="proxy" if self.error else self.destination,
            decision="refused" if self.error else self.decision,
            status=status,
            duration_ms=round((finished - self.started) * 1000, 3),
            ttfb_ms=round((ttfb - self.started) * 1000, 3) if ttfb else None,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            stream=self.stream,
            rewrites=list(self.rewrites),
            key_env=self.key_env,
            error=self.error.code if self.error else self.upstream_error,
            notes=list(self.notes),
        )

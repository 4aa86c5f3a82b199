"""Mirror mode: OpenAI serves the app; a rewritten copy goes to Bastion and is compared.

The copy is sent from a background task after the app already has OpenAI's answer,
with at most `max_in_flight` copies at once: when the limit is reached the copy is
skipped (and counted), so mirroring can never slow or break the real traffic. The
copy's body never reaches the app.

Agreement: for a sampled share of chat and Responses pairs (`AgreementProbe.wanted`,
decided before sending), the copy's reply body is kept (up to `MAX_KEPT_BODY`) and,
still in the background task, the two answers are compared (bge-m3 similarity through
the proxy's own upstream client and Bastion key, tools, json_schema): `agreement` in the
record's mirror object. A streamed OpenAI reply is not kept, so it is not compared.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from mitmproxy import http

from bastion_edge.core.mirror_compare import shape_differences
from bastion_edge.core.plan import Plan
from bastion_edge.proxy.agreement_probe import AgreementProbe
from bastion_edge.proxy.shared import Shared
from bastion_edge.telemetry.access_log import AccessRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MirrorRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    primary_status: int
    primary_json: Any  # OpenAI's parsed reply (None when streamed or not JSON)
    keep_body: bool = False  # agreement wanted: keep the copy's reply body


@dataclass(slots=True)
class MirrorResult:
    status: int | None
    duration_ms: float
    ttfb_ms: float | None
    shape_match: bool
    differences: list[str] = field(default_factory=list)
    error: str | None = None
    agreement: dict[str, object] | None = None  # the answers compared (sampled pairs)
    reply_body: bytes | None = field(default=None, repr=False)  # kept for agreement only

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["reply_body"]
        if self.agreement is None:
            del out["agreement"]
        return out


MAX_KEPT_BODY = 1024 * 1024  # a copy's reply kept for agreement, at most

STREAM_END_MARKERS = (b"data: [DONE]", b"response.completed")


async def send_copy(client: httpx.AsyncClient, copy: MirrorRequest) -> MirrorResult:
    """Send the copy and judge it against the primary reply."""
    started = time.perf_counter()
    ttfb = None
    try:
        async with client.stream(copy.method, copy.url, headers=copy.headers,
                                 content=copy.body) as reply:
            ttfb = (time.perf_counter() - started) * 1000
            body = await reply.aread()
    except httpx.HTTPError as e:
        return MirrorResult(None, (time.perf_counter() - started) * 1000, ttfb, False,
                            error=type(e).__name__)
    duration = (time.perf_counter() - started) * 1000
    differences: list[str] = []
    if reply.status_code != copy.primary_status:
        differences.append(f"status {copy.primary_status} vs {reply.status_code}")
    if copy.stream:
        if reply.status_code < 400 and not any(m in body for m in STREAM_END_MARKERS):
            differences.append("stream did not complete")
    elif copy.primary_json is not None:
        try:
            differences += shape_differences(copy.primary_json, json.loads(body))
        except ValueError:
            differences.append("reply is not JSON")
    kept = body if copy.keep_body and len(body) <= MAX_KEPT_BODY else None
    return MirrorResult(reply.status_code, duration, ttfb, not differences, differences,
                        reply_body=kept)


class Mirror:
    """Runs copies in the background, never more than `max_in_flight` at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def try_send(
        self,
        client: httpx.AsyncClient,
        copy: MirrorRequest,
        max_in_flight: int,
        on_done: Callable[[MirrorResult], None],
        judge: Callable[[MirrorResult], Awaitable[None]] | None = None,
    ) -> bool:
        """Start the copy if there is room; False when it was skipped. `judge` runs on
        the result in the same background task, before `on_done`."""
        if self.in_flight >= max_in_flight:
            return False
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._run(self._judged(client, copy, judge), on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    @staticmethod
    async def _judged(client: httpx.AsyncClient, copy: MirrorRequest,
                      judge: Callable[[MirrorResult], Awaitable[None]] | None) -> MirrorResult:
        result = await send_copy(client, copy)
        if judge is not None:
            try:
                await judge(result)
            except Exception:  # agreement is extra: the mirror record is still written
                log.exception("mirror agreement failed")
        return result

    async def _run(
        self, sending: Awaitable[MirrorResult], on_done: Callable[[MirrorResult], None]
    ) -> None:
        try:
            result = await sending
        except Exception as e:  # a mirror must never take anything down
            log.exception("mirror copy failed")
            result = MirrorResult(None, 0.0, None, False, error=type(e).__name__)
        finally:
            self.in_flight -= 1
        on_done(result)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class MirrorAddon:
    """The mirror as a child addon of `BastionEdge`: sends the copy, logs the record
    once compared, and on `done` waits for the copies still in flight (listed before
    the access log, so their records are written before it closes)."""

    name = "bastion_mirror"

    def __init__(self, shared: Shared, client: Callable[[], httpx.AsyncClient],
                 write_log: Callable[[AccessRecord], None]) -> None:
        self.shared = shared
        self.client = client
        self.write_log = write_log
        self.copies = Mirror()
        self._probe: AgreementProbe | None = None
        self._probe_settings: tuple[float, float] | None = None

    def probe(self) -> AgreementProbe:
        """One per process, rebuilt when a reload changes its share or rate."""
        cutover = self.shared.rules.cutover
        settings = (cutover.mirror_agreement_share, cutover.mirror_agreement_per_second)
        if self._probe is None or settings != self._probe_settings:
            self._probe, self._probe_settings = AgreementProbe(*settings), settings
        return self._probe

    async def done(self) -> None:
        await self.copies.drain()

    async def drain(self) -> None:
        await self.copies.drain()

    def mirror(self, flow: http.HTTPFlow, plan: Plan, record: AccessRecord,
               primary_json: Callable[[], Any]) -> None:
        """Send Bastion a rewritten copy of what OpenAI just answered; log when compared."""
        copy = mirror_copy(flow, plan, primary_json)
        if isinstance(copy, str):
            self._done(record, {"skipped": copy})
            return
        endpoint = record.endpoint
        judge = None
        openai_body = None if flow.response is None or flow.response.stream \
            else flow.response.get_content(strict=False)
        if openai_body is not None and self.probe().wanted(endpoint):
            copy.keep_body = True
            judge = self._agreement(flow, plan, endpoint, openai_body)

        def done(result: MirrorResult) -> None:
            verdict = "error" if result.error else "match" if result.shape_match else "mismatch"
            self.shared.metrics.mirror_duration.labels(endpoint).observe(
                result.duration_ms / 1000)
            self._done(record, result.to_dict(), verdict)

        limit = self.shared.rules.cutover.mirror_max_in_flight
        if not self.copies.try_send(self.client(), copy, limit, done, judge):
            self._done(record, {"skipped": "max_in_flight"})

    def _agreement(self, flow: http.HTTPFlow, plan: Plan, endpoint: str,
                   openai_body: bytes) -> Callable[[MirrorResult], Awaitable[None]]:
        """Compares the two answers once the copy is back (in the copy's task)."""
        try:
            request = json.loads(flow.request.get_content(strict=False) or b"{}")
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        assert plan.key is not None  # a copy has its Bastion key
        key, stream = plan.key.key, plan.stream
        assert flow.response is not None
        openai_sse = "text/event-stream" in flow.response.headers.get("content-type", "")

        async def judge(result: MirrorResult) -> None:
            if result.reply_body is None or result.status is None or result.status >= 400:
                return
            rules = self.shared.rules
            result.agreement = await self.probe().score(
                self.client(), rules.upstream.base_url, key, request, endpoint, openai_body,
                openai_sse, result.reply_body, stream)
            result.reply_body = None

        return judge

    def _done(self, record: AccessRecord, mirror: dict[str, object],
              verdict: str = "skipped") -> None:
        self.shared.metrics.mirror.labels(verdict).inc()
        record.mirror = mirror
        self.write_log(record)


def mirror_copy(flow: http.HTTPFlow, plan: Plan,
                primary_json: Callable[[], Any]) -> MirrorRequest | str:
    """The request Bastion gets, or why there is none."""
    assert flow.response is not None
    if plan.mirror_body is None or plan.key is None or plan.mirror_target is None:
        return plan.mirror_skip or "not mirrored endpoint"
    return MirrorRequest(
        method=plan.method, url=plan.mirror_target.url,
        headers={"content-type": "application/json",
                 "authorization": f"Bearer {plan.key.key}"},
        body=plan.mirror_body, stream=plan.stream,
        primary_status=flow.response.status_code, primary_json=primary_json())

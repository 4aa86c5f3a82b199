"""The 404 retry: Bastion answered `404 model_not_found` before any byte reached the app.

mitmproxy sends a flow upstream once; a flow that has a response cannot be re-sent. So
`responseheaders` keeps such a 404 buffered (`holds`), and `response` sends the same
request again itself (the proxy's upstream client, same headers and key) with only the
`model` changed, on each remaining candidate in turn; the reply that is not a 404
model_not_found replaces `flow.response`. A retried reply is therefore buffered, SSE
included (mitmproxy sends an addon-made response whole): the app still only ever sees
the stream of the model that served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from mitmproxy import http

from bastion_edge.core.model_availability import is_model_not_found
from bastion_edge.core.model_choice import retried_on, with_model_form, with_model_json
from bastion_edge.core.plan import BodyStep, Destination, Plan
from bastion_edge.streams.multipart import boundary_from_content_type

# Not copied onto the retry (httpx frames the body and speaks to Bastion itself).
_REQUEST_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection",
                          "keep-alive", "proxy-connection", "te", "upgrade", "accept-encoding",
                          "authorization"})
# Not copied from the retried reply: httpx has decoded and de-chunked the body.
_REPLY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                        "content-encoding"})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to Bastion for this exchange: its model, status, time (ms)."""

    model: str
    status: int | None  # None: no answer (the connection failed)
    ms: float

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "status": self.status, "ms": round(self.ms, 3)}


@dataclass(slots=True)
class Fallback:
    """What the retries did: the plan of the model that served, every attempt, the reply."""

    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    response: http.Response | None = None  # the last answer; None: keep the first 404


def holds(plan: Plan, status: int) -> bool:
    """At the reply's headers: keep this reply buffered, it may be retried."""
    return (status == 404 and bool(plan.fallback_models) and plan.refusal is None
            and plan.route.destination is Destination.BASTION
            and plan.body_step in (BodyStep.JSON, BodyStep.FORM)
            and "content-encoding" not in plan.facts.headers)


def wants_retry(plan: Plan, response: http.Response) -> bool:
    """At the reply's end: a held 404 that is Bastion's model_not_found."""
    return (holds(plan, response.status_code) and not response.stream
            and is_model_not_found(404, response.get_content(strict=False) or b""))


def retry_body(plan: Plan, body: bytes, model: str) -> bytes | None:
    """The request body sent the first time, with only its `model` changed."""
    if plan.body_step is BodyStep.JSON:
        return with_model_json(body, model)
    boundary = boundary_from_content_type(plan.facts.headers.get("content-type", ""))
    return with_model_form(body, boundary, model) if boundary is not None else None


async def fall_back(flow: http.HTTPFlow, plan: Plan, client: httpx.AsyncClient,
                    mark_unavailable: Callable[[str], None],
                    first_attempt_ms: float) -> Fallback:
    """Retry on `plan.fallback_models` in order until one is not 404 model_not_found.

    The app gets the last answer Bastion gave; `outcome.plan` names its model."""
    request = flow.request
    first = plan.upstream_model or ""
    outcome = Fallback(plan, [Attempt(first, 404, first_attempt_ms)])
    mark_unavailable(first)
    body = request.raw_content or b""
    headers = [(k, v) for k, v in request.headers.items(multi=True)
               if k.lower() not in _REQUEST_HOP]
    headers += list(plan.route.put_headers.items())  # the Bastion key (flows may be redacted)
    last: httpx.Response | None = None
    for model in plan.fallback_models:
        content = retry_body(plan, body, model)
        if content is None:
            break
        started = time.perf_counter()
        try:
            reply = await client.request(request.method, request.url, content=content,
                                         headers=headers)
        except httpx.HTTPError:
            outcome.attempts.append(Attempt(model, None, _ms(started)))
            break  # the app gets the last answer: a transport failure is not retried
        outcome.attempts.append(Attempt(model, reply.status_code, _ms(started)))
        outcome.plan, last = retried_on(outcome.plan, model), reply
        if not is_model_not_found(reply.status_code, reply.content):
            break
        mark_unavailable(model)
    if last is not None:
        outcome.response = http.Response.make(
            last.status_code, last.content,
            [(k.encode(), v.encode()) for k, v in last.headers.multi_items()
             if k.lower() not in _REPLY_HOP])
    return outcome


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

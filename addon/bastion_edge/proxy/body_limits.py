"""Which request bodies the proxy may buffer, and up to how much."""

from __future__ import annotations

from mitmproxy import http

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.core.plan import BodyStep, Plan
from bastion_edge.proxy.http_guard import BODY_LIMIT_KEY


def bound_body(flow: http.HTTPFlow, plan: Plan, limits: LimitsRules) -> None:
    """A body the proxy buffers (to rewrite, observe or refuse it) is capped at
    `limits.max_json_body_bytes`; a body it never reads streams through unbuffered."""
    if plan.body_step is BodyStep.STREAMED_FORM and plan.refusal is None:
        return  # streamed by the addon with its `model` field replaced
    if plan.body_step is BodyStep.NONE and plan.refusal is None and plan.store_action is None:
        if _large_or_unknown(flow.request.headers, limits):
            flow.request.stream = True  # e.g. a big upload to /v1/files: never held whole
        return
    flow.metadata[BODY_LIMIT_KEY] = limits


def _large_or_unknown(headers: http.Headers, limits: LimitsRules) -> bool:
    length = headers.get("content-length")
    if length is None:
        return "chunked" in headers.get("transfer-encoding", "").lower()
    return not length.isdigit() or int(length) > limits.max_json_body_bytes

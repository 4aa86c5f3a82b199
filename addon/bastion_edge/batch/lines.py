"""One batch input line -> the plan a live request with that body would get. Pure.

The line goes through the planner exactly as an app's request would (model mapping,
key choice, store flag, request adaptation, refusals), as the app that created the
batch: its name, address and key hash, never its key. A plan that would send the line
to OpenAI (observe/mirror/split cutovers) is refused: the proxy holds no OpenAI key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

from bastion_edge.batch.batch_shapes import BatchLine
from bastion_edge.batch.batch_store import Creator
from bastion_edge.core.keys import KeyFileReader
from bastion_edge.core.plan import Destination, Plan
from bastion_edge.core.planner import Policy, plan_body, plan_head, refused
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.errors import ApiError, bad_request

BATCH_NOTE = "batch line"


def line_head(endpoint: str, creator: Creator, host: str) -> RequestHead:
    return RequestHead(scheme="https", host=host, method="POST", path=endpoint,
                       headers=MappingProxyType({"content-type": "application/json"}),
                       client=creator.client, app=creator.app)


def plan_line(line: BatchLine, endpoint: str, creator: Creator, policy: Policy,
              environ: Mapping[str, str], files: KeyFileReader | None = None,
              ) -> tuple[Plan | None, bytes]:
    """(plan, the body to send): the body is the plan's rewritten one, else the line's.
    None: the rules intercept no OpenAI host (nothing to plan against)."""
    raw = json.dumps(line.body, separators=(",", ":"), ensure_ascii=False).encode()
    host = policy.rules.openai_hosts[0] if policy.rules.openai_hosts else ""
    plan = plan_head(line_head(endpoint, creator, host), policy, environ, files,
                     creator.key_sha256)
    if plan is None:
        return None, raw
    plan = plan._replace(notes=(*plan.notes, BATCH_NOTE))
    if line.body.get("stream") is True:
        return refused(plan, bad_request("Batch lines cannot stream; remove 'stream'.",
                                         "invalid_value", "stream")), raw
    plan = plan_body(plan, ParsedBody(raw), policy, environ, None, files)
    if plan.refusal is None and plan.route.destination is not Destination.BASTION:
        plan = refused(plan, ApiError(
            400, "bastion-edge runs batch lines against Bastion only; this line's cutover "
            "decision sends it to OpenAI.", "batch_line_not_for_bastion"))
    return plan, plan.body if plan.body is not None else raw

"""The planner's JSON body step under arbitrary bodies: a plan or an envelope, never an
exception; a rewritten body is valid JSON; rewriting it again changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from strategies import request_bodies

from bastion_edge.config.rules import load_rules
from bastion_edge.core.planner import Policy, plan_body, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead

POLICY = Policy.of(load_rules(Path(__file__).resolve().parents[2] / "rules.yaml"))
ENV = {"QUBITTRON_API_KEY": "bk-fuzz"}
PATHS = st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/responses",
                         "/v1/completions", "/v1/images/generations"])


def _plan(path: str, raw: bytes):  # type: ignore[no-untyped-def]
    head = RequestHead("https", "api.openai.com", "POST", path,
                       {"content-type": "application/json", "authorization": "Bearer sk"})
    plan = plan_head(head, POLICY, ENV)
    assert plan is not None
    return plan_body(plan, ParsedBody(raw), POLICY, ENV)


@given(PATHS, request_bodies())
def test_json_body_step_answers_a_plan_or_an_envelope(path: str, raw: bytes) -> None:
    plan = _plan(path, raw)
    if plan.refusal is not None:
        assert 400 <= plan.refusal.status < 500
        json.loads(plan.refusal.body())
        return
    if plan.body is not None:
        rewritten = json.loads(plan.body)
        assert isinstance(rewritten, dict)
        again = _plan(path, plan.body)  # idempotent: a mapped body maps to itself
        assert again.refusal is None
        assert again.body in (None, plan.body)

"""`cutover.mode: canary` in the planner: split at the canary's percent, which the caller
hands in (the canary child's cached step); without it, everything stays on OpenAI."""

from __future__ import annotations

import json

from bastion_edge.core.plan import BodyStep, Decision, Destination
from bastion_edge.core.planner import plan_body, plan_head
from bastion_edge.core.request import ParsedBody
from tests.unit.core.test_planner import ENV, head, with_rules

CANARY = with_rules("cutover: {mode: canary, canary: {steps: [10, 50, 100]}}")
BY_CONVERSATION = with_rules(
    "cutover: {mode: canary, sticky_by: conversation, canary: {steps: [50, 100]}}")


def _destinations(percent: float) -> set[Destination]:
    seen = set()
    for n in range(60):
        app = head(headers={"authorization": f"Bearer sk-app-{n}"})  # the key is sticky
        plan = plan_head(app, CANARY, ENV, canary_percent=percent)
        assert plan is not None and plan.refusal is None
        assert plan.decision is Decision.CANARY and plan.explain()
        seen.add(plan.route.destination)
    return seen


def test_canary_rules_plan_without_error_and_default_to_openai() -> None:
    assert _destinations(0.0) == {Destination.OPENAI}
    plan = plan_head(head(), CANARY, ENV)  # no percent given: the safe side
    assert plan is not None and plan.route.destination is Destination.OPENAI


def test_canary_percent_moves_sticky_keys_to_bastion() -> None:
    assert _destinations(50.0) == {Destination.OPENAI, Destination.BASTION}
    assert _destinations(100.0) == {Destination.BASTION}
    one = head(headers={"authorization": "Bearer sk-one-app"})
    first = plan_head(one, CANARY, ENV, canary_percent=50.0)
    again = plan_head(one, CANARY, ENV, canary_percent=50.0)
    assert first is not None and again is not None and first.route == again.route


def test_canary_by_conversation_decides_with_the_body_at_the_percent() -> None:
    first = plan_head(head(), BY_CONVERSATION, ENV, canary_percent=100.0)
    assert first is not None and first.body_step is BodyStep.CONVERSATION
    body = ParsedBody(json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "hello"}]}).encode())
    assert plan_body(first, body, BY_CONVERSATION, ENV, canary_percent=100.0
                     ).route.destination is Destination.BASTION
    assert plan_body(first, body, BY_CONVERSATION, ENV, canary_percent=0.0
                     ).route.destination is Destination.OPENAI

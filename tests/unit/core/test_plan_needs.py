"""core/plan_needs.py: the planner says what the body step needs next, in its order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion_edge.config.rules import parse_rules
from bastion_edge.core.plan import Plan
from bastion_edge.core.plan_needs import Gathered, NeedHistory, NeedItemRefs, Ready, next_need
from bastion_edge.core.planner import Policy, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.core.responses_request import History
from bastion_edge.errors import ApiError

SHIPPED = Policy.of(parse_rules(
    (Path(__file__).resolve().parents[3] / "rules.yaml").read_text(), "rules.yaml"))
ENV = {"QUBITTRON_API_KEY": "bk-needs-test"}
HEADERS = {"authorization": "Bearer sk-app", "content-type": "application/json"}
REF = {"type": "item_reference", "id": "msg_9"}


def head_plan(path: str = "/v1/responses") -> Plan:
    plan = plan_head(RequestHead("https", "api.openai.com", "POST", path, HEADERS, "10.0.0.1"),
                     SHIPPED, ENV)
    assert plan is not None
    return plan


def body(**fields: Any) -> ParsedBody:
    return ParsedBody(json.dumps({"model": "gpt-4o", **fields}).encode())


def test_a_plain_request_is_ready_at_once() -> None:
    assert next_need(head_plan("/v1/chat/completions"), body(messages=[])) == Ready()
    assert next_need(head_plan(), body(input="hi")) == Ready()


def test_history_first_then_the_items_it_references() -> None:
    plan = head_plan()
    request = body(input="and now?", previous_response_id="resp_1")
    need = next_need(plan, request)
    assert need == NeedHistory(plan.partition, "resp_1")
    history = History(("resp_0", "resp_1"), [REF])  # the stored turn names an item
    got = Gathered().with_history(history)
    need = next_need(plan, request, got)
    assert need == NeedItemRefs(plan.partition, ("msg_9",))
    items = {"msg_9": {"type": "message", "role": "user", "content": "x", "id": "msg_9"}}
    assert next_need(plan, request, got.with_items(items)) == Ready(history, items)


def test_item_references_without_history() -> None:
    plan = head_plan()
    request = body(input=[REF])
    assert next_need(plan, request) == NeedItemRefs(plan.partition, ("msg_9",))
    assert next_need(plan, request, Gathered().with_items({})) == Ready(None, {})


def test_history_without_references_is_ready_once_read() -> None:
    plan = head_plan()
    request = body(input="x", previous_response_id="resp_1")
    history = History(("resp_1",), [])
    assert next_need(plan, request, Gathered().with_history(history)) == Ready(history, None)


def test_a_malformed_previous_id_is_refused() -> None:
    with pytest.raises(ApiError, match="previous_response_id"):
        next_need(head_plan(), body(input="x", previous_response_id=7))

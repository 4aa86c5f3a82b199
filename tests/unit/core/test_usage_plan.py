"""`usage:` in rules.yaml, and the planner's JSON body step asking streams for usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion_edge.config.rules import RulesError, load_rules, parse_rules
from bastion_edge.config.usage_rules import Price, UsageRules
from bastion_edge.core.facts import CHAT, COMPLETIONS
from bastion_edge.core.plan import Plan
from bastion_edge.core.planner import Policy, plan_body, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.core.usage import STREAM_USAGE_NOTE

SHIPPED = load_rules(Path(__file__).resolve().parents[3] / "rules.yaml")
ENV = {"QUBITTRON_API_KEY": "bk-test"}
PATHS = {CHAT: "/v1/chat/completions", COMPLETIONS: "/v1/completions"}


def test_usage_section_parsed() -> None:
    rules = parse_rules("""
usage:
  stream_usage: false
  currency: EUR
  prices:
    gpt-4o: {input: 2.5, output: 10}
    gpt-oss-120b: {input: 0, output: 0.6}
""")
    assert rules.usage == UsageRules(False, "EUR", {"gpt-4o": Price(2.5, 10.0),
                                                     "gpt-oss-120b": Price(0.0, 0.6)})
    assert parse_rules("models: {}").usage == UsageRules()


@pytest.mark.parametrize(("text", "where"), [
    ("usage: {stream_usage: 1}", 'usage.stream_usage: expected true or false'),
    ("usage: {prices: {gpt-4o: {input: 1}}}", 'usage.prices."gpt-4o".output: missing'),
    ("usage: {prices: {gpt-4o: {input: -1, output: 1}}}", 'usage.prices."gpt-4o".input'),
    ("usage: {prices: {gpt-4o: {input: 1, output: 1, cached: 1}}}", "unknown key"),
    ("usage: {price: {}}", "usage.price: unknown key"),
])
def test_usage_section_errors_name_the_location(text: str, where: str) -> None:
    with pytest.raises(RulesError) as raised:
        parse_rules(text)
    assert where in str(raised.value)


def plan_for(body: dict[str, object], endpoint: str = CHAT, policy: Policy | None = None,
             host: str = "api.openai.com") -> Plan:
    policy = policy or Policy.of(SHIPPED)
    head = RequestHead("https", host, "POST", PATHS[endpoint],
                       {"content-type": "application/json"})
    plan = plan_head(head, policy, ENV)
    assert plan is not None
    return plan_body(plan, ParsedBody(json.dumps(body).encode()), policy, ENV)


def test_streamed_chat_without_usage_asks_upstream_and_records_it() -> None:
    plan = plan_for({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": "hi"}]})
    assert plan.strip_usage is True
    assert plan.body is not None
    assert json.loads(plan.body)["stream_options"] == {"include_usage": True}
    assert STREAM_USAGE_NOTE in plan.notes
    assert "stream-usage" not in plan.rewrites  # not a rewrite the app would see


def test_bastion_model_id_body_is_serialised_only_for_the_usage_option() -> None:
    plan = plan_for({"model": "gpt-oss-120b", "prompt": "x", "stream": True}, COMPLETIONS)
    assert plan.strip_usage is True
    assert plan.body is not None and b'"include_usage":true' in plan.body


def test_passthrough_to_bastion_is_left_as_the_app_sent_it() -> None:
    plan = plan_for({"model": "gpt-oss-120b", "prompt": "x", "stream": True}, COMPLETIONS,
                    host="api.qubittron.ai")
    assert plan.strip_usage is False and plan.body is None


@pytest.mark.parametrize("body", [
    {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "user", "content": "hi"}]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
])
def test_no_usage_asked_when_the_app_asked_or_does_not_stream(body: dict[str, object]) -> None:
    plan = plan_for(body)
    assert plan.strip_usage is False
    assert plan.body is not None and json.loads(plan.body).get("stream_options") == \
        body.get("stream_options")


def test_stream_usage_off_in_rules() -> None:
    rules = parse_rules("models: {gpt-4o: gpt-oss-120b}\nusage: {stream_usage: false}\n")
    plan = plan_for({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": "hi"}]}, policy=Policy.of(rules))
    assert plan.strip_usage is False
    assert plan.body is not None and "stream_options" not in json.loads(plan.body)

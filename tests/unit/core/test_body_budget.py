"""The process-wide body budget (issue 23 row 8): bookkeeping and the `limits:` key."""

from __future__ import annotations

import json

import pytest

from bastion_edge.config.limits_section import BUFFERED_TOTAL, LimitsRules
from bastion_edge.config.rules import RulesError, parse_rules
from bastion_edge.core.body_budget import BodyBudget
from bastion_edge.core.limits import LIMIT_BUFFERED_TOTAL, LIMIT_NAMES, bodies_over_budget
from bastion_edge.proxy.gateway_errors import render


def test_reservations_grow_as_bytes_arrive_and_stop_at_the_budget() -> None:
    budget = BodyBudget()
    assert budget.reserve(("c1", "f1"), 400, 1000)
    assert budget.reserve(("c1", "f1"), 600, 1000)  # the same body, grown
    assert budget.reserve(("c2", "f2"), 400, 1000)
    assert budget.total == 1000
    assert not budget.reserve(("c2", "f2"), 401, 1000)  # refused: nothing changes
    assert budget.held[("c2", "f2")] == 400 and budget.total == 1000
    assert budget.reserve(("c1", "f1"), 10, 1000)  # a smaller size never shrinks it
    assert budget.held[("c1", "f1")] == 600


def test_release_by_flow_and_by_client_frees_exactly_what_was_held() -> None:
    budget = BodyBudget()
    budget.reserve(("c1", "f1"), 100, 1000)
    budget.reserve(("c1", "f2"), 200, 1000)
    budget.reserve(("c2", "f3"), 300, 1000)
    assert budget.release(("c1", "f1")) == 100
    assert budget.release(("c1", "f1")) == 0  # twice is harmless
    assert budget.release_client("c1") == 200
    assert budget.total == 300 and list(budget.held) == [("c2", "f3")]
    assert budget.reserve(("c4", "f4"), 700, 1000)


def test_the_refusal_is_a_503_server_error_with_retry_after_in_the_envelope() -> None:
    error = bodies_over_budget(LimitsRules())
    assert (error.status, error.type, error.code) == (503, "server_error", "server_overloaded")
    assert error.limit == LIMIT_BUFFERED_TOTAL in LIMIT_NAMES
    head, _, body = render(error).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"\r\nretry-after: 1" in head.lower()
    assert json.loads(body)["error"]["code"] == "server_overloaded"


def test_the_limits_key_defaults_and_is_checked() -> None:
    assert LimitsRules().max_buffered_body_bytes_total == BUFFERED_TOTAL == 128 * 1024 * 1024
    rules = parse_rules("limits:\n  max_buffered_body_bytes_total: 33554432\n")
    assert rules.limits.max_buffered_body_bytes_total == 32 * 1024 * 1024
    big = parse_rules(f"limits:\n  max_json_body_bytes: {BUFFERED_TOTAL * 2}\n")
    assert big.limits.max_buffered_body_bytes_total == BUFFERED_TOTAL * 2  # one body fits
    with pytest.raises(RulesError, match=r"limits\.max_buffered_body_bytes_total"):
        parse_rules("limits:\n  max_json_body_bytes: 2048\n"
                    "  max_buffered_body_bytes_total: 1024\n")
    with pytest.raises(RulesError, match=r"limits\.max_buffered_body_bytes_total"):
        parse_rules("limits:\n  max_buffered_body_bytes_total: 0\n")

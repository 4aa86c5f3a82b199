"""Pure limit checks (core/limits.py) and the inputs the fuzz harness found."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.config.rules import RulesError, load_rules, parse_rules
from bastion_edge.core.limits import (
    LIMIT_BODY,
    LIMIT_HEADER_COUNT,
    body_too_large,
    head_violation,
    header_value,
    json_structure_error,
    path_violation,
)
from bastion_edge.core.planner import Policy, plan_body, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead

LIMITS = LimitsRules()
POLICY = Policy.of(load_rules(Path(__file__).resolve().parents[3] / "rules.yaml"))
ENV = {"QUBITTRON_API_KEY": "bk-test"}


def test_header_value_encodes_control_characters_only() -> None:
    assert header_value("gpt-4o") == "gpt-4o"
    assert header_value("a\r\nSet-Cookie: x") == "a%0D%0ASet-Cookie: x"
    assert header_value("n\x00\x7f") == "n%00%7F"
    assert header_value("modèle\tx") == "modèle\tx"


def test_head_violation_counts_sizes_and_bad_bytes() -> None:
    assert head_violation([(b"a", b"b")], LIMITS) is None
    many = head_violation([(b"x", b"y")] * 201, LIMITS)
    assert many is not None and many.status == 431 and many.limit == LIMIT_HEADER_COUNT
    big = head_violation([(b"x", b"y" * 70_000)], LIMITS)
    assert big is not None and big.status == 431
    nul = head_violation([(b"x", b"a\x00")], LIMITS)
    assert nul is not None and nul.status == 400 and nul.code == "invalid_header"


@pytest.mark.parametrize("path", ["/v1/../x", "/v1/%2e%2e/x", "/v1/%2E./x", "/x", "/",
                                  "/v1/a%2Fb", "/v1/a\\b", "/v1x", "/v1/./models"])
def test_paths_that_could_leave_the_api_are_refused(path: str) -> None:
    error = path_violation(path)
    assert error is not None and error.code == "invalid_path"


@pytest.mark.parametrize("path", ["/v1", "/v1/models", "/v1/chat/completions?x=../y",
                                  "/v1/files/file-abc/content", "/v1/models/gpt-4o..x"])
def test_api_paths_pass(path: str) -> None:
    assert path_violation(path) is None


def test_bastion_host_paths_need_not_be_under_v1() -> None:
    assert path_violation("/health", api_only=False) is None
    assert path_violation("/../etc", api_only=False) is not None


def test_body_limit_is_inclusive() -> None:
    assert body_too_large(LIMITS.max_json_body_bytes, LIMITS) is None
    over = body_too_large(LIMITS.max_json_body_bytes + 1, LIMITS)
    assert over is not None and over.status == 413 and over.limit == LIMIT_BODY


def test_json_structure_depth_and_surrogates() -> None:
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    assert json_structure_error({"a": deep}) is not None
    assert json_structure_error({"a": "\ud800"}) is not None
    assert json_structure_error({"\udfff": 1}) is not None
    assert json_structure_error({"a": ["😀", {"b": [1, 2.5, None]}]}) is None


def test_limits_section_parses_and_names_bad_values() -> None:
    rules = parse_rules("limits:\n  max_json_body_bytes: 1024\n  idle_timeout_seconds: 5\n")
    assert rules.limits.max_json_body_bytes == 1024
    assert rules.limits.idle_timeout_seconds == 5.0
    assert rules.limits.header_timeout_seconds == LIMITS.header_timeout_seconds
    with pytest.raises(RulesError, match=r"limits\.max_json_body_bytes"):
        parse_rules("limits:\n  max_json_body_bytes: 0\n")
    with pytest.raises(RulesError, match=r"limits\.nope"):
        parse_rules("limits:\n  nope: 1\n")


@pytest.mark.parametrize("text", ["", "# only comments\n", "\n\n   \n", "---\n"])
def test_an_empty_rules_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError, match="empty"):
        load_rules(path)


# Found by tests/fuzz/test_fuzz_planner.py: a non-string `type` in a content part made
# the image scan raise TypeError (a 500 proxy_error) instead of passing the body on.
@pytest.mark.parametrize("raw", [b'{"input": {"type": []}}',
                                 b'{"model":"gpt-4o","messages":[{"type":{"a":1}}]}'])
def test_fuzz_found_unhashable_part_type_is_not_an_internal_error(raw: bytes) -> None:
    head = RequestHead("https", "api.openai.com", "POST", "/v1/chat/completions",
                       {"content-type": "application/json", "authorization": "Bearer sk"})
    plan = plan_head(head, POLICY, ENV)
    assert plan is not None
    planned = plan_body(plan, ParsedBody(raw), POLICY, ENV)
    assert planned.refusal is None or planned.refusal.status < 500


def test_stream_callables_never_send_an_empty_chunk() -> None:
    """An empty chunk on a chunked HTTP/1 body is its terminator (found by the soak:
    streamed uploads were cut short when the form rewriter held a partial delimiter)."""
    from bastion_edge.proxy.http_guard import never_empty

    held = never_empty(lambda chunk: chunk[:-3])
    assert held(b"ab") == []
    assert held(b"abcdef") == [b"abc"]

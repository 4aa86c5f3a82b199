"""Access-log bodies: credentials redacted by exact name; a body never drops its record."""

from __future__ import annotations

import json

from bastion_edge.telemetry.access_log import (
    MAX_LOGGED_DEPTH,
    REDACTED_VALUE,
    UNLOGGABLE,
    AccessRecord,
    loggable_body,
)


def record(**bodies: object) -> AccessRecord:
    return AccessRecord(
        time="t", request_id="r", client=None, app=None, method="POST", path="/v1/chat/completions",
        endpoint="chat.completions", original_host="api.openai.com", upstream_host=None,
        original_model=None, upstream_model=None, destination="bastion", decision="rewrite",
        status=200, duration_ms=1.0, ttfb_ms=1.0, bytes_in=1, bytes_out=1, stream=False,
        **bodies)  # type: ignore[arg-type]


def test_token_counts_and_keywords_survive_redaction() -> None:
    body = {"model": "gpt-4o", "max_tokens": 64, "max_completion_tokens": 32,
            "keywords": ["a"], "monkey": "banana",
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    assert loggable_body(json.dumps(body).encode(), []) == body


def test_credential_fields_are_redacted_by_exact_name() -> None:
    body = {"api_key": "k1", "Authorization": "Bearer x", "token": "t", "access_token": "a",
            "client_secret": "s", "password": "p", "nested": [{"X-Api-Key": "h"}]}
    assert loggable_body(json.dumps(body).encode(), []) == {
        "api_key": REDACTED_VALUE, "Authorization": REDACTED_VALUE, "token": REDACTED_VALUE,
        "access_token": REDACTED_VALUE, "client_secret": REDACTED_VALUE, "password": REDACTED_VALUE,
        "nested": [{"X-Api-Key": REDACTED_VALUE}]}


def test_secret_values_are_redacted_wherever_they_appear() -> None:
    body = {"messages": [{"content": "my key is bastion-k-123 and sk-abcdefghijkl"}]}
    logged = loggable_body(json.dumps(body).encode(), ["bastion-k-123"])
    assert logged == {"messages": [{"content": f"my key is {REDACTED_VALUE} and {REDACTED_VALUE}"}]}


def test_deeply_nested_body_is_marked_unloggable_and_the_record_still_serialises() -> None:
    deep = b'{"a":' * 995 + b"1" + b"}" * 995  # json.loads accepts it; recursion would not
    body = loggable_body(deep, ["secret"])
    assert body == UNLOGGABLE
    line = json.loads(record(request_body=body).to_json())
    assert line["request_body"] == UNLOGGABLE and line["status"] == 200


def test_nesting_at_the_bound_is_still_logged() -> None:
    nested = b"[" * MAX_LOGGED_DEPTH + b"1" + b"]" * MAX_LOGGED_DEPTH
    assert loggable_body(nested, []) == json.loads(nested)


def test_body_too_deep_for_the_json_parser_is_unloggable() -> None:
    assert loggable_body(b"[" * 30_000 + b"]" * 30_000, []) == UNLOGGABLE

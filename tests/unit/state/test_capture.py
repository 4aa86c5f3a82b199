"""Capturing a turn: the request's own items, the reply's response object, bytes untouched."""

from __future__ import annotations

import json
from typing import Any

from bastion_edge.core.responses_request import turn_from_request
from bastion_edge.state.capture import (
    JsonObserver,
    SseObserver,
    record_from_response,
)

RESPONSE = {"id": "resp_abc", "object": "response", "created_at": 1700000000,
            "status": "completed", "model": "gpt-oss-120b", "instructions": None,
            "metadata": {}, "store": False, "previous_response_id": None,
            "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "héllo\nworld"}]}]}


def sse(events: list[dict[str, Any]], newline: bytes = b"\n") -> bytes:
    out = b""
    for event in events:
        out += b"event: " + event["type"].encode() + newline
        out += b"data: " + json.dumps(event).encode() + newline + newline
    return out


STREAM_EVENTS = [
    {"type": "response.created", "response": {**RESPONSE, "status": "in_progress",
                                              "output": []}},
    {"type": "response.output_text.delta", "delta": '"response.completed"'},
    {"type": "response.completed", "response": RESPONSE},
]


def test_turn_keeps_the_apps_own_input_with_ids() -> None:
    given = {"type": "message", "id": "msg_given", "role": "user", "content": "a"}
    body = {"input": [given, {"role": "user", "content": "b"}], "instructions": "brief",
            "metadata": {"k": "v"}, "previous_response_id": "resp_0"}
    turn = turn_from_request(body, "app", ("resp_0",))
    assert turn.input_items == (given, {"role": "user", "content": "b"})
    assert turn.input_item_ids[0] == "msg_given" and turn.input_item_ids[1].startswith("msg_")
    assert (turn.previous_response_id, turn.ancestors) == ("resp_0", ("resp_0",))


def test_record_says_what_the_app_asked_for() -> None:
    turn = turn_from_request({"input": "x", "instructions": "brief", "metadata": {"k": "v"},
                              "previous_response_id": "resp_0"}, "app", ("resp_0",))
    record = record_from_response(turn, RESPONSE, now=5.0)
    assert record is not None
    assert record.id == "resp_abc" and record.created_at == 1700000000
    assert record.response["store"] is True
    assert record.response["previous_response_id"] == "resp_0"
    assert record.response["instructions"] == "brief"
    assert record.response["metadata"] == {"k": "v"}
    assert record.output_items == RESPONSE["output"]


def test_not_a_response_object_is_not_recorded() -> None:
    turn = turn_from_request({"input": "x"}, "app")
    assert record_from_response(turn, {"error": {"message": "no"}}, 1.0) is None
    assert record_from_response(turn, {**RESPONSE, "id": "../../etc"}, 1.0) is None


def test_sse_observer_passes_bytes_unchanged_and_finds_completed_across_chunks() -> None:
    for newline in (b"\n", b"\r\n"):
        raw = sse(STREAM_EVENTS, newline)
        finals: list[dict[str, Any]] = []
        observer = SseObserver(finals.append)
        out = b"".join(observer(raw[i:i + 7]) for i in range(0, len(raw), 7))
        assert out + observer(b"") == raw
        assert finals == [RESPONSE] and observer.final == RESPONSE


def test_sse_observer_without_trailing_blank_line_still_finishes() -> None:
    raw = sse(STREAM_EVENTS).rstrip(b"\n")
    observer = SseObserver()
    observer(raw)
    assert observer.final is None  # the event is not over until the stream is
    observer(b"")
    assert observer.final == RESPONSE


def test_sse_observer_ignores_text_that_merely_mentions_completion() -> None:
    observer = SseObserver()
    observer(sse(STREAM_EVENTS[:2]))
    observer(b"")
    assert observer.final is None


def test_json_observer_reports_the_body_at_the_end() -> None:
    raw = json.dumps(RESPONSE).encode()
    finals: list[dict[str, Any]] = []
    observer = JsonObserver(finals.append)
    assert b"".join(observer(raw[i:i + 5]) for i in range(0, len(raw), 5)) == raw
    assert finals == [] and observer(b"") == b""
    assert finals == [RESPONSE]


def test_json_observer_gives_up_beyond_its_limit() -> None:
    finals: list[dict[str, Any]] = []
    observer = JsonObserver(finals.append, limit=10)
    assert observer(b'{"id": "resp_abcdef"}') == b'{"id": "resp_abcdef"}'
    observer(b"")
    assert finals == [] and observer.too_large

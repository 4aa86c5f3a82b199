"""Mirror agreement's pure part: cosine, answers from chat/Responses JSON and SSE,
tools_match, schema_valid (the strict structured-outputs subset), the log object."""

from __future__ import annotations

import json

import pytest

from bastion_edge.core.mirror_agreement import (
    Answer,
    ToolCall,
    agreement,
    agrees,
    answer_of,
    cosine,
    embedding_texts,
    schema_valid,
    tools_match,
    validate,
)

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                             "days": {"type": "integer"}},
           "required": ["city", "days"], "additionalProperties": False}
CHAT_TOOLS = {"tools": [{"type": "function",
                         "function": {"name": "weather", "parameters": WEATHER}}]}
RESPONSES_TOOLS = {"tools": [{"type": "function", "name": "weather", "parameters": WEATHER}]}


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert cosine([1.0, 1.0], [-1.0, -1.0]) == pytest.approx(-1.0)
    assert cosine([1.0], [1.0, 2.0]) is None and cosine([0.0, 0.0], [1.0, 1.0]) is None


def test_answers_from_chat_json_and_sse() -> None:
    reply = {"choices": [{"message": {"content": "Paris", "tool_calls": [
        {"type": "function", "function": {"name": "weather", "arguments": '{"city":"P"}'}}]}}]}
    assert answer_of(json.dumps(reply).encode(), "chat.completions", False) == Answer(
        "Paris", (ToolCall("weather", '{"city":"P"}'),))
    chunks = [{"choices": [{"delta": {"content": "Par"}}]},
              {"choices": [{"delta": {"content": "is", "tool_calls": [
                  {"index": 0, "function": {"name": "weather", "arguments": '{"ci'}}]}}]},
              {"choices": [{"delta": {"tool_calls": [
                  {"index": 0, "function": {"arguments": 'ty":"P"}'}}]}}]}]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    assert answer_of(sse.encode(), "chat.completions", True) == Answer(
        "Paris", (ToolCall("weather", '{"city":"P"}'),))
    assert answer_of(b"not json", "chat.completions", False) is None


def test_answers_from_responses_json_and_sse() -> None:
    response = {"output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "Hi there"}]},
        {"type": "function_call", "name": "weather", "arguments": "{}"}]}
    expected = Answer("Hi there", (ToolCall("weather", "{}"),))
    assert answer_of(json.dumps(response).encode(), "responses", False) == expected
    events = [{"type": "response.output_text.delta", "delta": "Hi "},
              {"type": "response.completed", "response": response}]
    sse = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    assert answer_of(sse.encode(), "responses", True) == expected
    partial = "data: " + json.dumps({"type": "response.output_text.delta", "delta": "Hi"})
    assert answer_of(partial.encode(), "responses", True) == Answer("Hi")


def test_tools_match_needs_same_tools_and_valid_arguments() -> None:
    good = Answer("", (ToolCall("weather", '{"city": "Oslo", "days": 3}'),))
    assert tools_match(CHAT_TOOLS, good, good) is True
    assert tools_match(RESPONSES_TOOLS, good, good) is True
    missing = Answer("", (ToolCall("weather", '{"city": "Oslo"}'),))
    assert tools_match(CHAT_TOOLS, good, missing) is False
    broken = Answer("", (ToolCall("weather", '{"city": '),))
    assert tools_match(CHAT_TOOLS, good, broken) is False
    other = Answer("", (ToolCall("search", "{}"),))
    assert tools_match(CHAT_TOOLS, good, other) is False
    assert tools_match(CHAT_TOOLS, good, Answer("I'd call weather")) is False
    assert tools_match(CHAT_TOOLS, Answer("a"), Answer("b")) is None


@pytest.mark.parametrize(("instance", "ok"), [
    ({"city": "Oslo", "days": 3}, True),
    ({"city": "Oslo", "days": 3.0}, True),
    ({"city": "Oslo", "days": "3"}, False),
    ({"city": "Oslo", "days": True}, False),
    ({"city": "Oslo"}, False),
    ({"city": "Oslo", "days": 3, "x": 1}, False),
    (["Oslo"], False),
])
def test_validate_object_rules(instance: object, ok: bool) -> None:
    assert validate(instance, WEATHER) is ok


def test_validate_arrays_enum_anyof_and_refs() -> None:
    schema = {"type": "object", "properties": {
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
        "mood": {"enum": ["up", "down"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["steps", "mood", "note"], "additionalProperties": False,
        "$defs": {"step": {"type": "object", "properties": {"n": {"type": "number"}},
                           "required": ["n"], "additionalProperties": False}}}
    assert validate({"steps": [{"n": 1}, {"n": 2.5}], "mood": "up", "note": None}, schema)
    assert not validate({"steps": [{"n": "1"}], "mood": "up", "note": None}, schema)
    assert not validate({"steps": [], "mood": "sideways", "note": None}, schema)
    assert not validate({"steps": [], "mood": "up", "note": 3}, schema)
    assert not validate({"steps": [], "mood": "up", "note": None}, {"$ref": "#/$defs/none"})


def test_schema_valid_for_chat_and_responses_requests() -> None:
    chat = {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "w", "strict": True, "schema": WEATHER}}}
    responses = {"text": {"format": {"type": "json_schema", "name": "w", "schema": WEATHER}}}
    good, bad = Answer('{"city": "Oslo", "days": 2}'), Answer('{"city": "Oslo"}')
    for request in (chat, responses):
        assert schema_valid(request, good) is True
        assert schema_valid(request, bad) is False
        assert schema_valid(request, Answer("Sure! {")) is False
    assert schema_valid({}, good) is None


def test_agreement_object_and_verdict() -> None:
    a, b = Answer("yes"), Answer("no")
    assert agreement({}, a, b, 0.91234) == {"similarity": 0.9123}
    assert agrees({"similarity": 0.9123}) is True
    assert agrees({"similarity": 0.5}) is False
    call = Answer("", (ToolCall("weather", '{"city":"x","days":1}'),))
    figures = agreement(CHAT_TOOLS, call, Answer("no tool"), None)
    assert figures == {"tools_match": False} and agrees(figures) is False
    assert agrees({}) is None
    assert embedding_texts(a, b) == ("yes", "no") and embedding_texts(call, b) is None

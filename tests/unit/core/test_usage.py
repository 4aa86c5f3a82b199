"""Token usage read from replies (`core/usage.py`) and from streams
(`core/usage_stream.py`): plain values, every vocabulary, every chunking."""

from __future__ import annotations

import json

import pytest

from bastion_edge.core.facts import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from bastion_edge.core.usage import (
    Usage,
    adds_stream_usage,
    model_in_json,
    model_of,
    usage_in_json,
    usage_of,
    with_stream_usage,
)
from bastion_edge.core.usage_stream import JsonUsageTail, UsageTap

CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
              "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 2}}
RESPONSES_USAGE = {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 8},
                   "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 3},
                   "total_tokens": 39}


def test_chat_usage_all_directions() -> None:
    assert usage_of({"usage": CHAT_USAGE}) == Usage(12, 5, 4, 2)


def test_responses_usage_and_completed_event() -> None:
    assert usage_of({"usage": RESPONSES_USAGE}) == Usage(30, 9, 8, 3)
    event = {"type": "response.completed", "response": {"usage": RESPONSES_USAGE}}
    assert usage_of(event) == Usage(30, 9, 8, 3)


def test_embeddings_usage_reports_input_only() -> None:
    found = usage_of({"usage": {"prompt_tokens": 7, "total_tokens": 7}})
    assert found == Usage(input=7)
    assert found is not None and found.counts() == {"input": 7}


@pytest.mark.parametrize("reply", [
    {}, {"usage": None}, {"usage": {}}, {"usage": "12"}, [], "text",
    {"usage": {"prompt_tokens": -1, "completion_tokens": True}},
    {"type": "response.created", "response": {"usage": None}},
])
def test_no_usage_is_none_never_an_estimate(reply: object) -> None:
    assert usage_of(reply) is None


def test_usage_in_json_reads_only_the_usage_object() -> None:
    vectors = [{"object": "embedding", "index": i, "embedding": [0.1] * 50} for i in range(3)]
    raw = json.dumps({"object": "list", "data": vectors, "model": "m",
                      "usage": {"prompt_tokens": 11, "total_tokens": 11}}).encode()
    assert usage_in_json(raw) == Usage(input=11)
    assert usage_in_json(json.dumps({"usage": CHAT_USAGE, "x": 1}).encode()) == \
        Usage(12, 5, 4, 2)


def test_usage_in_json_ignores_the_word_inside_strings_and_null() -> None:
    raw = json.dumps({"choices": [{"message": {"content": '{"usage": {"prompt_tokens": 99}}'}}],
                      "usage": None}).encode()
    assert usage_in_json(raw) is None
    assert usage_in_json(b'{"usage": {"prompt_tokens": 3') is None  # cut short
    assert usage_in_json(b"") is None


@pytest.mark.parametrize(("endpoint", "body", "enabled", "expected"), [
    (CHAT, {"stream": True}, True, True),
    (COMPLETIONS, {"stream": True, "stream_options": {}}, True, True),
    (CHAT, {"stream": True, "stream_options": {"include_usage": False}}, True, True),
    (CHAT, {"stream": True, "stream_options": {"include_usage": True}}, True, False),
    (CHAT, {"stream": True}, False, False),
    (CHAT, {"stream": False}, True, False),
    (CHAT, {}, True, False),
    (CHAT, {"stream": True, "stream_options": "yes"}, True, False),
    (RESPONSES, {"stream": True}, True, False),
    (EMBEDDINGS, {"stream": True}, True, False),
])
def test_adds_stream_usage(endpoint: str, body: dict[str, object], enabled: bool,
                           expected: bool) -> None:
    assert adds_stream_usage(endpoint, body, enabled) is expected


def test_with_stream_usage_keeps_other_options() -> None:
    body = {"stream": True, "stream_options": {"include_obfuscation": False}}
    assert with_stream_usage(body) == {
        "stream": True, "stream_options": {"include_obfuscation": False, "include_usage": True}}
    assert body["stream_options"] == {"include_obfuscation": False}  # the app's copy untouched


# --------------------------------------------------------------------------- streams

def chat_stream(with_usage: bool, separators: tuple[str, str] = (",", ":")) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    if with_usage:
        base["usage"] = None
    events = []
    for delta, finish in (({"role": "assistant", "content": ""}, None),
                          ({"content": "hello"}, None), ({}, "stop")):
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        events.append(b"data: " + json.dumps(chunk, separators=separators).encode() + b"\n\n")
    if with_usage:
        last = {**base, "choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 2,
                                                  "total_tokens": 8}}
        events.append(b"data: " + json.dumps(last, separators=separators).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def run_stream(stream: object, body: bytes, size: int) -> bytes:
    """As mitmproxy calls a `response.stream`: never an empty chunk mid-stream."""
    assert callable(stream)
    out = []
    for i in range(0, len(body), size):
        sent = stream(body[i:i + size])
        assert sent != b"", "an empty chunk would end a chunked reply"
        out.append(b"".join(sent) if isinstance(sent, tuple) else sent)
    return b"".join(out) + stream(b"")


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
def test_tap_finds_chat_usage_and_passes_bytes_untouched(size: int) -> None:
    found: list[tuple[Usage, str | None]] = []
    body = chat_stream(with_usage=True)
    assert run_stream(UsageTap(lambda u, m: found.append((u, m))), body, size) == body
    assert found == [(Usage(6, 2), "m")]


@pytest.mark.parametrize("size", [1, 5, 300])
def test_tap_finds_responses_usage_in_completed_event(size: int) -> None:
    found: list[tuple[Usage, str | None]] = []
    created = {"type": "response.created", "response": {"usage": None}}
    done = {"type": "response.completed", "response": {"model": "gpt-oss-120b",
                                                       "usage": RESPONSES_USAGE}}
    body = (b"event: response.created\r\ndata: " + json.dumps(created).encode() + b"\r\n\r\n"
            b"event: response.completed\r\ndata: " + json.dumps(done).encode() + b"\r\n\r\n")
    assert run_stream(UsageTap(lambda u, m: found.append((u, m))), body, size) == body
    assert found == [(Usage(30, 9, 8, 3), "gpt-oss-120b")]


def test_tap_without_usage_reports_nothing_and_handles_unterminated_tail() -> None:
    found: list[tuple[Usage, str | None]] = []
    body = chat_stream(with_usage=False)
    assert run_stream(UsageTap(lambda u, m: found.append((u, m))), body, 9) == body
    assert found == []
    tail = b'data: {"usage":{"prompt_tokens":1}}'  # no blank line: dispatched at the end
    assert run_stream(UsageTap(lambda u, m: found.append((u, m))), tail, 4) == tail
    assert found == [(Usage(input=1), None)]


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
@pytest.mark.parametrize("size", [1, 3, 11, 64, 100_000])
def test_strip_gives_the_stream_the_app_would_have_had(
        size: int, separators: tuple[str, str]) -> None:
    found: list[tuple[Usage, str | None]] = []
    stripped = run_stream(UsageTap(lambda u, m: found.append((u, m)), strip=True),
                          chat_stream(True, separators), size)
    assert stripped == chat_stream(False, separators)
    assert found == [(Usage(6, 2), "m")]


def test_strip_leaves_a_stream_without_usage_alone() -> None:
    body = chat_stream(with_usage=False)
    assert run_stream(UsageTap(lambda u, m: None, strip=True), body, 5) == body


def test_strip_composes_with_the_next_filter_and_flushes_it() -> None:
    def upper(chunk: bytes) -> bytes:
        return chunk.upper()
    body = chat_stream(True)
    assert run_stream(UsageTap(lambda u, m: None, upper, strip=True), body, 6) == \
        chat_stream(False).upper()


def test_model_of_reply_and_json_bytes() -> None:
    assert model_of({"model": "a"}) == "a"
    assert model_of({"type": "response.completed", "response": {"model": "b"}}) == "b"
    assert model_of({"model": 3}) is None and model_of([]) is None
    raw = json.dumps({"id": "x", "model": "gpt-oss-120b", "choices": [
        {"message": {"content": '"model": "fake"'}}]}).encode()
    assert model_in_json(raw) == "gpt-oss-120b"
    assert model_in_json(b'{"data": []}') is None


def test_large_json_reply_usage_read_from_its_tail() -> None:
    found: list[tuple[Usage, str | None]] = []
    vectors = [{"object": "embedding", "index": i, "embedding": [0.25] * 400}
               for i in range(20)]
    body = json.dumps({"object": "list", "data": vectors, "model": "bge-m3",
                       "usage": {"prompt_tokens": 40, "total_tokens": 40}}).encode()
    assert len(body) > 5 * JsonUsageTail.KEEP
    tail = JsonUsageTail(lambda u, m: found.append((u, m)), lambda chunk: chunk)
    assert run_stream(tail, body, 1000) == body
    assert found == [(Usage(input=40), None)]

"""The byte-level model restore agrees with `restore_model` wherever it answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bastion_edge.core.reply_model import model_bytes_restorer, restore_model
from bastion_edge.streams.sse import SseRewriter

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-oss-120b",
         "choices": [{"index": 0, "delta": {"content": "hi"}}]}
CASES: list[Any] = [
    CHUNK,
    {**CHUNK, "choices": [{"index": 0, "delta": {"content": '{"model":"gpt-oss-120b"}'}}]},
    {"type": "response.created", "response": {"id": "r1", "model": "gpt-oss-120b"}},
    {**CHUNK, "model": "gpt-oss-120b-2025-01"},          # another id: the JSON path
    {"object": "model", "id": "gpt-oss-120b"},             # a model object: the JSON path
    {"id": "c2", "choices": []},                           # no model at all: unchanged
    {**CHUNK, "model": 'we"ird\\id'},
]


@pytest.mark.parametrize("obj", CASES)
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_fast_result_equals_the_json_rewrite_or_defers(
    obj: dict[str, Any], separators: tuple[str, str]
) -> None:
    raw = json.dumps(obj, separators=separators).encode()
    fast = model_bytes_restorer("gpt-4o", "gpt-oss-120b")(raw)
    expected = json.loads(raw)
    restore_model(expected, "gpt-4o")
    if fast is not None:
        assert json.loads(fast) == expected


def test_the_common_chunk_is_answered_without_parsing() -> None:
    raw = json.dumps(CHUNK, separators=(",", ":")).encode()
    assert model_bytes_restorer("gpt-4o", "gpt-oss-120b")(raw) == raw.replace(
        b'"gpt-oss-120b"', b'"gpt-4o"')
    untouched = b'{"id":"c2","choices":[]}'
    assert model_bytes_restorer("gpt-4o", "gpt-oss-120b")(untouched) is untouched
    assert model_bytes_restorer("gpt-4o", None)(raw) is None  # unknown upstream id


def test_rewriter_with_fast_path_sends_the_same_events() -> None:
    events = b"".join(b"data: " + json.dumps(obj).encode() + b"\n\n" for obj in CASES)
    events += b"data: [DONE]\n\n"

    def run(**kwargs: Any) -> list[Any]:
        rewriter = SseRewriter(lambda obj: restore_model(obj, "gpt-4o"), **kwargs)
        out = b"".join(rewriter(events[i:i + 7]) for i in range(0, len(events), 7))
        out += rewriter(b"")
        return [json.loads(line[6:]) if line.startswith(b"data: {") else line
                for line in out.split(b"\n\n") if line]

    fast = model_bytes_restorer("gpt-4o", "gpt-oss-120b")
    assert run(fast=fast) == run()

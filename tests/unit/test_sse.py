"""SseRewriter: line-wise rewriting of event streams, no added latency."""

from __future__ import annotations

import json
from typing import Any

from bastion_edge.core.reply_model import restore_model
from bastion_edge.streams.sse import SseRewriter

UPSTREAM = "gpt-oss-120b"
ORIGINAL = "gpt-4o"


def chunk_event(i: int, model: str = UPSTREAM) -> bytes:
    obj = {"id": f"c{i}", "object": "chat.completion.chunk", "model": model,
           "choices": [{"index": 0, "delta": {"content": f"tok{i} \u00e9"}}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


STREAM = (
    b": keep-alive comment mentioning \"model\": \"gpt-oss-120b\"\n\n"
    + b"event: message\n"
    + chunk_event(0)
    + chunk_event(1).replace(b"\n", b"\r\n")
    + b"data: not json at all\n\n"
    + b"data: [1, 2]\n\n"
    + b'data: {"broken": \n\n'
    + b"retry: 1000\n\n"
    + chunk_event(2)
    + b"data: [DONE]\n\n"
)


def restore(obj: dict[str, Any]) -> bool:
    return restore_model(obj, ORIGINAL)


def run(rewriter: SseRewriter, data: bytes, cuts: list[int]) -> bytes:
    out = []
    start = 0
    for cut in [*cuts, len(data)]:
        out.append(rewriter(data[start:cut]))
        start = cut
    out.append(rewriter(b""))
    return b"".join(out)


def expected_stream() -> bytes:
    out = []
    for line in STREAM.splitlines(keepends=True):
        if line.startswith(b"data: {\"id\""):
            ending = line[len(line.rstrip(b"\r\n")):]
            obj = json.loads(line[6:])
            obj["model"] = ORIGINAL
            line = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + ending
        out.append(line)
    return b"".join(out)


def test_sse_model_restored_and_everything_else_untouched() -> None:
    out = run(SseRewriter(restore), STREAM, [])
    assert out == expected_stream()
    assert out.count(b'"model":"gpt-4o"') == 3
    assert b"gpt-oss-120b" not in out.replace(b'"model": "gpt-oss-120b"', b"")
    assert b"data: [DONE]\n\n" in out
    assert b": keep-alive comment mentioning \"model\": \"gpt-oss-120b\"\n" in out
    assert b"data: not json at all\n" in out
    assert b'data: {"broken": \n' in out
    assert b"\r\n\r\n" in out  # CRLF line endings kept


def test_sse_lines_split_at_every_offset() -> None:
    expected = expected_stream()
    for cut in range(1, len(STREAM)):
        assert run(SseRewriter(restore), STREAM, [cut]) == expected, f"cut at {cut}"


def test_sse_one_byte_chunks() -> None:
    assert run(SseRewriter(restore), STREAM, list(range(1, len(STREAM)))) == expected_stream()


def test_sse_complete_lines_emitted_without_delay() -> None:
    rewriter = SseRewriter(restore)
    first = chunk_event(0)
    out = rewriter(first)
    assert out.endswith(b"\n\n")
    assert json.loads(out[6:])["model"] == ORIGINAL
    # a partial line is held back, then released with its newline
    event = chunk_event(1)
    assert rewriter(event[:20]) == b""
    released = rewriter(event[20:])
    assert json.loads(released[6:])["model"] == ORIGINAL
    assert rewriter(b"") == b""


def test_sse_done_and_comments_pass_identically() -> None:
    data = b": ping\n\ndata: [DONE]\n\n"
    calls: list[dict[str, Any]] = []

    def spy(obj: dict[str, Any]) -> bool:
        calls.append(obj)
        return True

    assert SseRewriter(spy)(data) == data
    assert calls == []


def test_sse_unchanged_json_line_kept_byte_identical() -> None:
    line = b'data: {"model": "gpt-4o",   "x": 1}\n\n'  # already the original id
    assert SseRewriter(restore)(line) == line


def test_sse_trailing_line_without_newline_flushed_rewritten() -> None:
    rewriter = SseRewriter(restore)
    assert rewriter(b'data: {"model":"gpt-oss-120b"}') == b""
    assert rewriter(b"") == b'data: {"model":"gpt-4o"}'


def test_sse_responses_events_restore_nested_model() -> None:
    event = {"type": "response.created", "response": {"id": "r1", "model": UPSTREAM}}
    line = b"event: response.created\ndata: " + json.dumps(event).encode() + b"\n\n"
    out = SseRewriter(restore)(line)
    assert out.startswith(b"event: response.created\n")
    data = json.loads(out.split(b"\n")[1][6:])
    assert data["response"]["model"] == ORIGINAL


def test_sse_events_seen_counts_data_lines() -> None:
    rewriter = SseRewriter(restore)
    run(rewriter, STREAM, [17, 100])
    assert rewriter.events_seen == 7


def test_restore_model_variants() -> None:
    chat = {"object": "chat.completion", "model": UPSTREAM}
    assert restore_model(chat, ORIGINAL) is True
    assert chat["model"] == ORIGINAL
    model_obj = {"object": "model", "id": UPSTREAM, "owned_by": "bastion"}
    assert restore_model(model_obj, ORIGINAL) is True
    assert model_obj["id"] == ORIGINAL
    untouched = {"object": "list", "data": [{"id": UPSTREAM}]}
    assert restore_model(untouched, ORIGINAL) is False
    assert untouched == {"object": "list", "data": [{"id": UPSTREAM}]}
    same = {"model": ORIGINAL, "response": {"model": ORIGINAL}}
    assert restore_model(same, ORIGINAL) is False

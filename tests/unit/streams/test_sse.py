"""SseRewriter: line-wise rewriting of event streams, no added latency."""

from __future__ import annotations

import json
from typing import Any

from bastion_edge.core.reply_model import restore_model
from bastion_edge.streams.sse import SseEvents, SseLines, SseRewriter

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


# --- the one line splitter and event assembler every SSE consumer uses

MIXED = (b'data: {"model":"gpt-oss-120b",\r\ndata: "n":1}\r\n\r\n'  # one object, two lines
         b'event: x\rdata: {"model":"gpt-oss-120b"}\r\r'            # lone CR line endings
         b'data: [DONE]\n\n')


def test_lines_split_on_crlf_lf_and_lone_cr_across_any_cut() -> None:
    for cut in range(len(MIXED) + 1):
        lines = SseLines()
        block = lines.feed(MIXED[:cut]) + lines.feed(MIXED[cut:]) + lines.flush()
        assert block == MIXED, f"cut at {cut}"
        events = SseEvents()
        assert events.feed(MIXED) == [b'{"model":"gpt-oss-120b",\n"n":1}',
                                      b'{"model":"gpt-oss-120b"}', b"[DONE]"]


def test_cr_at_a_chunk_end_waits_for_a_possible_lf() -> None:
    lines = SseLines()
    assert lines.feed(b"data: a\r") == b""
    assert lines.feed(b"\ndata: b\r") == b"data: a\r\n"
    assert lines.feed(b"x") == b"data: b\r"


def test_multiline_json_event_rewritten_as_one_line_and_lone_cr_rewritten() -> None:
    for cut in range(len(MIXED) + 1):
        out = run(SseRewriter(restore), MIXED, [cut])
        assert out.count(b'"model":"gpt-4o"') == 2, f"cut at {cut}"
        assert b'data: {"model":"gpt-4o","n":1}\r\n\r\n' in out
        assert out.endswith(b"data: [DONE]\n\n")


def test_stream_bytes_identical_when_nothing_changes_at_every_cut() -> None:
    def keep(obj: dict[str, object]) -> bool:
        return False

    for cut in range(len(MIXED) + 1):
        assert run(SseRewriter(keep), MIXED, [cut]) == MIXED

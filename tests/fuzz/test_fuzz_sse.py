"""The SSE line splitter, event assembler and model-restoring rewriter under arbitrary
events and chunking: events preserved, untouched bytes exact, rewriting idempotent."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from strategies import JSON_VALUES

from bastion_edge.core.reply_model import restore_model
from bastion_edge.streams.sse import SseEvents, SseLines, SseRewriter

ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        end = draw(ENDINGS)
        kind = draw(st.sampled_from(["json", "split", "done", "comment", "event", "junk"]))
        if kind == "json":
            obj: dict[str, Any] = {"model": draw(st.sampled_from(["gpt-oss-120b", "x"])),
                                   "v": draw(JSON_VALUES)}
            out += b"data: " + json.dumps(obj).encode() + end + end
        elif kind == "split":  # one object over two data lines
            text = json.dumps({"model": "gpt-oss-20b", "k": [1, 2]})
            half = len(text) // 2
            out += b"data: " + text[:half].encode() + end + b"data: " \
                + text[half:].encode() + end + end
        elif kind == "done":
            out += b"data: [DONE]" + end + end
        elif kind == "comment":
            out += b": keep-alive" + end
        elif kind == "event":
            out += b"event: response.created" + end
        else:
            out += draw(st.binary(max_size=40))
    return out


def feed(stream: bytes, cuts: list[int], consumer: Any) -> bytes:
    out, at = b"", 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        if cut > at:  # b"" means the end of the stream to these consumers
            out += consumer(stream[at:cut])
            at = cut
    return out + (consumer(stream[at:]) if at < len(stream) else b"") + consumer(b"")


def events(stream: bytes) -> list[bytes]:
    assembler = SseEvents()
    return assembler.feed(stream) + assembler.finish()


@given(streams(), st.lists(st.integers(min_value=0), max_size=10))
def test_lines_reassemble_exactly(stream: bytes, cuts: list[int]) -> None:
    lines = SseLines()
    out, at = b"", 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        out += lines.feed(stream[at:cut])
        at = cut
    assert out + lines.feed(stream[at:]) + lines.flush() == stream


@given(streams(), st.lists(st.integers(min_value=0), max_size=10))
def test_rewriter_that_changes_nothing_is_byte_exact(stream: bytes, cuts: list[int]) -> None:
    assert feed(stream, cuts, SseRewriter(lambda obj: False)) == stream


@given(streams(), st.lists(st.integers(min_value=0), max_size=10))
def test_restored_events_keep_their_content_and_rewriting_is_idempotent(
    stream: bytes, cuts: list[int]
) -> None:
    out = feed(stream, cuts, SseRewriter(lambda obj: restore_model(obj, "gpt-4o")))
    before, after = events(stream), events(out)
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        try:
            parsed = json.loads(old)
        except ValueError:
            assert new == old
            continue
        if isinstance(parsed, dict):
            restore_model(parsed, "gpt-4o")
            assert json.loads(new) == parsed
        else:
            assert new == old
    again = feed(out, cuts, SseRewriter(lambda obj: restore_model(obj, "gpt-4o")))
    assert again == out

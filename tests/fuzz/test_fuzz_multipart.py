"""The multipart field rewriter, buffered and streamed in arbitrary chunks: file bytes
byte-exact, every `model` field mapped (to the first one's mapping), streamed ==
buffered, rewriting idempotent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion_edge.streams.multipart import FormFieldRewriter, replace_form_field

BOUNDARY = b"fuzzBoundary123"
MAPPING = {b"whisper-1": b"whisper-large-v3", b"gpt-4o-transcribe": b"whisper-large-v3"}
NASTY = st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"\r\n", b"--", BOUNDARY, b"\r\n--" + BOUNDARY, b"model", b"\x00", b"x" * 17, b"\r"]),
    max_size=30).map(b"".join)


def mapped(value: bytes) -> bytes:
    return MAPPING.get(value, value)


def part(name: bytes, value: bytes, filename: bytes | None = None) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return b"--" + BOUNDARY + b"\r\n" + disposition + b"\r\n\r\n" + value + b"\r\n"


@st.composite
def forms(draw: st.DrawFn) -> tuple[bytes, bytes, list[bytes]]:
    """(body, file bytes, model values in order)."""
    # A real client picks a boundary its content does not hold (RFC 2046 5.1.1).
    file_bytes = draw(NASTY.filter(lambda b: b"\r\n--" + BOUNDARY not in b"\r\n" + b))
    models = draw(st.lists(st.sampled_from([*MAPPING, b"other", b""]), max_size=3))
    fields = [(m, part(b"model", m)) for m in models]
    fields += [(None, part(b"language", b"en")), (None, part(b"file", file_bytes, b"a.wav"))]
    order = draw(st.permutations(fields))
    in_order = [m for m, _ in order if m is not None]
    return b"".join(p for _, p in order) + b"--" + BOUNDARY + b"--\r\n", file_bytes, in_order


def stream(body: bytes, cuts: list[int]) -> tuple[bytes, FormFieldRewriter]:
    rewriter = FormFieldRewriter(BOUNDARY, b"model", mapped)
    out, at = b"", 0
    for cut in sorted(c % (len(body) + 1) for c in cuts):
        if cut > at:  # b"" means the end of the body to the rewriter
            out += rewriter.feed(body[at:cut])
            at = cut
    out += (rewriter.feed(body[at:]) if at < len(body) else b"") + rewriter.feed(b"")
    return out, rewriter


@given(forms(), st.lists(st.integers(min_value=0), max_size=12))
def test_streamed_equals_buffered_and_file_bytes_are_exact(
    form: tuple[bytes, bytes, list[bytes]], cuts: list[int]
) -> None:
    body, file_bytes, models = form
    buffered, found = replace_form_field(body, BOUNDARY, b"model", mapped)
    streamed, rewriter = stream(body, cuts)
    assert streamed == buffered
    assert rewriter.count == len(models)
    assert found == (models[0] if models else None)
    assert part(b"file", file_bytes, b"a.wav") in buffered  # byte-exact
    if models:  # every `model` part carries the first one's mapping
        assert buffered.count(part(b"model", mapped(models[0]))) >= len(models)
    again, _ = replace_form_field(buffered, BOUNDARY, b"model", mapped)
    assert again == buffered  # idempotent


@given(NASTY, st.lists(st.integers(min_value=0), max_size=8))
def test_arbitrary_bytes_never_raise_and_pass_unchanged_without_a_model(
    body: bytes, cuts: list[int]
) -> None:
    streamed, rewriter = stream(body, cuts)
    if rewriter.count == 0:
        assert streamed == body

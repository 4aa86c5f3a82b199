"""FormFieldRewriter: the `model` field of multipart bodies replaced at byte level, streaming."""

from __future__ import annotations

import hashlib
import random

import pytest

from bastion_edge.streams.form_checks import form_field_error
from bastion_edge.streams.multipart import (
    MAX_FIELD_VALUE,
    FormFieldRewriter,
    boundary_from_content_type,
    replace_form_field,
)

BOUNDARY = b"----BastionTestBoundary7MA4YWxkTrZu0gW"
DELIMITER = b"\r\n--" + BOUNDARY
MAPPING = {b"whisper-1": b"whisper-large-v3", b"gpt-4o-transcribe": b"whisper-large-v3"}

# Everything a naive parser trips over, none of it a real delimiter.
NASTY_FILE = (
    b"RIFF\x00\x00\x00\x00WAVE\r\n\r\n\x00\x00\r\r\n\n--\r\n--"
    + b"\r\n--" + BOUNDARY[:-1] + b"X"  # delimiter minus its last byte
    + b"\r\n--" + BOUNDARY[:10]
    + BOUNDARY  # the boundary itself, but not after CRLF--
    + b"--" + BOUNDARY[:-3]
    + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    + bytes(range(256)) * 3
    + b"\r\n-\r\n--\r\n---"
    + b"\r"  # ends with CR: the delimiter's CRLF follows
)


def part(name: bytes, value: bytes, filename: bytes | None = None) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"'
    headers = disposition
    if filename is not None:
        headers += b'; filename="' + filename + b'"\r\nContent-Type: audio/wav'
    return b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def rewrite_model(old: bytes) -> bytes:
    return MAPPING.get(old, old)


def feed_in_chunks(data: bytes, sizes: list[int]) -> tuple[bytes, FormFieldRewriter]:
    rewriter = FormFieldRewriter(BOUNDARY, b"model", rewrite_model)
    out = bytearray()
    at = 0
    for size in sizes:
        out += rewriter.feed(data[at:at + size])
        at += size
    assert at == len(data)
    out += rewriter.feed(b"")
    return bytes(out), rewriter


MODEL_FIRST = body(part(b"model", b"whisper-1"), part(b"file", NASTY_FILE, b"a.wav"),
                   part(b"language", b"en"))
MODEL_FIRST_EXPECTED = body(part(b"model", b"whisper-large-v3"),
                            part(b"file", NASTY_FILE, b"a.wav"), part(b"language", b"en"))
MODEL_LAST = body(part(b"file", NASTY_FILE, b"a.wav"), part(b"language", b"en"),
                  part(b"model", b"whisper-1"))
MODEL_LAST_EXPECTED = body(part(b"file", NASTY_FILE, b"a.wav"), part(b"language", b"en"),
                           part(b"model", b"whisper-large-v3"))
NO_MODEL = body(part(b"file", NASTY_FILE, b"model"), part(b"language", b"en"))

CASES = [
    pytest.param(MODEL_FIRST, MODEL_FIRST_EXPECTED, b"whisper-1", id="model-before-file"),
    pytest.param(MODEL_LAST, MODEL_LAST_EXPECTED, b"whisper-1", id="model-after-file"),
    pytest.param(NO_MODEL, NO_MODEL, None, id="model-absent"),
]


def test_nasty_file_contains_no_real_delimiter() -> None:
    # Guards the fixture itself: the file part must be legal multipart content.
    assert DELIMITER not in NASTY_FILE
    assert b"\x00" in NASTY_FILE and b"\r\n--" in NASTY_FILE


@pytest.mark.parametrize(("data", "expected", "found"), CASES)
def test_multipart_model_replaced_byte_exact(
    data: bytes, expected: bytes, found: bytes | None
) -> None:
    out, original = replace_form_field(data, BOUNDARY, b"model", rewrite_model)
    assert out == expected
    assert original == found
    if found is not None:
        # Only the model value differs: everything around it is byte-identical.
        prefix, _, suffix = data.partition(b"\r\n\r\nwhisper-1\r\n--" + BOUNDARY)
        assert out.startswith(prefix) and out.endswith(suffix)


@pytest.mark.parametrize(("data", "expected", "found"), CASES)
def test_multipart_every_chunk_size_gives_whole_body_result(
    data: bytes, expected: bytes, found: bytes | None
) -> None:
    whole, _ = replace_form_field(data, BOUNDARY, b"model", rewrite_model)
    assert whole == expected
    for size in range(1, len(data) + 1):
        sizes = [size] * (len(data) // size) + ([len(data) % size] if len(data) % size else [])
        out, rewriter = feed_in_chunks(data, sizes)
        assert out == whole, f"chunk size {size}"
        assert rewriter.found == found, f"chunk size {size}"


@pytest.mark.parametrize(("data", "expected", "found"), CASES)
def test_multipart_random_splits_give_whole_body_result(
    data: bytes, expected: bytes, found: bytes | None
) -> None:
    rng = random.Random(20260412)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        out, rewriter = feed_in_chunks(data, sizes)
        assert out == expected, f"cuts {cuts}"
        assert rewriter.found == found


def test_multipart_every_model_field_gets_the_first_fields_mapping() -> None:
    """A second `model` field must not reach upstream unmapped, nor disagree (issue 23
    row 12: `tts-1` after `whisper-1` went through as sent)."""
    calls: list[bytes] = []

    def record(old: bytes) -> bytes:
        calls.append(old)
        return b"NEW" if old == b"whisper-1" else old  # the second would stay unmapped

    data = body(part(b"model", b"whisper-1"), part(b"model", b"tts-1"))
    rewriter = FormFieldRewriter(BOUNDARY, b"model", record)
    out = rewriter.feed(data) + rewriter.feed(b"")
    assert calls == [b"whisper-1"]
    assert rewriter.found == b"whisper-1"
    assert rewriter.count == 2
    assert out == body(part(b"model", b"NEW"), part(b"model", b"NEW"))


@pytest.mark.parametrize("disposition", [
    b"form-data; name=model",
    b"form-data; name = model ",
    b"form-data;name=model",
    b'form-data; NAME="model"',
    b'form-data; filename="x; name=y"; name=model',
    b"form-data; name*=UTF-8''mod%65l",
    b'form-data; name*0=mo; name*1="del"',
    b"form-data; name*0*=UTF-8''mo; name*1=del",
])
def test_multipart_unquoted_and_odd_name_forms_are_the_model_field(disposition: bytes) -> None:
    raw = (b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition
           + b"\r\n\r\nwhisper-1\r\n--" + BOUNDARY + b"--\r\n")
    out, found = replace_form_field(raw, BOUNDARY, b"model", rewrite_model)
    assert found == b"whisper-1"
    assert b"whisper-large-v3" in out and b"whisper-1" not in out


def test_multipart_a_name_inside_a_quoted_filename_names_nothing() -> None:
    raw = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
           b'filename="a; name=model"\r\n\r\nwhisper-1\r\n--' + BOUNDARY + b"--\r\n")
    assert replace_form_field(raw, BOUNDARY, b"model", rewrite_model) == (raw, None)


def test_a_model_part_after_a_part_too_large_to_inspect_is_still_replaced() -> None:
    huge_headers = (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"x\"\r\n"
                    + b"X-Pad: " + b"p" * (2 * MAX_FIELD_VALUE) + b"\r\n\r\nv\r\n")
    for first in (huge_headers, part(b"model", b"m" * (2 * MAX_FIELD_VALUE))):
        data = body(first, part(b"model", b"whisper-1"))
        sizes = [4096] * (len(data) // 4096) + [len(data) % 4096]
        out, rewriter = feed_in_chunks(data, sizes)
        assert rewriter.overflowed
        assert out == body(first, part(b"model", b"whisper-large-v3"))


def test_form_checks_count_duplicate_fields_themselves() -> None:
    data = body(part(b"model", b"whisper-1"), part(b"model", b"tts-1"))
    error = form_field_error(1, data, BOUNDARY)
    assert error is not None and error.code == "duplicate_field"
    assert form_field_error(1, body(part(b"model", b"whisper-1")), BOUNDARY) is None


def test_multipart_filename_model_is_not_the_model_field() -> None:
    data = body(part(b"file", b"x", b"model"), part(b"modelx", b"whisper-1"))
    out, found = replace_form_field(data, BOUNDARY, b"model", rewrite_model)
    assert out == data
    assert found is None


def test_multipart_preamble_kept() -> None:
    data = b"This is a preamble.\r\n" + body(part(b"model", b"whisper-1"))
    out, found = replace_form_field(data, BOUNDARY, b"model", rewrite_model)
    assert out == b"This is a preamble.\r\n" + body(part(b"model", b"whisper-large-v3"))
    assert found == b"whisper-1"


def test_multipart_oversized_streamed_field_value_passes_unchanged_in_bounded_memory() -> None:
    data = body(part(b"model", b"m" * (2 * MAX_FIELD_VALUE)), part(b"x", b"y"))
    sizes = [4096] * (len(data) // 4096) + [len(data) % 4096]
    rewriter = FormFieldRewriter(BOUNDARY, b"model", lambda old: b"REPLACED")
    out = bytearray()
    at = 0
    for size in sizes:
        out += rewriter.feed(data[at:at + size])
        at += size
        assert len(rewriter._buf) <= MAX_FIELD_VALUE + 4096
    out += rewriter.feed(b"")
    assert bytes(out) == data
    assert rewriter.found is None


def test_multipart_empty_body() -> None:
    assert replace_form_field(b"", BOUNDARY, b"model", rewrite_model) == (b"", None)


def test_multipart_complete_lines_not_delayed() -> None:
    rewriter = FormFieldRewriter(BOUNDARY, b"model", rewrite_model)
    first = part(b"model", b"whisper-1") + b"--" + BOUNDARY + b"\r\n"
    out = rewriter.feed(first)
    # The replaced model is out as soon as the delimiter after it arrived.
    # (the CRLF after it waits for the next part's headers: the field may come again)
    assert out == part(b"model", b"whisper-large-v3") + b"--" + BOUNDARY
    rest = b"Content-Disposition: form-data; name=\"file\"\r\n\r\n\x00\x01"
    assert rewriter.feed(rest) + rewriter.feed(b"") == b"\r\n" + rest  # unchanged


def test_multipart_file_bytes_flow_through_with_bounded_holdback() -> None:
    rewriter = FormFieldRewriter(BOUNDARY, b"model", rewrite_model)
    head = part(b"file", b"", b"a.wav")[:-2]  # headers done, file content starts
    sent = len(rewriter.feed(head))
    for _ in range(100):
        sent += len(rewriter.feed(b"\x00\r\n-" * 250))
    received = len(head) + 100 * 1000
    assert received - sent <= len(DELIMITER) - 1


def test_multipart_25mb_streamed_in_bounded_memory() -> None:
    chunk_size = 64 * 1024
    block = (NASTY_FILE * (chunk_size // len(NASTY_FILE) + 1))[:chunk_size]
    blocks = 25 * 1024 * 1024 // chunk_size
    head = part(b"language", b"en") + b"--" + BOUNDARY + (
        b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n')
    tail_in = b"\r\n" + part(b"model", b"gpt-4o-transcribe") + b"--" + BOUNDARY + b"--\r\n"
    tail_out = b"\r\n" + part(b"model", b"whisper-large-v3") + b"--" + BOUNDARY + b"--\r\n"

    def chunks():
        yield head
        for _ in range(blocks):
            yield block
        # the model part after the file, itself split over feeds
        for i in range(0, len(tail_in), 7):
            yield tail_in[i:i + 7]

    rewriter = FormFieldRewriter(BOUNDARY, b"model", rewrite_model)
    digest = hashlib.sha256()
    max_buffer = 0
    for chunk in chunks():
        digest.update(rewriter.feed(chunk))
        max_buffer = max(max_buffer, len(rewriter._buf))
    digest.update(rewriter.feed(b""))

    expected = hashlib.sha256(head)
    for _ in range(blocks):
        expected.update(block)
    expected.update(tail_out)
    assert digest.hexdigest() == expected.hexdigest()
    assert rewriter.found == b"gpt-4o-transcribe"
    assert max_buffer <= 70 * 1024
    assert max_buffer < len(DELIMITER) + 200  # in practice only a delimiter's worth or a part head


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc123", b"abc123"),
        ('multipart/form-data; boundary="quoted-b"', b"quoted-b"),
        ("Multipart/Form-Data; charset=utf-8; boundary=xyz; other=1", b"xyz"),
        ("multipart/form-data", None),
        ("application/json", None),
        ("multipart/mixed; boundary=abc", None),
    ],
)
def test_boundary_from_content_type(content_type: str, boundary: bytes | None) -> None:
    assert boundary_from_content_type(content_type) == boundary

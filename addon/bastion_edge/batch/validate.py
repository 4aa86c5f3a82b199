"""A batch's input file checked before any line runs (OpenAI's `validating` step).

Bounded whatever the file: a line is held only up to the body limit (a longer one is
an error, skipped to its end), and reading stops at the first line past `max_lines`.
"""

from __future__ import annotations

from bastion_edge.batch import batch_shapes as shapes
from bastion_edge.batch.batch_shapes import Json, LineInvalid
from bastion_edge.batch.batch_store import Blobs
from bastion_edge.batch.blobs import MAX_LINE_BYTES, LineTooLong, split_lines

MAX_ERRORS = 100


def check_input(blobs: Blobs, file_id: str, sealed: bool, endpoint: str,
                max_lines: int, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[int, list[Json]]:
    """(lines, errors) of an input file: every line valid, custom_ids unique."""
    seen: set[str] = set()
    errors: list[Json] = []
    total = 0
    lines = split_lines(blobs.read(file_id, sealed), max_line_bytes)
    for number, text in enumerate(lines, start=1):
        if not text.strip() and not isinstance(text, LineTooLong):
            continue
        total += 1
        if total > max_lines:
            errors.append({"code": "too_many_lines", "message": "The input file has more "
                           f"than {max_lines} lines (rules: batches.max_lines).",
                           "param": "input_file_id", "line": None})
            break
        if isinstance(text, LineTooLong):
            errors.append({"code": "line_too_large", "message":
                           f"line {number} has {text.size} bytes; a request body may have "
                           f"at most {max_line_bytes}.", "param": "body", "line": number})
        else:
            _check_line(text, number, endpoint, seen, errors)
        if len(errors) >= MAX_ERRORS:
            break
    if total == 0 and not errors:
        errors.append({"code": "empty_file", "message": "The input file has no lines.",
                       "param": "input_file_id", "line": None})
    return total, errors


def _check_line(text: bytes, number: int, endpoint: str, seen: set[str],
                errors: list[Json]) -> None:
    try:
        line = shapes.parse_line(text, number, endpoint)
    except LineInvalid as e:
        errors.append(e.error())
        return
    if line.custom_id in seen:
        errors.append({"code": "duplicate_custom_id", "message":
                       f"line {number}: custom_id {line.custom_id!r} is used twice",
                       "param": "custom_id", "line": number})
    seen.add(line.custom_id)

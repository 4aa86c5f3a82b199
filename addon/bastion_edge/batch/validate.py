"""A batch's input file checked before any line runs (OpenAI's `validating` step)."""

from __future__ import annotations

from bastion_edge.batch import shapes
from bastion_edge.batch.shapes import Json, LineInvalid
from bastion_edge.batch.store import Blobs, blob_lines

MAX_ERRORS = 100


def check_input(blobs: Blobs, file_id: str, sealed: bool, endpoint: str,
                max_lines: int) -> tuple[int, list[Json]]:
    """(lines, errors) of an input file: every line valid, custom_ids unique."""
    seen: set[str] = set()
    errors: list[Json] = []
    total = 0
    for number, text in enumerate(blob_lines(blobs, file_id, sealed), start=1):
        if not text.strip():
            continue
        total += 1
        try:
            line = shapes.parse_line(text, number, endpoint)
        except LineInvalid as e:
            errors.append(e.error())
        else:
            if line.custom_id in seen:
                errors.append({"code": "duplicate_custom_id", "message":
                               f"line {number}: custom_id {line.custom_id!r} is used twice",
                               "param": "custom_id", "line": number})
            seen.add(line.custom_id)
        if len(errors) >= MAX_ERRORS:
            break
    if total == 0 and not errors:
        errors.append({"code": "empty_file", "message": "The input file has no lines.",
                       "param": "input_file_id", "line": None})
    if total > max_lines:
        errors.append({"code": "too_many_lines", "message": f"The input file has {total} "
                       f"lines; at most {max_lines} (rules: batches.max_lines).",
                       "param": "input_file_id", "line": None})
    return total, errors

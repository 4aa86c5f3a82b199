"""Compare the shape (not the values) of two JSON replies: OpenAI's and Bastion's.

A shape is the set of key paths and the JSON type at each; list items are compared
by their first element. Values differ between providers by nature (ids, text,
timings), so only structure is judged.
"""

from __future__ import annotations

from typing import Any

MAX_DIFFERENCES = 20


def shape(value: Any, path: str = "$") -> dict[str, str]:
    """Key path -> JSON type name."""
    out = {path: _type(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(shape(item, f"{path}.{key}"))
    elif isinstance(value, list) and value:
        out.update(shape(value[0], f"{path}[]"))
    return out


def shape_differences(expected: Any, actual: Any) -> list[str]:
    """Paths missing, added or of another type in `actual` compared to `expected`."""
    left, right = shape(expected), shape(actual)
    differences = []
    for path in sorted(left.keys() | right.keys()):
        if path not in right:
            differences.append(f"missing {path}")
        elif path not in left:
            differences.append(f"extra {path}")
        elif left[path] != right[path] and "null" not in (left[path], right[path]):
            differences.append(f"type {path}: {left[path]} vs {right[path]}")
    return differences[:MAX_DIFFERENCES]


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"

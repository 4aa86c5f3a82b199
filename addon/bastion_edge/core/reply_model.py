"""Which model id the app sees in replies: Bastion's, or its own original id restored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def restore_model(obj: dict[str, Any], original: str) -> bool:
    """Put `original` where a reply names its model; True if anything changed.

    Covers chat/completions/embeddings objects and chunks (`model`), Responses
    objects and their stream events (`response.model`), and model objects (`id`
    with `object: model`).
    """
    changed = False
    if isinstance(obj.get("model"), str) and obj["model"] != original:
        obj["model"] = original
        changed = True
    nested = obj.get("response")
    if isinstance(nested, dict) and nested.get("model") not in (None, original):
        nested["model"] = original
        changed = True
    if obj.get("object") == "model" and obj.get("id") != original:
        obj["id"] = original
        changed = True
    return changed


BytesRewrite = Callable[[bytes], "bytes | None"]


def model_bytes_restorer(original: str, upstream: str | None) -> BytesRewrite:
    """`restore_model` for one stream, on an event's raw JSON bytes where that is exact.

    Returns a function: the JSON with every `"model":"<upstream>"` made
    `"model":"<original>"`, the same bytes when no `"model"` is named at all (nothing
    `restore_model` could change), or None when it cannot tell from the bytes (another
    model id, spaced separators, an `"object":"model"`), so the caller parses the JSON.
    A JSON string cannot hide a match: inside one, quotes are escaped.
    """
    wanted = b'"model":' + json.dumps(upstream).encode() if upstream else b""
    replacement = b'"model":' + json.dumps(original).encode()

    def rewrite(value: bytes) -> bytes | None:
        if b'"model"' not in value:
            return value
        if not wanted:
            return None
        keys = value.count(b'"model"')
        hits = value.count(wanted)
        if hits == 0 or hits != keys:  # another value, `"model": "x"`, `"object":"model"`
            return None
        return value.replace(wanted, replacement)

    return rewrite

"""Which model id the app sees in replies: Bastion's, or its own original id restored."""

from __future__ import annotations

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

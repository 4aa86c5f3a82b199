"""What a buffered multipart form may not do: carry `model` twice, or hide it."""

from __future__ import annotations

from bastion_edge.errors import ApiError, bad_request
from bastion_edge.streams.multipart import MAX_FIELD_VALUE, FormFieldRewriter


def form_field_error(model_fields: int, raw: bytes, boundary: bytes) -> ApiError | None:
    """400 for two or more `model` fields (which one would upstream use?), or a `model`
    value / part header too large to inspect."""
    probe = FormFieldRewriter(boundary, b"model", lambda value: value)
    probe.feed(raw)
    probe.feed(b"")
    model_fields = max(model_fields, probe.count)
    if model_fields > 1:
        return bad_request(f"The form has {model_fields} 'model' fields; send one.",
                           "duplicate_field", "model")
    if probe.overflowed:
        return bad_request(f"A form part's headers or its 'model' value exceed what "
                           f"bastion-edge inspects ({MAX_FIELD_VALUE} bytes).",
                           "invalid_value", "model")
    return None

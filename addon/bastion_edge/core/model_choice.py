"""The planner's model choice: which Bastion model serves, which remain for a retry.

Pure. `choose_model` applies `select_candidates` (fallbacks, capabilities, the live list
given as a plain snapshot) to a request whose model is already mapped, and says why in
notes. `with_model_json` / `with_model_form` give the body a retry sends: the same bytes
with only the `model` value changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bastion_edge.config.schema import Rules
from bastion_edge.core.model_availability import (
    DEFAULT_MAX_ATTEMPTS,
    CapabilityRefusal,
    needs_from_json,
    refusal_error,
    select_candidates,
)
from bastion_edge.core.model_map import Resolution
from bastion_edge.core.plan import REWRITE_MODEL, Plan
from bastion_edge.streams.multipart import replace_form_field

# The body fields `needs_from_json` reads besides the content (which the planner has
# already scanned into facts: no second walk over the messages).
_NEED_FIELDS = ("tools", "functions", "response_format", "text")


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model to send first, the ones left for a 404 retry, and why."""

    model: str
    fallbacks: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    passed_over: tuple[str, str] | None = None  # (target, why): "unlisted", "tools", ...


def choose_model(
    target: str, endpoint: str, body: Mapping[str, Any], has_image: bool, prompt_tokens: int,
    rules: Rules, available: frozenset[str] | None,
) -> ModelChoice | None:
    """The choice for `target`, None when the rules leave nothing to choose (the fast path:
    no `fallbacks:` or `capabilities:` entry for it). Raises the 400
    `model_capability_unsupported` envelope when no model of the chain can serve."""
    if target not in rules.fallbacks and target not in rules.capabilities:
        return None
    asked = {k: body[k] for k in _NEED_FIELDS if k in body}
    needs = replace(needs_from_json(endpoint, asked), vision=has_image,
                    prompt_tokens=prompt_tokens)
    selected = select_candidates(target, needs, rules.capabilities, rules.fallbacks,
                                 available, DEFAULT_MAX_ATTEMPTS)
    if isinstance(selected, CapabilityRefusal):
        raise refusal_error(selected)
    first = selected.first
    reasons = dict(selected.skipped)
    notes = [f"model {model} skipped: {_SAYS[why]}" for model, why in selected.skipped
             if model != first]
    if selected.none_listed:
        notes.append(f"no capable model listed by Bastion: trying {first} anyway")
    return ModelChoice(first, selected.models[1:], tuple(notes),
                       None if first == target else (target, reasons.get(target, "unlisted")))


_SAYS = {
    "unlisted": "not listed by Bastion",
    "tools": "lacks tool calling",
    "json_schema": "lacks json_schema output",
    "vision": "lacks image input",
    "context_tokens": "prompt over its context_tokens",
}


# ------------------------------------------------------------------ the 404 retry

NOT_FOUND = "not_found"  # the fallback reason of a retry after 404 model_not_found


def retried_on(plan: Plan, model: str) -> Plan:
    """The plan once `model` (the next of `plan.fallback_models`) was sent after Bastion
    answered 404 model_not_found for `plan.upstream_model`."""
    failed = plan.upstream_model or ""
    remaining = plan.fallback_models
    remaining = remaining[remaining.index(model) + 1:] if model in remaining else ()
    resolution = plan.resolution
    requested = plan.original_model or failed
    if resolution is not None:
        resolution = replace(resolution, upstream=model)
    elif model != requested:
        resolution = Resolution(requested, model, "fallbacks", 0)
    rewrites = plan.rewrites if REWRITE_MODEL in plan.rewrites else (*plan.rewrites,
                                                                     REWRITE_MODEL)
    return plan._replace(upstream_model=model, resolution=resolution, fallback_models=remaining,
                         rewrites=rewrites,
                         notes=(*plan.notes, f"404 model_not_found from {failed}: retried on "
                                           f"{model}"))


# ------------------------------------------------------------------ retry bodies


def with_model_json(body: bytes, model: str) -> bytes | None:
    """`body` (a JSON object) with every top-level `model` value replaced by `model`,
    every other byte kept; None when it is not a JSON object with a `model`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    spans = _model_value_spans(text)
    if not spans:
        return None
    value = json.dumps(model, ensure_ascii=False)
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], value]
        last = end
    out.append(text[last:])
    return "".join(out).encode("utf-8")


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def _model_value_spans(text: str) -> list[tuple[int, int]]:
    """Where the top-level `"model": <value>` values are; [] when not a JSON object."""
    try:
        i = _skip(text, 0)
        if text[i] != "{":
            return []
        spans: list[tuple[int, int]] = []
        i = _skip(text, i + 1)
        if text[i] == "}":
            return []
        while True:
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if not isinstance(key, str) or text[i] != ":":
                return []
            start = _skip(text, i + 1)
            _, end = _DECODER.raw_decode(text, start)
            if key == "model":
                spans.append((start, end))
            i = _skip(text, end)
            if text[i] == "}":
                return spans
            if text[i] != ",":
                return []
            i = _skip(text, i + 1)
    except (ValueError, IndexError):
        return []


def _skip(text: str, i: int) -> int:
    while text[i] in _WHITESPACE:
        i += 1
    return i


def with_model_form(body: bytes, boundary: bytes, model: str) -> bytes | None:
    """A buffered multipart form with its `model` field's value replaced; None when it
    has no `model` field."""
    seen: list[bytes] = []

    def new_value(old: bytes) -> bytes:
        seen.append(old)
        return model.encode()

    out, _ = replace_form_field(body, boundary, b"model", new_value)
    return out if seen else None

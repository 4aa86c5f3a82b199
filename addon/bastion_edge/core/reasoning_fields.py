"""Reasoning-only request fields, put in a form the Bastion model accepts. Pure.

Apps written for OpenAI's reasoning models (o-series, gpt-5) send fields Bastion's
models may not implement (an unimplemented field is a 502 `upstream_error`):

  max_completion_tokens (chat)  -> max_tokens, the limit every OpenAI-compatible server
                                  takes (dropped when max_tokens is also set)
  reasoning_effort (chat)       -> kept for models that reason (gpt-oss: low, medium, high;
                                  minimal/none become low, xhigh high), else dropped
  reasoning (responses)         -> {"effort": ...} as above for models that reason
                                  (summary dropped), else dropped
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

# Bastion models that take a reasoning effort, as globs.
REASONING_MODELS = ("gpt-oss-*",)
_EFFORTS = {"none": "low", "minimal": "low", "low": "low", "medium": "medium",
            "high": "high", "xhigh": "high"}

REWRITE_FIELDS = "reasoning-fields"


def reasons(model: str) -> bool:
    return any(fnmatchcase(model, glob) for glob in REASONING_MODELS)


def adapt_reasoning_fields(body: dict[str, Any], upstream: str) -> list[str]:
    """Edits `body` in place; returns notes for the access log ([] when unchanged)."""
    notes: list[str] = []
    if "max_completion_tokens" in body:
        limit = body.pop("max_completion_tokens")
        if body.get("max_tokens") is None and limit is not None:
            body["max_tokens"] = limit
            notes.append("max_completion_tokens -> max_tokens")
        else:
            notes.append("max_completion_tokens dropped")
    if "reasoning_effort" in body:
        effort = body.pop("reasoning_effort")
        if effort is not None and reasons(upstream):
            body["reasoning_effort"] = _EFFORTS.get(str(effort), "medium")
            if body["reasoning_effort"] != effort:
                notes.append(f"reasoning_effort {effort} -> {body['reasoning_effort']}")
        elif effort is not None:
            notes.append(f"reasoning_effort dropped ({upstream} does not reason)")
    if "reasoning" in body:
        reasoning = body.pop("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        if effort is not None and reasons(upstream):
            body["reasoning"] = {"effort": _EFFORTS.get(str(effort), "medium")}
            if body["reasoning"] != reasoning:
                notes.append(f"reasoning -> {body['reasoning']}")
        elif reasoning is not None:
            notes.append(f"reasoning dropped ({upstream} does not reason)" if effort
                         else "reasoning dropped")
    return notes

"""What real Bastion cannot take, refused the way an OpenAI-compatible server does.

The sandbox is where migrations are rehearsed, so it must fail where Bastion would:
  - `item_reference` input items: Bastion stores nothing, so it has nothing to resolve
    them against (the proxy resolves them from its own store first);
  - token-id embeddings input: Bastion's models have other tokenizers than OpenAI's,
    so OpenAI token ids mean nothing to them (the proxy decodes them to text first);
  - reasoning-only fields on models that do not reason (see `check_reasoning_fields`).
"""

from __future__ import annotations

from typing import Any

from bastion_sandbox.errors import BastionError, invalid_request, upstream_error
from bastion_sandbox.models import PERSONA

# Bastion models that reason (gpt-oss) and the efforts they take.
REASONING_MODELS = ("gpt-oss-120b", "gpt-oss-20b")
REASONING_EFFORTS = ("low", "medium", "high")


def check_no_item_references(input_value: object) -> None:
    if PERSONA.get() == "openai":
        return
    if not isinstance(input_value, list):
        return
    for index, item in enumerate(input_value):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            raise invalid_request(
                f"Invalid 'input[{index}]': item_reference is not supported; responses are "
                "not stored, so send the referenced item itself.",
                "item_reference_not_supported", f"input[{index}]")


def is_token_ids(value: object) -> bool:
    """A list of ints, or a list of non-empty lists of ints (OpenAI's token-id input)."""
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return True
    return any(isinstance(v, list) for v in value)


def check_text_embedding_input(value: object) -> None:
    if PERSONA.get() == "openai":
        return
    if is_token_ids(value):
        raise invalid_request(
            "Invalid 'input': token-id input is not supported; this model has its own "
            "tokenizer, so send the text.", "invalid_value", "input")


def check_reasoning_fields(body: dict[str, Any], model_id: str) -> None:
    """Chat's `max_completion_tokens` is not implemented (`max_tokens` is); reasoning
    effort (`reasoning_effort`, Responses `reasoning`) only on reasoning models, with
    their efforts. Unimplemented fields answer 502 `upstream_error`, as the guide says."""
    if PERSONA.get() == "openai":
        return
    if body.get("max_completion_tokens") is not None:
        raise _not_implemented(model_id, "max_completion_tokens")
    efforts: dict[str, object] = {}
    if body.get("reasoning_effort") is not None:
        efforts["reasoning_effort"] = body["reasoning_effort"]
    reasoning = body.get("reasoning")
    if reasoning is not None:
        efforts["reasoning"] = reasoning.get("effort") if isinstance(reasoning, dict) else reasoning
    for field, effort in efforts.items():
        if model_id not in REASONING_MODELS:
            raise _not_implemented(model_id, field)
        if effort is not None and effort not in REASONING_EFFORTS:
            raise invalid_request(f"Invalid value for '{field}': {effort!r}; expected one of "
                              f"{', '.join(REASONING_EFFORTS)}.", "invalid_value", field)


def _not_implemented(model_id: str, field: str) -> BastionError:
    return upstream_error(f"The model `{model_id}` does not implement '{field}'.", "upstream_error")

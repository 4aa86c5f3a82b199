"""Which Bastion model serves a request: fallbacks, capabilities and the live list.

Pure: plain values in, plain values out. `needs_from_json` reads what a request asks of
its model (tools, json_schema output, image input, prompt size); `select_candidates`
turns the mapped target, those needs, the rules' `capabilities:` and `fallbacks:` and
the set of models Bastion currently lists into the ordered models to try, or a
`CapabilityRefusal` (a 400 `model_capability_unsupported` naming the field).
`is_model_not_found` decides whether an upstream answer may be retried on the next
candidate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Literal

from bastion_edge.config.schema import ALL_SUPPORTED, ModelCapabilities
from bastion_edge.core.facts import CHAT, COMPLETIONS, RESPONSES, facts_from_json
from bastion_edge.errors import ApiError, bad_request

DEFAULT_MAX_ATTEMPTS = 3
CAPABILITY_UNSUPPORTED = "model_capability_unsupported"

Capability = Literal["tools", "json_schema", "vision", "context_tokens"]
Skip = Literal["unlisted", "tools", "json_schema", "vision", "context_tokens"]


@dataclass(frozen=True, slots=True)
class RequestNeeds:
    """What a request asks of its model. Each `*_param` is the field that asks, or None."""

    tools_param: str | None = None  # "tools" or "functions"
    json_schema_param: str | None = None  # "response_format" (chat) or "text.format"
    vision: bool = False
    prompt_tokens: int = 0
    input_param: str = "messages"  # named when vision or the context size is refused


NO_NEEDS = RequestNeeds()


@dataclass(frozen=True, slots=True)
class Candidates:
    """The models to try, in order (never empty, at most the attempt bound).

    `skipped` says why models before or between them were passed over. `none_listed`:
    every capable model is missing from the live list; they are tried anyway (the list
    may be stale) and Bastion's own 404 is the answer if it agrees.
    """

    models: tuple[str, ...]
    skipped: tuple[tuple[str, Skip], ...] = ()
    none_listed: bool = False

    @property
    def first(self) -> str:
        return self.models[0]


@dataclass(frozen=True, slots=True)
class CapabilityRefusal:
    """No model of the chain supports what the request needs: answer 400, send nothing."""

    param: str
    capability: Capability
    model: str  # the mapped target
    message: str
    code: str = CAPABILITY_UNSUPPORTED


Selection = Candidates | CapabilityRefusal


def refusal_error(refusal: CapabilityRefusal) -> ApiError:
    """The 400 the app gets (OpenAI envelope, `param` naming the field)."""
    return bad_request(refusal.message, refusal.code, refusal.param)


def fallback_chain(target: str, fallbacks: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The target then its fallbacks, in order, each once (not transitive)."""
    chain = [target]
    for model in fallbacks.get(target, ()):
        if model not in chain:
            chain.append(model)
    return tuple(chain)


def missing_capability(needs: RequestNeeds, caps: ModelCapabilities) -> Capability | None:
    """The first thing `needs` asks that `caps` lacks, or None."""
    if needs.tools_param and not caps.tools:
        return "tools"
    if needs.json_schema_param and not caps.json_schema:
        return "json_schema"
    if needs.vision and not caps.vision:
        return "vision"
    if caps.context_tokens is not None and needs.prompt_tokens > caps.context_tokens:
        return "context_tokens"
    return None


def select_candidates(
    target: str,
    needs: RequestNeeds,
    capabilities: Mapping[str, ModelCapabilities],
    fallbacks: Mapping[str, tuple[str, ...]],
    available: Set[str] | None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Selection:
    """The models to try for `target`, or a refusal. `available` None = list unknown."""
    chain = fallback_chain(target, fallbacks)
    capable: list[str] = []
    skipped: list[tuple[str, Skip]] = []
    missing_by_model: dict[str, Capability] = {}
    for model in chain:
        missing = missing_capability(needs, capabilities.get(model, ALL_SUPPORTED))
        if missing is not None:
            missing_by_model[model] = missing
            skipped.append((model, missing))
        else:
            capable.append(model)
    if not capable:
        return _refusal(target, needs, chain, capabilities, missing_by_model[target])
    listed = [m for m in capable if available is None or m in available]
    bound = max(1, max_attempts)
    if not listed:
        return Candidates(tuple(capable[:bound]), tuple(skipped), none_listed=True)
    skipped += [(m, "unlisted") for m in capable if m not in listed]
    order = {m: i for i, m in enumerate(chain)}
    skipped.sort(key=lambda item: order[item[0]])
    return Candidates(tuple(listed[:bound]), tuple(skipped))


def _refusal(
    target: str,
    needs: RequestNeeds,
    chain: tuple[str, ...],
    capabilities: Mapping[str, ModelCapabilities],
    target_missing: Capability,
) -> CapabilityRefusal:
    """Name a need no model of the chain meets alone; else the target's first gap."""
    named = target_missing
    for capability in ("tools", "json_schema", "vision", "context_tokens"):
        alone = _only(needs, capability)
        if alone is not None and all(
            missing_capability(alone, capabilities.get(m, ALL_SUPPORTED)) for m in chain
        ):
            named = capability
            break
    param = {
        "tools": needs.tools_param,
        "json_schema": needs.json_schema_param,
    }.get(named) or needs.input_param
    what = {
        "tools": "tool calling",
        "json_schema": "json_schema structured output",
        "vision": "image input",
        "context_tokens": f"a prompt of ~{needs.prompt_tokens} tokens",
    }[named]
    models = ", ".join(f"`{m}`" for m in chain)
    return CapabilityRefusal(
        param, named, target,
        f"No Bastion model configured for this request ({models}) supports {what} "
        f"(`{param}`); see `capabilities:` and `fallbacks:` in the bastion-edge rules.")


def _only(needs: RequestNeeds, capability: Capability) -> RequestNeeds | None:
    """`needs` reduced to one capability, or None when it does not ask for it."""
    if capability == "tools":
        return RequestNeeds(tools_param=needs.tools_param) if needs.tools_param else None
    if capability == "json_schema":
        return (RequestNeeds(json_schema_param=needs.json_schema_param)
                if needs.json_schema_param else None)
    if capability == "vision":
        return RequestNeeds(vision=True) if needs.vision else None
    return RequestNeeds(prompt_tokens=needs.prompt_tokens)


# ------------------------------------------------------------------ needs of a body

_INPUT_PARAMS = {CHAT: "messages", COMPLETIONS: "prompt", RESPONSES: "input"}


def needs_from_json(endpoint: str, body: Mapping[str, Any]) -> RequestNeeds:
    """What a chat, completions or Responses create asks of its model (others: nothing)."""
    if endpoint not in _INPUT_PARAMS:
        return NO_NEEDS
    facts = facts_from_json(body)
    tools_param = None
    if endpoint in (CHAT, RESPONSES) and _non_empty_list(body.get("tools")):
        tools_param = "tools"
    elif endpoint == CHAT and _non_empty_list(body.get("functions")):
        tools_param = "functions"
    json_schema_param = None
    if endpoint == CHAT and _is_json_schema(body.get("response_format")):
        json_schema_param = "response_format"
    elif endpoint == RESPONSES:
        text = body.get("text")
        if isinstance(text, dict) and _is_json_schema(text.get("format")):
            json_schema_param = "text.format"
    return RequestNeeds(
        tools_param=tools_param,
        json_schema_param=json_schema_param,
        vision=facts.has_image,
        prompt_tokens=facts.prompt_tokens,
        input_param=_INPUT_PARAMS[endpoint],
    )


def _non_empty_list(value: object) -> bool:
    return isinstance(value, list) and bool(value)


def _is_json_schema(value: object) -> bool:
    return isinstance(value, dict) and value.get("type") == "json_schema"


# ------------------------------------------------------------------ the 404 retry

def is_model_not_found(status: int, body: bytes) -> bool:
    """Bastion's `404 model_not_found`: safe to retry on the next candidate.

    Only for an answer no byte of which reached the app; anything else (another 404,
    an unparsable body) passes through unchanged.
    """
    if status != 404 or not body:
        return False
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return isinstance(error, dict) and error.get("code") == "model_not_found"

"""Rewrite an OpenAI request body for Bastion: model ids, the Responses `store` flag.

Plain values in, plain values out: `rewrite_json_body` and `rewrite_model_path` never
see a flow. A body that needs no change is returned as None so the original bytes
are forwarded untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from .errors import ApiError, bad_request
from .model_map import ModelMap, Resolution
from .request_adapt import Adaptation, adapt_for_bastion
from .request_facts import IMAGES_GENERATIONS, RESPONSES, RequestFacts, facts_from_json
from .rules import Rules

# OpenAI's default when images.generations omits `model`; Bastion requires one.
IMAGES_DEFAULT_MODEL = "dall-e-2"

# Rewrite kinds, as counted in metrics and listed in the access log.
REWRITE_HOST = "host"
REWRITE_KEY = "key"
REWRITE_MODEL = "model"
REWRITE_STORE = "store"
REWRITE_HTTPS = "https-upgrade"
REWRITE_TTS = "tts"


@dataclass(frozen=True, slots=True)
class BodyRewrite:
    body: bytes | None  # None: forward the original bytes
    resolution: Resolution | None
    rewrites: tuple[str, ...]
    stream: bool
    facts: RequestFacts
    app_store: bool | None = None  # `store` as the app sent it, before forcing false
    notes: tuple[str, ...] = ()  # for the access log


def decide_model(
    requested: str, facts: RequestFacts, rules: Rules, models: ModelMap
) -> Resolution | None:
    """The mapping for `requested`; None means forward it unchanged.

    Raises a 400 envelope for an unmapped id when the rules say `reject`.
    """
    found = models.resolve(requested, facts)
    if found is not None:
        return found
    if rules.unmapped_models == "pass_through" or models.is_bastion_model(requested):
        return None
    raise bad_request(
        f"bastion-edge: model {requested!r} has no Bastion mapping in {rules.source}. "
        "Add it under `models:` there (or set `unmapped_models: pass_through`).",
        "model_not_mapped",
        "model",
    )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else None
    except ValueError as e:
        raise bad_request(
            f"bastion-edge could not parse the JSON request body: {e}", "invalid_json"
        ) from e
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    return body


def rewrite_json_body(
    raw: bytes, facts: RequestFacts, rules: Rules, models: ModelMap, *, is_create: bool
) -> BodyRewrite:
    """Map `model` (content-aware) and force `store: false` on Responses creates."""
    body = parse_json_object(raw)
    content = facts_from_json(body)
    facts = replace(facts, has_image=content.has_image, prompt_tokens=content.prompt_tokens)
    rewrites: list[str] = []

    requested = body.get("model")
    injected = requested is None and facts.endpoint == IMAGES_GENERATIONS
    if injected:
        requested = IMAGES_DEFAULT_MODEL
    resolution = None
    if isinstance(requested, str):
        resolution = decide_model(requested, facts, rules, models)
        upstream = resolution.upstream if resolution is not None else requested
        if injected or upstream != requested:
            body["model"] = upstream
            rewrites.append(REWRITE_MODEL)
    elif requested is not None:
        raise model_not_string_error()
    adapted = adapt_for_bastion(body, facts.endpoint, requested, body["model"], rules) \
        if isinstance(requested, str) else Adaptation()
    rewrites += adapted.rewrites

    app_store = body.get("store") if isinstance(body.get("store"), bool) else None
    if facts.endpoint == RESPONSES and is_create and body.get("store") is not False:
        body["store"] = False
        rewrites.append(REWRITE_STORE)

    new_body = None
    if rewrites:
        new_body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return BodyRewrite(new_body, resolution, tuple(rewrites), body.get("stream") is True, facts,
                       app_store, tuple(adapted.notes))


def rewrite_model_path(
    path: str, facts: RequestFacts, rules: Rules, models: ModelMap
) -> tuple[str, Resolution | None]:
    """`/v1/models/{id}`: map the id in the path."""
    prefix = "/v1/models/"
    bare, sep, query = path.partition("?")
    requested = bare[len(prefix) :]
    if not bare.startswith(prefix) or not requested or "/" in requested:
        return path, None
    resolution = decide_model(requested, facts, rules, models)
    if resolution is None or not resolution.changed:
        return path, resolution
    return f"{prefix}{resolution.upstream}{sep}{query}", resolution


def model_not_string_error() -> ApiError:
    return bad_request("`model` must be a string.", "invalid_type", "model")

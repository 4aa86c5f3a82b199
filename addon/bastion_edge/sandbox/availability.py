"""Rehearsing model availability: models that vanish, and fields a model lacks.

An unavailable model drops out of `GET /v1/models` and answers `404 model_not_found`
(OpenAI envelope), as Bastion does for a model your account no longer has. A request
using a field its model is declared not to support (tools/functions, `json_schema`
response format, image input) answers `502 upstream_error`, as the migration guide
says Bastion may. Set at start (`SandboxConfig.unavailable_models`, `.capabilities`;
`bastion-edge sandbox --unavailable-model ID --capabilities rules.yaml`) or at run time:

    GET    /sandbox/models                 the current state
    PATCH  /sandbox/models/{id}            {"available": false, "tools": false, ...}
    DELETE /sandbox/models                 back to the configured state
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bastion_edge.config.rules import ALL_SUPPORTED, ModelCapabilities
from bastion_edge.core.facts import classify_endpoint
from bastion_edge.core.model_availability import missing_capability, needs_from_json
from bastion_edge.errors import bad_gateway, bad_request
from bastion_edge.sandbox.config import CONFIG_KEY
from bastion_edge.sandbox.models import UNAVAILABLE, model_not_found
from bastion_edge.sandbox.replies import json_response
from bastion_edge.sandbox.state import is_sandbox_path, json_body

MODELS_ADMIN_PATH = "/sandbox/models"
_CHECKED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
_FIELD_NAMES = {"tools": "tool calling", "json_schema": "json_schema structured output",
                "vision": "image input"}


@dataclass(slots=True)
class ModelAvailability:
    """The sandbox's mutable view of which models exist and what they support."""

    unavailable: set[str] = field(default_factory=set)
    capabilities: dict[str, ModelCapabilities] = field(default_factory=dict)

    @classmethod
    def configured(cls, unavailable: frozenset[str],
                   capabilities: Mapping[str, ModelCapabilities]) -> ModelAvailability:
        return cls(set(unavailable), dict(capabilities))

    def to_json(self) -> dict[str, Any]:
        return {"unavailable": sorted(self.unavailable),
                "capabilities": {m: asdict(c) for m, c in sorted(self.capabilities.items())}}

    def update(self, model: str, changes: Mapping[str, Any]) -> None:
        """Apply a PATCH body; ValueError names what is wrong (nothing applied then)."""
        caps = self.capabilities.get(model, ALL_SUPPORTED)
        available: bool | None = None
        for name, value in changes.items():
            if name in ("available", "tools", "json_schema", "vision"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                if name == "available":
                    available = value
                else:
                    caps = replace(caps, **{name: value})
            elif name == "context_tokens":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or value < 1):
                    raise ValueError("context_tokens must be a positive integer or null")
                caps = replace(caps, context_tokens=value)
            else:
                raise ValueError(f"unknown field {name!r}; expected available, tools, "
                                 "json_schema, vision, context_tokens")
        if available is True:
            self.unavailable.discard(model)
        elif available is False:
            self.unavailable.add(model)
        if caps != self.capabilities.get(model, ALL_SUPPORTED):
            self.capabilities[model] = caps


def availability_of(app: web.Application) -> ModelAvailability:
    return app[AVAILABILITY_KEY]


@web.middleware
async def availability_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_sandbox_path(request.path):
        return await handler(request)
    state = availability_of(request.app)
    UNAVAILABLE.set(frozenset(state.unavailable))
    if request.method == "POST" and request.path in _CHECKED_PATHS:
        body = await json_body(request)
        model = body.get("model")
        if isinstance(model, str):
            if model in state.unavailable:
                raise model_not_found(model)
            caps = state.capabilities.get(model)
            if caps is not None:
                needs = needs_from_json(classify_endpoint(request.path), body)
                missing = missing_capability(replace(needs, prompt_tokens=0), caps)
                if missing is not None:
                    raise bad_gateway(
                        f"Upstream model `{model}` failed: it does not support "
                        f"{_FIELD_NAMES[missing]} (sandbox capabilities).", "upstream_error")
    return await handler(request)


async def get_models_state(request: web.Request) -> web.Response:
    return json_response(availability_of(request.app).to_json())


async def patch_model_state(request: web.Request) -> web.Response:
    state = availability_of(request.app)
    try:
        changes = await request.json()
    except ValueError:
        changes = None
    if not isinstance(changes, dict):
        raise bad_request("The body must be a JSON object.", "invalid_json")
    try:
        state.update(request.match_info["model_id"], changes)
    except ValueError as exc:
        raise bad_request(str(exc), "invalid_sandbox_model_state") from None
    return json_response(state.to_json())


async def reset_models_state(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    state = availability_of(request.app)
    state.unavailable = set(config.unavailable_models)
    state.capabilities = dict(config.capabilities)
    return json_response(state.to_json())


def install(app: web.Application) -> None:
    """Adds the state (from the app's config) and the admin routes."""
    config = app[CONFIG_KEY]
    app[AVAILABILITY_KEY] = ModelAvailability.configured(
        config.unavailable_models, config.capabilities)
    app.router.add_route("GET", MODELS_ADMIN_PATH, get_models_state)
    app.router.add_route("DELETE", MODELS_ADMIN_PATH, reset_models_state)
    app.router.add_route("PATCH", MODELS_ADMIN_PATH + "/{model_id}", patch_model_state)


AVAILABILITY_KEY = web.AppKey("bastion_edge.sandbox.availability", ModelAvailability)

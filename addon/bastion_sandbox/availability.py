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

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bastion_sandbox.config import CONFIG_KEY, DeclaredSupport, ModelSupport
from bastion_sandbox.content import has_image
from bastion_sandbox.errors import invalid_request, upstream_error
from bastion_sandbox.models import UNAVAILABLE, model_not_found
from bastion_sandbox.replies import json_response
from bastion_sandbox.state import is_sandbox_path, json_body

MODELS_ADMIN_PATH = "/sandbox/models"
_CHAT, _COMPLETIONS, _RESPONSES = "/v1/chat/completions", "/v1/completions", "/v1/responses"
_ALL = ModelSupport()
_SWITCHES = ("available", "tools", "json_schema", "vision")


def _listed(value: object) -> bool:
    return isinstance(value, list) and len(value) > 0


def _schema_format(value: object) -> bool:
    return isinstance(value, dict) and value.get("type") == "json_schema"


def _uses_tools(path: str, body: Mapping[str, Any]) -> bool:
    if path == _CHAT:
        return _listed(body.get("tools")) or _listed(body.get("functions"))
    return path == _RESPONSES and _listed(body.get("tools"))


def _uses_json_schema(path: str, body: Mapping[str, Any]) -> bool:
    if path == _CHAT:
        return _schema_format(body.get("response_format"))
    text = body.get("text")
    return path == _RESPONSES and isinstance(text, dict) and _schema_format(text.get("format"))


def _uses_images(path: str, body: Mapping[str, Any]) -> bool:
    field_name = {_CHAT: "messages", _COMPLETIONS: "prompt", _RESPONSES: "input"}[path]
    return has_image(body.get(field_name))


# What a model behind Bastion must implement to answer, in the order the 502 names it.
# The contract: such fields pass through to the model, which "may answer 502 with
# upstream_error" when it does not implement one.
_FEATURES: tuple[tuple[str, str, Callable[[str, Mapping[str, Any]], bool]], ...] = (
    ("tools", "tool calling", _uses_tools),
    ("json_schema", "json_schema structured output", _uses_json_schema),
    ("vision", "image input", _uses_images),
)


def unimplemented_feature(path: str, body: Mapping[str, Any], support: ModelSupport) -> str | None:
    """The description of the first feature `body` uses that `support` lacks, or None."""
    for switch, description, used in _FEATURES:
        if not getattr(support, switch) and used(path, body):
            return description
    return None


@dataclass(slots=True)
class ModelAvailability:
    """The sandbox's mutable view of which models exist and what they support."""

    unavailable: set[str] = field(default_factory=set)
    capabilities: dict[str, ModelSupport] = field(default_factory=dict)

    @classmethod
    def configured(cls, unavailable: frozenset[str],
                   capabilities: Mapping[str, DeclaredSupport]) -> ModelAvailability:
        return cls(set(unavailable), {m: ModelSupport.of(c) for m, c in capabilities.items()})

    def to_json(self) -> dict[str, Any]:
        return {"unavailable": sorted(self.unavailable),
                "capabilities": {m: asdict(c) for m, c in sorted(self.capabilities.items())}}

    def update(self, model: str, changes: Mapping[str, Any]) -> None:
        """Apply a PATCH body; ValueError names what is wrong (nothing applied then)."""
        support = self.capabilities.get(model, _ALL)
        available: bool | None = None
        for name, value in changes.items():
            if name in _SWITCHES:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                if name == "available":
                    available = value
                else:
                    support = replace(support, **{name: value})
            elif name == "context_tokens":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or value < 1):
                    raise ValueError("context_tokens must be a positive integer or null")
                support = replace(support, context_tokens=value)
            else:
                raise ValueError(f"unknown field {name!r}; expected available, tools, "
                                 "json_schema, vision, context_tokens")
        if available is True:
            self.unavailable.discard(model)
        elif available is False:
            self.unavailable.add(model)
        if support != self.capabilities.get(model, _ALL):
            self.capabilities[model] = support


def availability_of(app: web.Application) -> ModelAvailability:
    return app[AVAILABILITY_KEY]


@web.middleware
async def availability_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_sandbox_path(request.path):
        return await handler(request)
    state = availability_of(request.app)
    UNAVAILABLE.set(frozenset(state.unavailable))
    if request.method == "POST" and request.path in (_CHAT, _COMPLETIONS, _RESPONSES):
        body = await json_body(request)
        model = body.get("model")
        if isinstance(model, str):
            if model in state.unavailable:
                raise model_not_found(model)
            lacking = unimplemented_feature(request.path, body, state.capabilities.get(model, _ALL))
            if lacking is not None:
                raise upstream_error(f"Upstream model `{model}` failed: it does not support "
                                     f"{lacking} (sandbox capabilities).")
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
        raise invalid_request("The body must be a JSON object.", "invalid_json")
    try:
        state.update(request.match_info["model_id"], changes)
    except ValueError as exc:
        raise invalid_request(str(exc), "invalid_sandbox_model_state") from None
    return json_response(state.to_json())


async def reset_models_state(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    state = availability_of(request.app)
    state.unavailable = set(config.unavailable_models)
    state.capabilities = ModelAvailability.configured(
        frozenset(), config.capabilities).capabilities
    return json_response(state.to_json())


def install(app: web.Application) -> None:
    """Adds the state (from the app's config) and the admin routes."""
    config = app[CONFIG_KEY]
    app[AVAILABILITY_KEY] = ModelAvailability.configured(
        config.unavailable_models, config.capabilities)
    app.router.add_route("GET", MODELS_ADMIN_PATH, get_models_state)
    app.router.add_route("DELETE", MODELS_ADMIN_PATH, reset_models_state)
    app.router.add_route("PATCH", MODELS_ADMIN_PATH + "/{model_id}", patch_model_state)


AVAILABILITY_KEY = web.AppKey("bastion_sandbox.availability", ModelAvailability)

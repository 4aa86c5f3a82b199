"""Bastion's model catalogue as the sandbox knows it, and the checks every endpoint makes.

Any id not in `MODELS` is answered 404 `model_not_found` (so an OpenAI id such as
`gpt-4o` that slipped past the proxy fails loudly); a model of the wrong kind for the
endpoint is 400 `model_not_supported`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from bastion_sandbox.errors import INVALID_REQUEST, BastionError, invalid_request

OWNER = "qubittron"
CREATED = 1735689600  # fixed, so listings are deterministic


class ModelKind(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    TRANSCRIPTION = "transcription"
    IMAGES = "images"


@dataclass(frozen=True, slots=True)
class BastionModel:
    id: str
    kind: ModelKind
    context_window: int | None = None  # tokens, chat models only
    vision: bool = False  # accepts image parts
    dimensions: int | None = None  # embedding models only


_SHORT = 32_768
_LONG = 131_072

MODELS: Final[Mapping[str, BastionModel]] = MappingProxyType(
    {
        m.id: m
        for m in (
            BastionModel("gpt-oss-120b", ModelKind.CHAT, _SHORT),
            BastionModel("gpt-oss-20b", ModelKind.CHAT, _SHORT),
            BastionModel("Llama-3.1-8B-Instruct", ModelKind.CHAT, _SHORT),
            BastionModel("Meta-Llama-3_3-70B-Instruct", ModelKind.CHAT, _LONG),
            BastionModel("Qwen3-Coder-30B-A3B-Instruct", ModelKind.CHAT, _SHORT),
            BastionModel("Qwen2.5-VL-72B-Instruct", ModelKind.CHAT, _SHORT, vision=True),
            BastionModel("bge-m3", ModelKind.EMBEDDINGS, dimensions=1024),
            BastionModel("whisper-large-v3", ModelKind.TRANSCRIPTION),
            # Not in the guide's table: a second transcription model, so that a fallback
            # for multipart uploads can be rehearsed.
            BastionModel("whisper-large-v3-turbo", ModelKind.TRANSCRIPTION),
            BastionModel("FLUX.1-schnell", ModelKind.IMAGES),
        )
    }
)


# The OpenAI persona's catalogue (a stand-in for OpenAI during cutover rehearsals).
OPENAI_MODELS: Final[Mapping[str, BastionModel]] = MappingProxyType(
    {
        m.id: m
        for m in (
            BastionModel("gpt-4o", ModelKind.CHAT, _LONG, vision=True),
            BastionModel("gpt-4o-mini", ModelKind.CHAT, _LONG, vision=True),
            BastionModel("gpt-4-turbo", ModelKind.CHAT, _LONG, vision=True),
            BastionModel("gpt-3.5-turbo-instruct", ModelKind.CHAT, _SHORT),
            BastionModel("text-embedding-3-small", ModelKind.EMBEDDINGS, dimensions=1536),
            BastionModel("whisper-1", ModelKind.TRANSCRIPTION),
            BastionModel("dall-e-2", ModelKind.IMAGES),
            BastionModel("dall-e-3", ModelKind.IMAGES),
        )
    }
)

# Set per request by the auth middleware from the sandbox's configured persona.
PERSONA: ContextVar[str] = ContextVar("sandbox_persona", default="bastion")
# Set per request by availability.py: ids made unavailable (404, not listed).
UNAVAILABLE: ContextVar[frozenset[str]] = ContextVar(
    "sandbox_unavailable_models", default=frozenset())


def catalogue() -> Mapping[str, BastionModel]:
    models = OPENAI_MODELS if PERSONA.get() == "openai" else MODELS
    unavailable = UNAVAILABLE.get()
    if unavailable:
        return {k: m for k, m in models.items() if k not in unavailable}
    return models


def model_not_found(model_id: str) -> BastionError:
    return BastionError(
        404,
        f"The model `{model_id}` does not exist or you do not have access to it.",
        "model_not_found",
        INVALID_REQUEST,
        "model",
    )


def require_model(value: object, kind: ModelKind, endpoint: str) -> BastionModel:
    """The catalogue entry for a request's `model` value, or the error Bastion answers."""
    if not isinstance(value, str) or not value:
        raise invalid_request(
            "you must provide a model parameter", "missing_required_parameter", "model"
        )
    model = catalogue().get(value)
    if model is None:
        raise model_not_found(value)
    if model.kind is not kind:
        raise invalid_request(
            f"The model `{value}` is a {model.kind} model and is not supported by {endpoint}.",
            "model_not_supported",
            "model",
        )
    return model


def model_object(model: BastionModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": CREATED, "owned_by": OWNER}


def model_list() -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in catalogue().values()]}

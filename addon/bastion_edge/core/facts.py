"""What the rules may look at when they decide: plain values taken from a request.

`classify_endpoint` names the OpenAI endpoint of a path; `facts_from_json` reads the
content-dependent facts (image input, estimated prompt size) out of a parsed body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The endpoint names are rules data (`when: {endpoint: ...}`); core re-exports them.
from bastion_edge.config.endpoints import BATCHES as BATCHES
from bastion_edge.config.endpoints import CHAT as CHAT
from bastion_edge.config.endpoints import COMPLETIONS as COMPLETIONS
from bastion_edge.config.endpoints import EMBEDDINGS as EMBEDDINGS
from bastion_edge.config.endpoints import ENDPOINTS as ENDPOINTS
from bastion_edge.config.endpoints import FILES as FILES
from bastion_edge.config.endpoints import IMAGES_EDITS as IMAGES_EDITS
from bastion_edge.config.endpoints import IMAGES_GENERATIONS as IMAGES_GENERATIONS
from bastion_edge.config.endpoints import IMAGES_VARIATIONS as IMAGES_VARIATIONS
from bastion_edge.config.endpoints import MODELS as MODELS
from bastion_edge.config.endpoints import OTHER as OTHER
from bastion_edge.config.endpoints import RESPONSES as RESPONSES
from bastion_edge.config.endpoints import SPEECH as SPEECH
from bastion_edge.config.endpoints import TRANSCRIPTIONS as TRANSCRIPTIONS
from bastion_edge.config.endpoints import TRANSLATIONS as TRANSLATIONS

_PATHS = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/images/generations": IMAGES_GENERATIONS,
    "/v1/images/edits": IMAGES_EDITS,
    "/v1/images/variations": IMAGES_VARIATIONS,
    "/v1/audio/transcriptions": TRANSCRIPTIONS,
    "/v1/audio/translations": TRANSLATIONS,
    "/v1/audio/speech": SPEECH,
    "/v1/responses": RESPONSES,
    "/v1/models": MODELS,
}

# A rough, tokenizer-free estimate: English text averages ~4 characters per token.
CHARS_PER_TOKEN = 4


def classify_endpoint(path: str) -> str:
    """The endpoint name for a request path (query string ignored)."""
    bare = path.split("?", 1)[0].rstrip("/")
    if bare in _PATHS:
        return _PATHS[bare]
    if bare.startswith("/v1/models/"):
        return MODELS
    if bare.startswith("/v1/responses/"):
        return RESPONSES
    if bare == "/v1/files" or bare.startswith("/v1/files/"):
        return FILES
    if bare == "/v1/batches" or bare.startswith("/v1/batches/"):
        return BATCHES
    return OTHER


def is_collection_path(path: str) -> bool:
    """True for an endpoint's own path (a create), not a sub-resource like `/{id}/cancel`."""
    return path.split("?", 1)[0].rstrip("/") in _PATHS


def key_sha256(authorization: str | None) -> str | None:
    """sha256 hex of the bearer token in an Authorization header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else authorization.strip()
    if not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything a rule condition can test, for one request."""

    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # lower-case; creds
    app_key_sha256: str | None = None
    client_ip: str | None = None
    has_image: bool = False
    prompt_tokens: int = 0
    app: str | None = None  # the authenticated app (clients.apps), None if unauthenticated


@dataclass(frozen=True, slots=True)
class BodyFacts:
    has_image: bool
    prompt_tokens: int


def facts_from_json(body: Mapping[str, Any]) -> BodyFacts:
    """Image input and estimated prompt tokens of a chat/completions/responses body."""
    scan = _Scan()
    for key in ("messages", "input", "prompt", "instructions", "system"):
        if key in body:
            scan.visit(body[key])
    return BodyFacts(has_image=scan.has_image, prompt_tokens=scan.chars // CHARS_PER_TOKEN)


_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
_TEXT_KEYS = ("text", "content", "input", "output", "arguments")


class _Scan:
    """Walks messages/input content once, counting text and spotting image parts."""

    def __init__(self) -> None:
        self.has_image = False
        self.chars = 0

    def visit(self, value: object) -> None:
        if isinstance(value, str):
            self.chars += len(value)
        elif isinstance(value, list):
            for item in value:
                self.visit(item)
        elif isinstance(value, dict):
            part_type = value.get("type")  # any JSON value: a list is not hashable
            if (isinstance(part_type, str) and part_type in _IMAGE_PART_TYPES) \
                    or "image_url" in value:
                self.has_image = True
                return
            for key in _TEXT_KEYS:
                if key in value:
                    self.visit(value[key])

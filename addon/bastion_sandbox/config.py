"""SandboxConfig: everything `start_sandbox` needs to know."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

from aiohttp import web

RivaAudioMode = Literal["wav", "wav-placeholder-sizes", "pcm"]
# Who the sandbox pretends to be: Bastion (strict, the default) or OpenAI (accepts
# OpenAI ids and `sk-` keys only), so cutover modes can be rehearsed against both.
Persona = Literal["bastion", "openai"]
RIVA_AUDIO_MODES: tuple[str, ...] = get_args(RivaAudioMode)

OPENAI_KEY_PREFIX = "sk-"


class DeclaredSupport(Protocol):
    """A model's declared support, as a rules file's `capabilities:` entry carries it.

    Structural: the CLI passes the proxy's parsed rules; the sandbox copies the values
    into its own `ModelSupport` and never imports the proxy's types.
    """

    @property
    def tools(self) -> bool: ...
    @property
    def json_schema(self) -> bool: ...
    @property
    def vision(self) -> bool: ...
    @property
    def context_tokens(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ModelSupport:
    """What one model behind the sandbox implements; everything, unless declared."""

    tools: bool = True
    json_schema: bool = True
    vision: bool = True
    context_tokens: int | None = None  # reported, not enforced

    @classmethod
    def of(cls, declared: DeclaredSupport) -> ModelSupport:
        return cls(declared.tools, declared.json_schema, declared.vision,
                   declared.context_tokens)


def default_tls_dir() -> Path:
    return Path.home() / ".bastion-edge" / "sandbox"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How to run the sandbox.

    `port` 0 picks a free port (read it back from `RunningSandbox.port`). `http_port`
    (None = off) runs a plain-HTTP listener that redirects everything to HTTPS with 301,
    as Bastion does. `api_keys` empty accepts any non-empty key not starting with `sk-`.
    `riva_audio` is how the Riva endpoint frames LINEAR_PCM (a request may override it
    with the `x-sandbox-riva-audio` header). The journal keeps the last `journal_size`
    requests and their bodies' text when at most `journal_body_limit` bytes.
    `unavailable_models` answer 404 `model_not_found` and are not listed; a request using
    a field its model's `capabilities` entry says it lacks answers 502 `upstream_error`
    (both changeable at run time through /sandbox/models, see availability.py).
    """

    host: str = "127.0.0.1"
    port: int = 8443
    tls_dir: Path = field(default_factory=default_tls_dir)
    http_port: int | None = None
    api_keys: frozenset[str] = frozenset()
    riva_audio: RivaAudioMode = "wav"
    journal_size: int = 1000
    journal_body_limit: int = 16_384
    persona: Persona = "bastion"
    unavailable_models: frozenset[str] = frozenset()
    capabilities: Mapping[str, DeclaredSupport] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.riva_audio not in RIVA_AUDIO_MODES:
            raise ValueError(f"riva_audio must be one of {', '.join(RIVA_AUDIO_MODES)}")
        if self.journal_size < 0 or self.journal_body_limit < 0:
            raise ValueError("journal_size and journal_body_limit must be >= 0")
        if not 0 <= self.port <= 65535 or not (
            self.http_port is None or 0 <= self.http_port <= 65535
        ):
            raise ValueError("ports must be in 0..65535")
        if any(not key or key.startswith(OPENAI_KEY_PREFIX) for key in self.api_keys):
            raise ValueError("api_keys must be non-empty and must not start with 'sk-'")


CONFIG_KEY = web.AppKey("bastion_sandbox.config", SandboxConfig)

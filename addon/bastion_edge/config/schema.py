"""The rules schema: one immutable `Rules` snapshot and its parts, as plain data.

Read from rules.yaml by `config.rules` (through `config.reader`); evaluated by `core`
(e.g. `core.conditions` decides whether a `Condition` holds for a request). Nothing here
imports core, tts or proxy.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from bastion_edge.config.batch_rules import BatchRules
from bastion_edge.config.canary_rules import CanaryRules
from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.config.quota_rules import NO_QUOTA, OutageMode, Quota
from bastion_edge.config.usage_rules import UsageRules

DEFAULT_BASE_URL = "https://api.qubittron.ai/v1"
DEFAULT_KEY_ENV = "QUBITTRON_API_KEY"
DEFAULT_TTS_PATH = "/api/v1/tts/text_to_audio"  # Riva's HTTP text-to-speech route
MIN_KEY_HASH_PREFIX = 8

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UnmappedPolicy = Literal["reject", "pass_through"]
ReplyModel = Literal["upstream", "original"]
CutoverMode = Literal["rewrite", "observe", "split", "mirror", "canary"]
StickyBy = Literal["app", "conversation"]

# Native embedding sizes; rules.yaml `embedding_dimensions:` adds to and overrides these.
DEFAULT_DIMENSIONS: Mapping[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "bge-m3": 1024,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """All given tests must hold (an empty condition always holds); see core.conditions."""

    endpoints: tuple[str, ...] = ()
    has_image: bool | None = None
    prompt_tokens_over: int | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, glob)
    app_key_sha256: tuple[str, ...] = ()  # hex prefixes
    clients: tuple[IpNetwork, ...] = ()
    apps: tuple[str, ...] = ()  # authenticated app names (clients.apps)


@dataclass(frozen=True, slots=True)
class ModelTarget:
    use: str
    when: Condition = Condition()


@dataclass(frozen=True, slots=True)
class ModelRule:
    """One `models:` entry: an OpenAI id (or glob) and its ordered choices."""

    pattern: str
    choices: tuple[ModelTarget, ...]

    @property
    def is_glob(self) -> bool:
        return any(c in self.pattern for c in "*?[")


@dataclass(frozen=True, slots=True)
class KeyRule:
    env: str
    when: Condition


@dataclass(frozen=True, slots=True)
class UpstreamRules:
    base_url: str = DEFAULT_BASE_URL
    ca_file: str | None = None
    response_timeout_seconds: float = 600.0

    @property
    def scheme(self) -> str:
        return _url_parts(self.base_url)[0]

    @property
    def host(self) -> str:
        return _url_parts(self.base_url)[1]

    @property
    def port(self) -> int:
        return _url_parts(self.base_url)[2]

    @property
    def path_prefix(self) -> str:
        """The base URL's path without a trailing slash, e.g. `/v1`."""
        return _url_parts(self.base_url)[3]


@functools.lru_cache(maxsize=32)
def _url_parts(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and path of a base URL, parsed once per URL: every request
    asks for the upstream's host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname or "", port, parts.path.rstrip("/")


@dataclass(frozen=True, slots=True)
class TtsRules:
    path: str = DEFAULT_TTS_PATH
    default_voice: str | None = "English-US.Female-1"
    language_code: str = "en-US"
    voices: Mapping[str, str] = field(default_factory=dict)  # OpenAI name -> Riva name
    voice_languages: Mapping[str, str] = field(default_factory=dict)  # Riva name -> lang
    no_ssml_voices: frozenset[str] = frozenset()  # Riva voices without SSML support
    sample_rate_hz: int = 22050


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """What one Bastion model supports (`capabilities:`); an unlisted field = supported."""

    tools: bool = True  # chat `tools`/`functions`, Responses `tools`
    json_schema: bool = True  # chat `response_format` / Responses `text.format` json_schema
    vision: bool = True  # image input
    context_tokens: int | None = None  # None: no limit known


ALL_SUPPORTED = ModelCapabilities()
DEFAULT_MODELS_REFRESH_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ResponsesStateRules:
    """Where the proxy keeps Responses state (Bastion keeps none) and for how long."""

    store: str = "sqlite"  # sqlite (a file in the confdir), sqlite:///path, redis://...
    ttl_seconds: float | None = 30 * 24 * 3600.0  # None: until evicted or deleted
    max_responses: int | None = 100_000  # least recently used evicted beyond this
    encryption_key_env: str | None = None  # env var with Fernet key(s): encrypt at rest


@dataclass(frozen=True, slots=True)
class CutoverRules:
    mode: CutoverMode = "rewrite"
    split_percent: float = 100.0  # share of traffic Bastion gets in `split`
    sticky_by: StickyBy = "app"
    openai_base_url: str = "https://api.openai.com"  # $BASTION_OPENAI_URL overrides
    mirror_max_in_flight: int = 8
    mirror_streaming: bool = True
    canary: CanaryRules = field(default_factory=CanaryRules)  # mode `canary`
    mirror_agreement_share: float = 0.1  # mirrored pairs whose answers are compared
    mirror_agreement_per_second: float = 2.0  # at most, per process (bge-m3 calls)


# Trust boundary: apps that may use the proxy (`clients`) and the egress exceptions
# (`egress.allow`). Apps are known by the sha256 of their proxy secret, never the secret.

@dataclass(frozen=True, slots=True)
class AppRules:
    """One `clients.apps` entry: who it is, how it proves it, which Bastion key it spends."""

    name: str
    secret_sha256: str  # lower-case hex of sha256(secret)
    bastion_key_env: str | None = None
    bastion_key_file: str | None = None
    quota: Quota | None = None  # None: not written (the default applies); NO_QUOTA: none


@dataclass(frozen=True, slots=True)
class ClientsRules:
    apps: tuple[AppRules, ...] = ()
    # Transparent listeners carry no proxy credentials: their traffic is this app's.
    transparent_app: str | None = None
    default_quota: Quota = NO_QUOTA  # apps without a `quota:` of their own
    quota_store_outage: OutageMode = "fail_open"

    def app(self, name: str | None) -> AppRules | None:
        return next((a for a in self.apps if a.name == name), None)

    def quota_of(self, name: str | None) -> Quota:
        """An app's quota (its own, else the default); no app: nobody to count."""
        if name is None:
            return NO_QUOTA
        app = self.app(name)
        return app.quota if app is not None and app.quota is not None else self.default_quota


@dataclass(frozen=True, slots=True)
class EgressAllow:
    """One `egress.allow` entry: a host name (exact) or a network, optionally one port."""

    text: str
    host: str | None = None
    network: IpNetwork | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class EgressRules:
    allow: tuple[EgressAllow, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    upstream: UpstreamRules = UpstreamRules()
    openai_hosts: tuple[str, ...] = ("api.openai.com",)
    bastion_hosts: tuple[str, ...] = ("api.qubittron.ai",)
    models: tuple[ModelRule, ...] = ()
    unmapped_models: UnmappedPolicy = "reject"
    reply_model: ReplyModel = "upstream"
    key_env: str = DEFAULT_KEY_ENV
    key_rules: tuple[KeyRule, ...] = ()
    tts: TtsRules = TtsRules()
    cutover: CutoverRules = field(default_factory=CutoverRules)
    responses_state: ResponsesStateRules = ResponsesStateRules()
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # Bastion id -> ids
    capabilities: Mapping[str, ModelCapabilities] = field(default_factory=dict)
    models_refresh_seconds: float = DEFAULT_MODELS_REFRESH_SECONDS  # GET /v1/models interval
    key_file: str | None = None  # keys.default_file: wins over key_env when set
    clients: ClientsRules = field(default_factory=ClientsRules)
    egress: EgressRules = field(default_factory=EgressRules)
    # model id (OpenAI's or Bastion's) -> native embedding vector size
    embedding_dimensions: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_DIMENSIONS))
    source: str = "<defaults>"
    sha256: str = ""
    batches: BatchRules = field(default_factory=BatchRules)  # the proxy's Files and Batch APIs
    usage: UsageRules = field(default_factory=UsageRules)  # token accounting, price table
    limits: LimitsRules = field(default_factory=LimitsRules)  # limits: section

    def intercepted_hosts(self) -> tuple[str, ...]:
        return self.openai_hosts + self.bastion_hosts

    def allow_hosts_regex(self) -> str:
        """mitmproxy `allow_hosts` pattern: exactly our hosts, any port, anchored."""
        names = "|".join(re.escape(h) for h in self.intercepted_hosts())
        return rf"^(?:{names})(?::\d+)?$"

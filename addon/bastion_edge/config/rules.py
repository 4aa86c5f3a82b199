"""rules.yaml: parsed and validated into one immutable `Rules` snapshot.

Every error names its YAML location (`models."gpt-4o": expected a string ...`) and
line, so `bastion-edge check` and the hot reloader can say exactly what is wrong.
Environment variables override the file (see `apply_environment`).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from bastion_edge.config.batch_rules import BatchRules, parse_batches
from bastion_edge.config.limits import LimitsRules, parse_limits
from bastion_edge.config.usage_rules import UsageRules, parse_usage
from bastion_edge.core.cutover import CutoverMode, CutoverRules, StickyBy
from bastion_edge.core.embedding_dims import DEFAULT_DIMENSIONS
from bastion_edge.core.facts import ENDPOINTS, RequestFacts
from bastion_edge.tts.riva_contract import DEFAULT_TTS_PATH

DEFAULT_BASE_URL = "https://api.qubittron.ai/v1"
DEFAULT_KEY_ENV = "QUBITTRON_API_KEY"
MIN_KEY_HASH_PREFIX = 8

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UnmappedPolicy = Literal["reject", "pass_through"]
ReplyModel = Literal["upstream", "original"]


class RulesError(ValueError):
    """An invalid rules file. `location` is the YAML path, `line` 1-based or None."""

    def __init__(self, location: str, message: str, line: int | None = None) -> None:
        self.location = location
        self.line = line
        where = f" (line {line})" if line else ""
        super().__init__(f"{location}: {message}{where}" if location else f"{message}{where}")


@dataclass(frozen=True, slots=True)
class Condition:
    """All given tests must hold (an empty condition always holds)."""

    endpoints: tuple[str, ...] = ()
    has_image: bool | None = None
    prompt_tokens_over: int | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, glob)
    app_key_sha256: tuple[str, ...] = ()  # hex prefixes
    clients: tuple[IpNetwork, ...] = ()
    apps: tuple[str, ...] = ()  # authenticated app names (clients.apps)

    def matches(self, facts: RequestFacts) -> bool:
        if self.apps and facts.app not in self.apps:
            return False
        if self.endpoints and facts.endpoint not in self.endpoints:
            return False
        if self.has_image is not None and facts.has_image != self.has_image:
            return False
        if self.prompt_tokens_over is not None and facts.prompt_tokens <= self.prompt_tokens_over:
            return False
        for name, pattern in self.headers:
            value = facts.headers.get(name)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        if self.app_key_sha256 and not (
            facts.app_key_sha256
            and any(facts.app_key_sha256.startswith(p) for p in self.app_key_sha256)
        ):
            return False
        return not self.clients or _client_in(facts.client_ip, self.clients)


def _client_in(client_ip: str | None, networks: tuple[IpNetwork, ...]) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    use: str
    when: Condition = Condition()


@dataclass(frozen=True, slots=True)
class ModelRule:
    """One `models:` entry: an OpenAI id (or glob) and its ordered choices."""

    pattern: str
    choices: tuple[ModelChoice, ...]

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

RESPONSES_STORE_FORMS = "sqlite, sqlite:///<absolute path> or a redis:// (rediss://) URL"


@dataclass(frozen=True, slots=True)
class ResponsesStateRules:
    """Where the proxy keeps Responses state (Bastion keeps none) and for how long."""

    store: str = "sqlite"  # sqlite (a file in the confdir), sqlite:///path, redis://...
    ttl_seconds: float | None = 30 * 24 * 3600.0  # None: until evicted or deleted
    max_responses: int | None = 100_000  # least recently used evicted beyond this
    encryption_key_env: str | None = None  # env var with Fernet key(s): encrypt at rest


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
    clients: ClientsRules = field(default_factory=lambda: ClientsRules())
    egress: EgressRules = field(default_factory=lambda: EgressRules())
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


# --------------------------------------------------------------------------- parsing

def load_rules(path: str | Path) -> Rules:
    """Read and validate a rules file (no environment overrides applied)."""
    raw = Path(path).read_bytes()
    return parse_rules(raw, source=str(path), allow_empty=False)


def parse_rules(raw: bytes | str, source: str = "<string>", *,
                allow_empty: bool = True) -> Rules:
    """Validate rules text; a file (`allow_empty=False`) must hold at least one setting."""
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        document = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
        tree = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RulesError("", f"not UTF-8 text: {e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RulesError("", f"invalid YAML: {getattr(e, 'problem', e)}", line) from e
    if tree is None and not allow_empty:  # a truncated write, not "all defaults"
        raise RulesError("", "the rules file is empty (no settings, only comments or "
                             "blank lines)", None)
    lines = _line_index(document)
    parser = _Parser(lines)
    rules = parser.rules(tree if tree is not None else {})
    return replace(rules, source=source, sha256=hashlib.sha256(data).hexdigest())


def apply_environment(rules: Rules, environ: Mapping[str, str]) -> Rules:
    """Environment overrides: BASTION_BASE_URL, BASTION_UPSTREAM_CA, BASTION_OPENAI_URL."""
    if environ.get("BASTION_OPENAI_URL"):
        _check_base_url(environ["BASTION_OPENAI_URL"], "BASTION_OPENAI_URL")
        rules = replace(rules, cutover=replace(
            rules.cutover, openai_base_url=environ["BASTION_OPENAI_URL"]))
    upstream = rules.upstream
    if environ.get("BASTION_BASE_URL"):
        base_url = environ["BASTION_BASE_URL"]
        _check_base_url(base_url, "BASTION_BASE_URL")
        upstream = replace(upstream, base_url=base_url)
    if environ.get("BASTION_UPSTREAM_CA"):
        upstream = replace(upstream, ca_file=environ["BASTION_UPSTREAM_CA"])
    return replace(rules, upstream=upstream)


def _check_base_url(url: str, location: str, line: int | None = None) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RulesError(location, f"expected an https:// URL, got {url!r}", line)


Path_ = tuple[str | int, ...]
T = TypeVar("T")


def format_location(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


def _line_index(node: yaml.Node | None, path: Path_ = ()) -> dict[Path_, int]:
    index: dict[Path_, int] = {}
    if node is None:
        return index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            index.update(_line_index(value_node, (*path, str(key_node.value))))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, (*path, i)))
    return index


class _Parser:
    """Turns the loaded YAML tree into dataclasses, raising RulesError with locations."""

    def __init__(self, lines: dict[Path_, int]) -> None:
        self.lines = lines

    def fail(self, path: Path_, message: str) -> RulesError:
        return RulesError(format_location(path), message, self.lines.get(path))

    def mapping(self, value: object, path: Path_) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "expected a mapping")
        return value

    def only_keys(self, value: Mapping[str, Any], path: Path_, allowed: Sequence[str]) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail((*path, str(key)),
                                f"unknown key; expected one of {', '.join(allowed)}")

    def string(self, value: object, path: Path_, what: str = "a string") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected {what}")
        return value

    def number(self, value: object, path: Path_) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(path, "expected a positive number")
        return float(value)

    def positive_integer(self, value: object, path: Path_) -> int:
        """A whole number >= 1; 0.5 or 2.0 are refused, never truncated."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, "expected a positive integer")
        return value

    def choice(self, value: object, path: Path_, options: Sequence[T]) -> T:
        for option in options:
            if value == option:
                return option
        raise self.fail(path, f"expected one of {', '.join(map(str, options))}")

    def strings(self, value: object, path: Path_) -> tuple[str, ...]:
        """A string or a list of strings."""
        items = value if isinstance(value, list) else [value]
        return tuple(self.string(v, (*path, i) if isinstance(value, list) else path)
                     for i, v in enumerate(items))

    # -- sections

    def rules(self, tree: object) -> Rules:
        top = self.mapping(tree, ())
        self.only_keys(top, (), (
            "upstream", "intercept", "keys", "models", "unmapped_models", "reply_model",
            "tts", "cutover", "responses_state", "fallbacks", "capabilities",
            "models_refresh_seconds", "clients", "egress", "embedding_dimensions",
            "batches",
            "usage",
            "limits",
        ))
        rules = Rules()
        if "upstream" in top:
            rules = replace(rules, upstream=self.upstream(top["upstream"], ("upstream",)))
        if "intercept" in top:
            section = self.mapping(top["intercept"], ("intercept",))
            self.only_keys(section, ("intercept",), ("openai_hosts", "bastion_hosts"))
            if "openai_hosts" in section:
                hosts = self.hosts(section["openai_hosts"], ("intercept", "openai_hosts"))
                rules = replace(rules, openai_hosts=hosts)
            if "bastion_hosts" in section:
                hosts = self.hosts(section["bastion_hosts"], ("intercept", "bastion_hosts"))
                rules = replace(rules, bastion_hosts=hosts)
        if "keys" in top:
            key_env, key_rules = self.keys(top["keys"], ("keys",))
            rules = replace(rules, key_env=key_env, key_rules=key_rules,
                            key_file=parse_key_file(self, top["keys"], ("keys",)))
        if "clients" in top:
            rules = replace(rules, clients=parse_clients(self, top["clients"], ("clients",)))
        if "egress" in top:
            rules = replace(rules, egress=parse_egress(self, top["egress"], ("egress",)))
        if top.get("models") is not None:
            rules = replace(rules, models=self.models(top["models"], ("models",)))
        if "unmapped_models" in top:
            policy: UnmappedPolicy = self.choice(
                top["unmapped_models"], ("unmapped_models",), ("reject", "pass_through"))
            rules = replace(rules, unmapped_models=policy)
        if "reply_model" in top:
            reply: ReplyModel = self.choice(
                top["reply_model"], ("reply_model",), ("upstream", "original"))
            rules = replace(rules, reply_model=reply)
        if "tts" in top:
            rules = replace(rules, tts=self.tts(top["tts"], ("tts",)))
        if "cutover" in top:
            rules = replace(rules, cutover=self.cutover(top["cutover"], ("cutover",)))
        if "embedding_dimensions" in top:
            rules = replace(rules, embedding_dimensions=self.embedding_dimensions(
                top["embedding_dimensions"], ("embedding_dimensions",)))
        if "responses_state" in top:
            rules = replace(rules, responses_state=self.responses_state(
                top["responses_state"], ("responses_state",)))
        if top.get("fallbacks") is not None:
            rules = replace(rules, fallbacks=self.fallbacks(top["fallbacks"], ("fallbacks",)))
        if top.get("capabilities") is not None:
            rules = replace(rules, capabilities=self.capabilities(
                top["capabilities"], ("capabilities",)))
        if "models_refresh_seconds" in top:
            rules = replace(rules, models_refresh_seconds=self.number(
                top["models_refresh_seconds"], ("models_refresh_seconds",)))
        if "batches" in top:
            rules = replace(rules, batches=parse_batches(self, top["batches"], ("batches",)))
        if top.get("usage") is not None:
            rules = replace(rules, usage=parse_usage(self, top["usage"], ("usage",)))
        if "limits" in top:
            rules = replace(rules, limits=parse_limits(self, top["limits"], ("limits",)))
        return rules

    def fallbacks(self, value: object, path: Path_) -> Mapping[str, tuple[str, ...]]:
        section = self.mapping(value, path)
        out: dict[str, tuple[str, ...]] = {}
        for model, alternatives in section.items():
            entry_path = (*path, str(model))
            if isinstance(alternatives, list) and not alternatives:
                raise self.fail(entry_path, "expected a Bastion model id or a list of them")
            ids = self.strings(alternatives, entry_path)
            if str(model) in ids:
                raise self.fail(entry_path, f"{model!r} cannot be its own fallback")
            if len(set(ids)) != len(ids):
                raise self.fail(entry_path, "a fallback is listed twice")
            out[str(model)] = ids
        return out

    def capabilities(self, value: object, path: Path_) -> Mapping[str, ModelCapabilities]:
        section = self.mapping(value, path)
        out: dict[str, ModelCapabilities] = {}
        for model, entry in section.items():
            entry_path = (*path, str(model))
            fields = self.mapping(entry, entry_path)
            self.only_keys(fields, entry_path, ("tools", "json_schema", "vision",
                                                "context_tokens"))
            caps = ALL_SUPPORTED
            for name in ("tools", "json_schema", "vision"):
                if name in fields:
                    if not isinstance(fields[name], bool):
                        raise self.fail((*entry_path, name), "expected true or false")
                    caps = replace(caps, **{name: fields[name]})
            if fields.get("context_tokens") is not None:
                tokens = fields["context_tokens"]
                if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                    raise self.fail((*entry_path, "context_tokens"),
                                    "expected a positive integer or null")
                caps = replace(caps, context_tokens=tokens)
            out[str(model)] = caps
        return out

    def upstream(self, value: object, path: Path_) -> UpstreamRules:
        section = self.mapping(value, path)
        self.only_keys(section, path, ("base_url", "ca_file", "response_timeout_seconds"))
        upstream = UpstreamRules()
        if "base_url" in section:
            url = self.string(section["base_url"], (*path, "base_url"), "an https:// URL")
            _check_base_url(url, format_location((*path, "base_url")),
                            self.lines.get((*path, "base_url")))
            upstream = replace(upstream, base_url=url)
        if section.get("ca_file") is not None:
            ca_file = self.string(section["ca_file"], (*path, "ca_file"))
            upstream = replace(upstream, ca_file=ca_file)
        if "response_timeout_seconds" in section:
            timeout = self.number(section["response_timeout_seconds"],
                                  (*path, "response_timeout_seconds"))
            upstream = replace(upstream, response_timeout_seconds=timeout)
        return upstream

    def hosts(self, value: object, path: Path_) -> tuple[str, ...]:
        hosts = self.strings(value, path)
        for i, host in enumerate(hosts):
            if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise self.fail((*path, i), f"expected a host name, got {host!r}")
        return tuple(h.lower() for h in hosts)

    def keys(self, value: object, path: Path_) -> tuple[str, tuple[KeyRule, ...]]:
        section = self.mapping(value, path)
        reject_literal_keys(self, section, path)
        self.only_keys(section, path, ("default_env", "default_file", "select"))
        key_env = DEFAULT_KEY_ENV
        if "default_env" in section:
            key_env = self.env_name(section["default_env"], (*path, "default_env"))
        selected: list[KeyRule] = []
        select = section.get("select") or []
        if not isinstance(select, list):
            raise self.fail((*path, "select"), "expected a list of {when, env}")
        for i, item in enumerate(select):
            item_path = (*path, "select", i)
            entry = self.mapping(item, item_path)
            self.only_keys(entry, item_path, ("when", "env"))
            if "env" not in entry or "when" not in entry:
                raise self.fail(item_path, "expected both `when` and `env`")
            when = self.condition(entry["when"], (*item_path, "when"))
            selected.append(KeyRule(self.env_name(entry["env"], (*item_path, "env")), when))
        return key_env, tuple(selected)

    def env_name(self, value: object, path: Path_) -> str:
        name = self.string(value, path, "an environment variable name")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise self.fail(path, f"expected an environment variable name, got {name!r}")
        return name

    def models(self, value: object, path: Path_) -> tuple[ModelRule, ...]:
        section = self.mapping(value, path)
        rules = []
        for pattern, target in section.items():
            entry_path = (*path, str(pattern))
            if isinstance(target, str) and target:
                choices: tuple[ModelChoice, ...] = (ModelChoice(target),)
            elif isinstance(target, list) and target:
                choices = tuple(self.model_choice(item, (*entry_path, i))
                                for i, item in enumerate(target))
            else:
                raise self.fail(entry_path,
                                "expected a string (a Bastion model id) "
                                "or a list of {when, use} choices")
            rules.append(ModelRule(str(pattern), choices))
        return tuple(rules)

    def model_choice(self, value: object, path: Path_) -> ModelChoice:
        entry = self.mapping(value, path)
        self.only_keys(entry, path, ("when", "use"))
        if "use" not in entry:
            raise self.fail(path, "expected `use: <Bastion model id>`")
        use = self.string(entry["use"], (*path, "use"))
        when = self.condition(entry["when"], (*path, "when")) if "when" in entry else Condition()
        return ModelChoice(use, when)

    def condition(self, value: object, path: Path_) -> Condition:
        entry = self.mapping(value, path)
        self.only_keys(entry, path, (
            "endpoint", "has_image", "prompt_tokens_over", "header", "app_key_sha256", "client",
            "app",
        ))
        condition = Condition()
        if "app" in entry:
            condition = replace(condition, apps=self.strings(entry["app"], (*path, "app")))
        if "endpoint" in entry:
            endpoints = self.strings(entry["endpoint"], (*path, "endpoint"))
            for name in endpoints:
                if name not in ENDPOINTS:
                    raise self.fail((*path, "endpoint"),
                                    f"unknown endpoint {name!r}; expected one of "
                                    + ", ".join(ENDPOINTS))
            condition = replace(condition, endpoints=endpoints)
        if "has_image" in entry:
            if not isinstance(entry["has_image"], bool):
                raise self.fail((*path, "has_image"), "expected true or false")
            condition = replace(condition, has_image=entry["has_image"])
        if "prompt_tokens_over" in entry:
            tokens = entry["prompt_tokens_over"]
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise self.fail((*path, "prompt_tokens_over"), "expected a non-negative integer")
            condition = replace(condition, prompt_tokens_over=tokens)
        if "header" in entry:
            headers = self.mapping(entry["header"], (*path, "header"))
            pairs = tuple((str(k).lower(), self.string(v, (*path, "header", str(k))))
                          for k, v in headers.items())
            condition = replace(condition, headers=pairs)
        if "app_key_sha256" in entry:
            prefixes = self.strings(entry["app_key_sha256"], (*path, "app_key_sha256"))
            for prefix in prefixes:
                if not re.fullmatch(rf"[0-9a-f]{{{MIN_KEY_HASH_PREFIX},64}}", prefix):
                    raise self.fail((*path, "app_key_sha256"),
                                    f"expected {MIN_KEY_HASH_PREFIX}-64 lower-case hex digits "
                                    "(see `bastion-edge key-hash`), never a raw key")
            condition = replace(condition, app_key_sha256=prefixes)
        if "client" in entry:
            networks = []
            for text in self.strings(entry["client"], (*path, "client")):
                try:
                    networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError as e:
                    raise self.fail((*path, "client"), f"expected an IP or CIDR: {e}") from e
            condition = replace(condition, clients=tuple(networks))
        return condition

    def cutover(self, value: object, path: Path_) -> CutoverRules:
        section = self.mapping(value, path)
        self.only_keys(section, path, ("mode", "split_percent", "sticky_by", "openai_base_url",
                                       "mirror_max_in_flight", "mirror_streaming"))
        cutover = CutoverRules()
        if "mode" in section:
            mode: CutoverMode = self.choice(section["mode"], (*path, "mode"),
                                            ("rewrite", "observe", "split", "mirror"))
            cutover = replace(cutover, mode=mode)
        if "split_percent" in section:
            percent = section["split_percent"]
            if isinstance(percent, bool) or not isinstance(percent, int | float) \
                    or not 0 <= percent <= 100:
                raise self.fail((*path, "split_percent"), "expected a number from 0 to 100")
            cutover = replace(cutover, split_percent=float(percent))
        if "sticky_by" in section:
            sticky: StickyBy = self.choice(section["sticky_by"], (*path, "sticky_by"),
                                           ("app", "conversation"))
            cutover = replace(cutover, sticky_by=sticky)
        if "openai_base_url" in section:
            url = self.string(section["openai_base_url"], (*path, "openai_base_url"))
            _check_base_url(url, format_location((*path, "openai_base_url")),
                            self.lines.get((*path, "openai_base_url")))
            cutover = replace(cutover, openai_base_url=url)
        if "mirror_max_in_flight" in section:
            limit = self.positive_integer(section["mirror_max_in_flight"],
                                          (*path, "mirror_max_in_flight"))
            cutover = replace(cutover, mirror_max_in_flight=limit)
        if "mirror_streaming" in section:
            if not isinstance(section["mirror_streaming"], bool):
                raise self.fail((*path, "mirror_streaming"), "expected true or false")
            cutover = replace(cutover, mirror_streaming=section["mirror_streaming"])
        return cutover

    def embedding_dimensions(self, value: object, path: Path_) -> Mapping[str, int]:
        sizes = dict(DEFAULT_DIMENSIONS)
        for model, size in self.mapping(value, path).items():
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise self.fail((*path, str(model)), "expected a positive whole number "
                                "(the model's embedding vector size)")
            sizes[str(model)] = size
        return sizes

    def responses_state(self, value: object, path: Path_) -> ResponsesStateRules:
        section = self.mapping(value, path)
        self.only_keys(section, path,
                       ("store", "ttl_seconds", "max_responses", "encryption_key_env"))
        state = ResponsesStateRules()
        if "store" in section:
            store = self.string(section["store"], (*path, "store"), RESPONSES_STORE_FORMS)
            if store != "sqlite" and not store.startswith(("sqlite:///", "redis://",
                                                           "rediss://")):
                raise self.fail((*path, "store"), f"expected {RESPONSES_STORE_FORMS}")
            state = replace(state, store=store)
        if "ttl_seconds" in section:
            ttl = section["ttl_seconds"]
            state = replace(state, ttl_seconds=None if ttl is None
                            else self.number(ttl, (*path, "ttl_seconds")))
        if "max_responses" in section:
            cap = section["max_responses"]
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise self.fail((*path, "max_responses"), "expected a positive integer or null")
            state = replace(state, max_responses=cap)
        if section.get("encryption_key_env") is not None:
            state = replace(state, encryption_key_env=self.env_name(
                section["encryption_key_env"], (*path, "encryption_key_env")))
        return state

    def tts(self, value: object, path: Path_) -> TtsRules:
        section = self.mapping(value, path)
        self.only_keys(section, path, (
            "path", "default_voice", "language_code", "voices", "voice_languages",
            "no_ssml_voices", "sample_rate_hz",
        ))
        tts = TtsRules()
        parsers: dict[str, Callable[[object, Path_], object]] = {
            "path": lambda v, p: self.string(v, p, "a path starting with /"),
            "default_voice": lambda v, p: None if v is None else self.string(v, p),
            "language_code": self.string,
            "voices": self.string_map,
            "voice_languages": self.string_map,
            "no_ssml_voices": lambda v, p: frozenset(self.strings(v, p)),
            "sample_rate_hz": self.positive_integer,
        }
        parsed = {key: parse(section[key], (*path, key))
                  for key, parse in parsers.items() if key in section}
        tts = replace(tts, **parsed)  # type: ignore[arg-type]
        if not tts.path.startswith("/"):
            raise self.fail((*path, "path"), "expected a path starting with /")
        return tts

    def string_map(self, value: object, path: Path_) -> Mapping[str, str]:
        section = self.mapping(value, path)
        return {str(k): self.string(v, (*path, str(k))) for k, v in section.items()}


# --------------------------------------------------------------------- trust boundary
# Apps that may use the proxy (`clients`), the key file (`keys.default_file`) and the
# egress exceptions (`egress.allow`). Secrets and keys never appear here: apps are
# known by the sha256 of their proxy secret, keys by the file or variable holding them.

APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Fields someone might use to paste a key or secret into rules.yaml: refused by name.
LITERAL_KEY_FIELDS = ("key", "api_key", "bastion_key", "default", "default_key", "value",
                      "secret", "password", "token")


@dataclass(frozen=True, slots=True)
class AppRules:
    """One `clients.apps` entry: who it is, how it proves it, which Bastion key it spends."""

    name: str
    secret_sha256: str  # lower-case hex of sha256(secret)
    bastion_key_env: str | None = None
    bastion_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class ClientsRules:
    apps: tuple[AppRules, ...] = ()
    # Transparent listeners carry no proxy credentials: their traffic is this app's.
    transparent_app: str | None = None

    def app(self, name: str | None) -> AppRules | None:
        return next((a for a in self.apps if a.name == name), None)


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


def reject_literal_keys(parser: _Parser, section: Mapping[str, Any], path: Path_) -> None:
    for name in LITERAL_KEY_FIELDS:
        if name in section:
            raise parser.fail((*path, name),
                              "keys and secrets never go in rules.yaml; name an environment "
                              "variable (*_env), a file (*_file) or, for an app's proxy "
                              "secret, its secret_sha256 (`bastion-edge app add`)")


def parse_key_file(parser: _Parser, value: object, path: Path_) -> str | None:
    section = parser.mapping(value, path)
    if "default_file" not in section:
        return None
    if "default_env" in section:
        raise parser.fail((*path, "default_file"), "give default_env or default_file, not both")
    return parser.string(section["default_file"], (*path, "default_file"), "a file path")


def parse_clients(parser: _Parser, value: object, path: Path_) -> ClientsRules:
    section = parser.mapping(value, path)
    parser.only_keys(section, path, ("apps", "transparent_app"))
    items = section.get("apps") or []
    if not isinstance(items, list):
        raise parser.fail((*path, "apps"), "expected a list of {name, secret_sha256}")
    apps: list[AppRules] = []
    for i, item in enumerate(items):
        app = _parse_app(parser, item, (*path, "apps", i))
        if any(a.name == app.name for a in apps):
            raise parser.fail((*path, "apps", i, "name"), f"app {app.name!r} declared twice")
        apps.append(app)
    clients = ClientsRules(tuple(apps))
    if section.get("transparent_app") is not None:
        name = parser.string(section["transparent_app"], (*path, "transparent_app"))
        if clients.app(name) is None:
            raise parser.fail((*path, "transparent_app"),
                              f"{name!r} is not one of the apps declared in clients.apps")
        clients = replace(clients, transparent_app=name)
    return clients


def _parse_app(parser: _Parser, value: object, path: Path_) -> AppRules:
    entry = parser.mapping(value, path)
    reject_literal_keys(parser, entry, path)
    parser.only_keys(entry, path,
                     ("name", "secret_sha256", "bastion_key_env", "bastion_key_file"))
    name = parser.string(entry.get("name"), (*path, "name"), "an app name")
    if not APP_NAME.fullmatch(name):
        raise parser.fail((*path, "name"),
                          f"expected letters, digits, '.', '_' or '-' (it is the user part of "
                          f"the proxy URL), got {name!r}")
    digest = entry.get("secret_sha256")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest.lower()):
        raise parser.fail((*path, "secret_sha256"),
                          "expected the 64 hex digits of sha256(secret) "
                          "(`bastion-edge app add NAME` prints it)")
    app = AppRules(name, digest.lower())
    if "bastion_key_env" in entry and "bastion_key_file" in entry:
        raise parser.fail((*path, "bastion_key_file"),
                          "give bastion_key_env or bastion_key_file, not both")
    if entry.get("bastion_key_env") is not None:
        app = replace(app, bastion_key_env=parser.env_name(
            entry["bastion_key_env"], (*path, "bastion_key_env")))
    if entry.get("bastion_key_file") is not None:
        app = replace(app, bastion_key_file=parser.string(
            entry["bastion_key_file"], (*path, "bastion_key_file"), "a file path"))
    return app


def parse_egress(parser: _Parser, value: object, path: Path_) -> EgressRules:
    section = parser.mapping(value, path)
    parser.only_keys(section, path, ("allow",))
    if section.get("allow") is None:
        return EgressRules()
    texts = parser.strings(section["allow"], (*path, "allow"))
    allow = []
    for i, text in enumerate(texts):
        try:
            allow.append(parse_egress_allow(text))
        except ValueError as e:
            where = (*path, "allow", i) if isinstance(section["allow"], list) else (*path, "allow")
            raise parser.fail(where, str(e)) from e
    return EgressRules(tuple(allow))


def parse_egress_allow(text: str) -> EgressAllow:
    """`host`, `host:port`, `[v6]:port`, an IP or a CIDR (a network has no port)."""
    shape = "expected host, host:port or a CIDR"
    if "/" in text:
        try:
            return EgressAllow(text, network=ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise ValueError(f"{shape}: {e}") from e
    with_port = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", text)
    if with_port:
        host, port_text = with_port.group(1), with_port.group(2)
    else:
        try:
            ipaddress.ip_address(text)  # a bare address, v6 included
            host, port_text = text, None
        except ValueError:
            host, _, port_text = text.partition(":")
            port_text = port_text or None
    port = int(port_text) if port_text is not None and port_text.isdigit() else None
    if port_text is not None and (port is None or not 0 < port < 65536):
        raise ValueError(f"{shape}: bad port in {text!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ValueError(f"{shape}, got {text!r}") from None
        return EgressAllow(text, host=host.lower().rstrip("."), port=port)
    return EgressAllow(text, network=ipaddress.ip_network(address), port=port)

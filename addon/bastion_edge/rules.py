"""rules.yaml: parsed and validated into one immutable `Rules` snapshot.

Every error names its YAML location (`models."gpt-4o": expected a string ...`) and
line, so `bastion-edge check` and the hot reloader can say exactly what is wrong.
Environment variables override the file (see `apply_environment`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from .cutover import CutoverMode, CutoverRules, StickyBy
from .request_facts import ENDPOINTS, RequestFacts
from .riva_contract import DEFAULT_TTS_PATH

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

    def matches(self, facts: RequestFacts) -> bool:
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
        return urlsplit(self.base_url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def path_prefix(self) -> str:
        """The base URL's path without a trailing slash, e.g. `/v1`."""
        return urlsplit(self.base_url).path.rstrip("/")


@dataclass(frozen=True, slots=True)
class TtsRules:
    path: str = DEFAULT_TTS_PATH
    default_voice: str | None = "English-US.Female-1"
    language_code: str = "en-US"
    voices: Mapping[str, str] = field(default_factory=dict)  # OpenAI name -> Riva name
    voice_languages: Mapping[str, str] = field(default_factory=dict)  # Riva name -> lang
    no_ssml_voices: frozenset[str] = frozenset()  # Riva voices without SSML support
    sample_rate_hz: int = 22050


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
    source: str = "<defaults>"
    sha256: str = ""

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
    return parse_rules(raw, source=str(path))


def parse_rules(raw: bytes | str, source: str = "<string>") -> Rules:
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
            "tts", "cutover", "responses_state",
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
            rules = replace(rules, key_env=key_env, key_rules=key_rules)
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
        if "responses_state" in top:
            rules = replace(rules, responses_state=self.responses_state(
                top["responses_state"], ("responses_state",)))
        return rules

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
        self.only_keys(section, path, ("default_env", "select"))
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
        ))
        condition = Condition()
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

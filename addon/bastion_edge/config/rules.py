"""rules.yaml: read once, validated into one immutable `Rules` snapshot (config.schema).

Each top-level key is a `Section` below, read with `config.reader`'s checks; every error
names its YAML location and line, so `bastion-edge check` and the hot reloader can say
exactly what is wrong. Environment variables override the file (`apply_environment`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from bastion_edge.config import model_sections as models
from bastion_edge.config import service_sections as service
from bastion_edge.config import trust
from bastion_edge.config.batch_rules import read_batches
from bastion_edge.config.limits_section import read_limits
from bastion_edge.config.reader import (
    Reader,
    RulesError,
    Section,
    field,
    format_location,
    read_sections,
    read_yaml,
)
from bastion_edge.config.schema import (
    ALL_SUPPORTED,
    DEFAULT_BASE_URL,
    DEFAULT_MODELS_REFRESH_SECONDS,
    AppRules,
    Condition,
    EgressAllow,
    KeyRule,
    ModelCapabilities,
    ModelRule,
    ResponsesStateRules,
    Rules,
    TtsRules,
    UpstreamRules,
)
from bastion_edge.config.trust import APP_NAME, parse_egress_allow
from bastion_edge.config.usage_rules import read_usage

__all__ = [  # the schema names most callers want, re-exported with the reader's entry points
    "ALL_SUPPORTED", "APP_NAME", "DEFAULT_BASE_URL", "DEFAULT_MODELS_REFRESH_SECONDS",
    "SECTIONS", "AppRules", "Condition", "EgressAllow", "KeyRule", "ModelCapabilities",
    "ModelRule", "ResponsesStateRules", "Rules", "RulesError", "TtsRules", "UpstreamRules",
    "apply_environment", "format_location", "load_rules", "parse_egress_allow", "parse_rules",
]

# The top-level keys, in the order `unknown key; expected one of ...` lists them.
SECTIONS = (
    field("upstream", service.read_upstream),
    Section("intercept", service.read_intercept),
    Section("keys", models.read_keys),
    field("models", models.read_models, null_is_default=True),
    field("unmapped_models", lambda r, v, p: r.choice(v, p, ("reject", "pass_through"))),
    field("reply_model", lambda r, v, p: r.choice(v, p, ("upstream", "original"))),
    field("tts", service.read_tts),
    field("cutover", service.read_cutover),
    field("responses_state", service.read_responses_state),
    field("fallbacks", models.read_fallbacks, null_is_default=True),
    field("capabilities", models.read_capabilities, null_is_default=True),
    field("models_refresh_seconds", Reader.number),
    field("clients", trust.read_clients),
    field("egress", trust.read_egress),
    field("embedding_dimensions", models.read_embedding_dimensions),
    field("batches", read_batches),
    field("usage", read_usage, null_is_default=True),
    field("limits", read_limits),
)


def load_rules(path: str | Path) -> Rules:
    """Read and validate a rules file (no environment overrides applied)."""
    raw = Path(path).read_bytes()
    return parse_rules(raw, source=str(path), allow_empty=False)


def parse_rules(raw: bytes | str, source: str = "<string>", *,
                allow_empty: bool = True) -> Rules:
    """Validate rules text; a file (`allow_empty=False`) must hold at least one setting."""
    data = raw.encode() if isinstance(raw, str) else raw
    document = read_yaml(data)
    if document.tree is None and not allow_empty:  # a truncated write, not "all defaults"
        raise RulesError("", "the rules file is empty (no settings, only comments or "
                             "blank lines)", None)
    reader = Reader(document.lines, document.key_lines)
    found = read_sections(reader, document.tree if document.tree is not None else {},
                          SECTIONS)
    return Rules(**found, source=source, sha256=hashlib.sha256(data).hexdigest())


def apply_environment(rules: Rules, environ: Mapping[str, str]) -> Rules:
    """Environment overrides: BASTION_BASE_URL, BASTION_UPSTREAM_CA, BASTION_OPENAI_URL."""
    if environ.get("BASTION_OPENAI_URL"):
        service.check_base_url(environ["BASTION_OPENAI_URL"], "BASTION_OPENAI_URL")
        rules = replace(rules, cutover=replace(
            rules.cutover, openai_base_url=environ["BASTION_OPENAI_URL"]))
    upstream = rules.upstream
    if environ.get("BASTION_BASE_URL"):
        base_url = environ["BASTION_BASE_URL"]
        service.check_base_url(base_url, "BASTION_BASE_URL")
        upstream = replace(upstream, base_url=base_url)
    if environ.get("BASTION_UPSTREAM_CA"):
        upstream = replace(upstream, ca_file=environ["BASTION_UPSTREAM_CA"])
    return replace(rules, upstream=upstream)

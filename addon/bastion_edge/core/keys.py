"""Which Bastion key a request is sent with.

Keys never live in rules.yaml: rules name environment variables or files, chosen by
the calling app (its declared `bastion_key_env`/`bastion_key_file` first, then the
first matching `keys.select`, then `default_file` or `default_env`). The app's own
OpenAI key is never forwarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bastion_edge.config.schema import Rules
from bastion_edge.core.conditions import holds
from bastion_edge.core.facts import RequestFacts
from bastion_edge.errors import AUTHENTICATION, ApiError

FILE_PREFIX = "file:"


class KeyFileReader(Protocol):
    def read(self, path: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class KeyChoice:
    env: str  # where the key came from, safe to log: a variable name or "file:<path>"
    key: str = field(repr=False)


def key_source(rules: Rules, facts: RequestFacts) -> str:
    """The variable name (or "file:<path>") this request's key comes from."""
    app = rules.clients.app(facts.app)
    if app is not None and app.bastion_key_file:
        return FILE_PREFIX + app.bastion_key_file
    if app is not None and app.bastion_key_env:
        return app.bastion_key_env
    for rule in rules.key_rules:
        if holds(rule.when, facts):
            return rule.env
    return FILE_PREFIX + rules.key_file if rules.key_file else rules.key_env


def all_key_sources(rules: Rules) -> list[str]:
    """Every source a key may come from (for redaction and `bastion-edge check`)."""
    sources = [FILE_PREFIX + rules.key_file if rules.key_file else rules.key_env]
    sources += [rule.env for rule in rules.key_rules]
    for app in rules.clients.apps:
        if app.bastion_key_file:
            sources.append(FILE_PREFIX + app.bastion_key_file)
        elif app.bastion_key_env:
            sources.append(app.bastion_key_env)
    return sources


def read_source(source: str, environ: Mapping[str, str], files: KeyFileReader | None) -> str:
    if source.startswith(FILE_PREFIX):
        return (files.read(source.removeprefix(FILE_PREFIX)) if files else None) or ""
    return environ.get(source, "").strip()


def select_key(
    rules: Rules, facts: RequestFacts, environ: Mapping[str, str],
    files: KeyFileReader | None = None,
) -> KeyChoice:
    """The Bastion key for this request; fails closed with a 401 envelope."""
    source = key_source(rules, facts)
    key = read_source(source, environ, files)
    if source.startswith(FILE_PREFIX):
        missing = f"key file {source.removeprefix(FILE_PREFIX)} is unreadable or empty"
    else:
        missing = f"environment variable {source} is not set"
    if not key:
        raise ApiError(
            401,
            f"bastion-edge has no Bastion API key for this app: {missing} "
            f"(rules: {rules.source}). Nothing was sent upstream.",
            "bastion_key_missing",
            AUTHENTICATION,
        )
    return KeyChoice(source, key)

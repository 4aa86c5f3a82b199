"""Which Bastion key a request is sent with.

Keys never live in rules.yaml: rules name environment variables, chosen by the
calling app (sha256 prefix of the app's own key, or client address). The app's own
OpenAI key is never forwarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion_edge.config.rules import Rules
from bastion_edge.core.facts import RequestFacts
from bastion_edge.errors import AUTHENTICATION, ApiError


@dataclass(frozen=True, slots=True)
class KeyChoice:
    env: str  # the environment variable the key came from (safe to log)
    key: str = field(repr=False)


def select_key(rules: Rules, facts: RequestFacts, environ: Mapping[str, str]) -> KeyChoice:
    """The Bastion key for this request; fails closed with a 401 envelope."""
    env = rules.key_env
    for rule in rules.key_rules:
        if rule.when.matches(facts):
            env = rule.env
            break
    key = environ.get(env, "").strip()
    if not key:
        raise ApiError(
            401,
            f"bastion-edge has no Bastion API key for this app: environment variable {env} "
            f"is not set (rules: {rules.source}). Nothing was sent upstream.",
            "bastion_key_missing",
            AUTHENTICATION,
        )
    return KeyChoice(env, key)

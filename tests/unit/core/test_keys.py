"""select_key: the Bastion key per app, failing closed with a 401 envelope."""

from __future__ import annotations

import hashlib

import pytest

from bastion_edge.config.rules import parse_rules
from bastion_edge.core.facts import CHAT, RequestFacts
from bastion_edge.core.keys import KeyChoice, select_key
from bastion_edge.errors import ApiError

APP_KEY = "sk-proj-app-staging-123"
APP_HASH = hashlib.sha256(APP_KEY.encode()).hexdigest()

RULES = parse_rules(
    "keys:\n"
    "  default_env: KEY_DEFAULT\n"
    "  select:\n"
    f"    - when: {{app_key_sha256: '{APP_HASH[:16]}'}}\n"
    "      env: KEY_STAGING\n"
    "    - when: {client: [10.20.0.0/16, 'fd00::/8']}\n"
    "      env: KEY_PROD\n",
    source="/etc/bastion/rules.yaml",
)
ENV = {"KEY_DEFAULT": "bk-default", "KEY_STAGING": "bk-staging", "KEY_PROD": "bk-prod"}


def test_default_env_used_without_match() -> None:
    facts = RequestFacts(CHAT, client_ip="192.168.1.5")
    assert select_key(RULES, facts, ENV) == KeyChoice("KEY_DEFAULT", "bk-default")


def test_default_env_is_qubittron_api_key_when_unconfigured() -> None:
    rules = parse_rules("")
    choice = select_key(rules, RequestFacts(CHAT), {"QUBITTRON_API_KEY": " bk-1 \n"})
    assert choice == KeyChoice("QUBITTRON_API_KEY", "bk-1")


def test_key_selected_by_app_key_hash_prefix() -> None:
    facts = RequestFacts(CHAT, app_key_sha256=APP_HASH, client_ip="10.20.1.1")
    assert select_key(RULES, facts, ENV) == KeyChoice("KEY_STAGING", "bk-staging")


def test_other_app_key_hash_not_selected() -> None:
    other = hashlib.sha256(b"sk-other").hexdigest()
    facts = RequestFacts(CHAT, app_key_sha256=other, client_ip="127.0.0.1")
    assert select_key(RULES, facts, ENV).env == "KEY_DEFAULT"


@pytest.mark.parametrize("client", ["10.20.0.1", "10.20.255.254", "::ffff:10.20.3.4", "fd00::1"])
def test_key_selected_by_client_cidr(client: str) -> None:
    facts = RequestFacts(CHAT, client_ip=client)
    assert select_key(RULES, facts, ENV) == KeyChoice("KEY_PROD", "bk-prod")


@pytest.mark.parametrize("client", ["10.21.0.1", "::ffff:10.21.0.1", "fe80::1", "not-an-ip", None])
def test_client_outside_cidr_gets_default(client: str | None) -> None:
    facts = RequestFacts(CHAT, client_ip=client)
    assert select_key(RULES, facts, ENV).env == "KEY_DEFAULT"


def test_missing_key_is_401_envelope_naming_variable_without_key_values() -> None:
    facts = RequestFacts(CHAT, app_key_sha256=APP_HASH)
    env = {"KEY_DEFAULT": "bk-default-secret"}
    with pytest.raises(ApiError) as info:
        select_key(RULES, facts, env)
    error = info.value
    assert error.status == 401
    assert error.code == "bastion_key_missing"
    assert error.type == "authentication_error"
    assert "KEY_STAGING" in error.message
    assert "/etc/bastion/rules.yaml" in error.message
    envelope = error.body().decode()
    assert set(error.envelope()["error"]) == {"message", "type", "param", "code"}
    for secret in ("bk-default-secret", APP_KEY, APP_HASH):
        assert secret not in envelope


def test_blank_key_counts_as_missing() -> None:
    with pytest.raises(ApiError, match="KEY_DEFAULT"):
        select_key(RULES, RequestFacts(CHAT), {"KEY_DEFAULT": "   "})

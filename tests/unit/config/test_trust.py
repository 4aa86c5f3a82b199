"""rules.yaml: clients.apps, keys.default_file, egress.allow and the `app` condition."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from bastion_edge.config.rules import AppRules, RulesError, parse_egress_allow, parse_rules
from bastion_edge.core.conditions import holds
from bastion_edge.core.facts import CHAT, RequestFacts

DIGEST = hashlib.sha256(b"s3cret").hexdigest()


def test_apps_keys_file_and_egress_are_parsed() -> None:
    rules = parse_rules(f"""
keys: {{default_file: /run/secrets/bastion/key}}
clients:
  apps:
    - {{name: billing, secret_sha256: "{DIGEST.upper()}", bastion_key_env: KEY_BILLING}}
    - {{name: reports, secret_sha256: "{DIGEST}", bastion_key_file: /run/secrets/r}}
  transparent_app: reports
egress:
  allow: ["localhost:8443", 10.0.0.0/8, "[::1]:9000", example.internal]
""")
    assert rules.key_file == "/run/secrets/bastion/key"
    assert rules.clients.apps == (
        AppRules("billing", DIGEST, bastion_key_env="KEY_BILLING"),
        AppRules("reports", DIGEST, bastion_key_file="/run/secrets/r"))
    assert rules.clients.transparent_app == "reports"
    allow = rules.egress.allow
    assert (allow[0].host, allow[0].port) == ("localhost", 8443)
    assert allow[1].network == ipaddress.ip_network("10.0.0.0/8") and allow[1].port is None
    assert (allow[2].network, allow[2].port) == (ipaddress.ip_network("::1/128"), 9000)
    assert allow[3].host == "example.internal"


@pytest.mark.parametrize(("text", "location"), [
    ("keys: {default_env: K, key: bk-live-123}", "keys.key"),
    (f"clients: {{apps: [{{name: a, secret: x, secret_sha256: '{DIGEST}'}}]}}",
     "clients.apps[0].secret"),
    (f"clients: {{apps: [{{name: a, secret_sha256: '{DIGEST}', bastion_key: bk}}]}}",
     "clients.apps[0].bastion_key"),
])
def test_a_literal_key_or_secret_is_refused_by_location(text: str, location: str) -> None:
    with pytest.raises(RulesError, match=r"never go in rules\.yaml") as e:
        parse_rules(text)
    assert e.value.location == location


@pytest.mark.parametrize(("text", "location", "message"), [
    ("clients: {apps: [{name: a, secret_sha256: abc}]}", "clients.apps[0].secret_sha256",
     "64 hex"),
    ("clients:\n  apps:\n    - {name: 'a b', secret_sha256: x}", "clients.apps[0].name",
     "user part"),
    (f"clients: {{apps: [{{name: a, secret_sha256: '{DIGEST}'}}, "
     f"{{name: a, secret_sha256: '{DIGEST}'}}]}}", "clients.apps[1].name", "twice"),
    (f"clients: {{apps: [{{name: a, secret_sha256: '{DIGEST}'}}], transparent_app: b}}",
     "clients.transparent_app", "not one of the apps"),
    (f"clients: {{apps: [{{name: a, secret_sha256: '{DIGEST}', bastion_key_env: K, "
     "bastion_key_file: /k}]}", "clients.apps[0].bastion_key_file", "not both"),
    ("keys: {default_env: K, default_file: /k}", "keys.default_file", "not both"),
    ("egress: {allow: [localhost, 'host:99999']}", "egress.allow[1]", "bad port"),
    ("egress: {allow: [10.0.0.0/33]}", "egress.allow[0]", "CIDR"),
    ("egress: {allow: ['exa mple']}", "egress.allow[0]", "host:port"),
])
def test_errors_name_their_location(text: str, location: str, message: str) -> None:
    with pytest.raises(RulesError, match=message) as e:
        parse_rules(text)
    assert e.value.location == location
    assert e.value.line is not None


def test_app_condition_in_models_and_keys() -> None:
    rules = parse_rules("""
keys:
  select:
    - {when: {app: [billing, ledger]}, env: KEY_FINANCE}
models:
  gpt-4o:
    - {when: {app: billing}, use: big}
    - use: small
""")
    billing = RequestFacts(CHAT, app="billing")
    assert holds(rules.key_rules[0].when, billing)
    assert holds(rules.key_rules[0].when, RequestFacts(CHAT, app="ledger"))
    assert not holds(rules.key_rules[0].when, RequestFacts(CHAT))
    choices = rules.models[0].choices
    assert holds(choices[0].when, billing)
    assert not holds(choices[0].when, RequestFacts(CHAT, app="reports"))


def test_egress_allow_forms() -> None:
    assert parse_egress_allow("127.0.0.1").network == ipaddress.ip_network("127.0.0.1/32")
    assert parse_egress_allow("::1").network == ipaddress.ip_network("::1/128")
    assert parse_egress_allow("Metadata.Internal.:80").host == "metadata.internal"
    with pytest.raises(ValueError, match="bad port"):
        parse_egress_allow("host:0")


def test_quotas_per_app_with_a_default_and_an_outage_mode() -> None:
    from bastion_edge.config.quota_rules import NO_QUOTA, Quota

    rules = parse_rules(f"""
clients:
  default_quota: {{requests_per_minute: 5}}
  quota_store_outage: fail_closed
  apps:
    - {{name: own, secret_sha256: "{DIGEST}", quota: {{tokens_per_day: 7}}}}
    - {{name: defaulted, secret_sha256: "{DIGEST}"}}
    - {{name: unlimited, secret_sha256: "{DIGEST}", quota: {{}}}}
""")
    clients = rules.clients
    assert clients.quota_of("own") == Quota(tokens_per_day=7)
    assert clients.quota_of("defaulted") == Quota(requests_per_minute=5)
    assert clients.quota_of("unlimited") == NO_QUOTA
    assert clients.quota_of(None) == NO_QUOTA  # no app: nobody to count
    assert clients.quota_store_outage == "fail_closed"
    assert parse_rules("clients: {apps: []}").clients.quota_store_outage == "fail_open"


@pytest.mark.parametrize(("text", "location"), [
    (f"apps: [{{name: a, secret_sha256: {DIGEST}, quota: {{requests_per_minute: 0}}}}]",
     "clients.apps[0].quota.requests_per_minute"),
    (f"apps: [{{name: a, secret_sha256: {DIGEST}, quota: {{rpm: 3}}}}]",
     "clients.apps[0].quota.rpm"),
    ("default_quota: 3", "clients.default_quota"),
    ("quota_store_outage: maybe", "clients.quota_store_outage"),
])
def test_bad_quotas_name_their_location(text: str, location: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(f"clients: {{{text}}}")
    assert location in str(caught.value)

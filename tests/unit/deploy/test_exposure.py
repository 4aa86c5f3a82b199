"""Fail closed on exposure: no apps declared means loopback only."""

from __future__ import annotations

import hashlib

import pytest

from bastion_edge.cli.main import main
from bastion_edge.config.rules import parse_rules
from bastion_edge.deploy.exposure import exposure_problem, is_loopback_host, mode_problem

NO_APPS = parse_rules("")
WITH_APPS = parse_rules(
    f"clients: {{apps: [{{name: a, secret_sha256: '{hashlib.sha256(b'x').hexdigest()}'}}]}}")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False), ("proxy.internal", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_exposure_needs_apps() -> None:
    problem = exposure_problem(NO_APPS, "0.0.0.0", ["regular"])
    assert problem is not None
    assert "clients.apps" in problem and "--allow-unauthenticated" in problem
    assert exposure_problem(WITH_APPS, "0.0.0.0", ["regular"]) is None
    assert exposure_problem(NO_APPS, "127.0.0.1", ["regular"]) is None
    # A mode may listen elsewhere than --listen-host.
    assert exposure_problem(NO_APPS, "127.0.0.1", ["regular", "transparent@0.0.0.0:8081"])


def test_app_add_prints_a_rules_entry_and_a_proxy_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["app", "add", "billing", "--proxy-host", "edge", "--listen-port", "3128"]) == 0
    out = capsys.readouterr().out
    url = next(line for line in out.splitlines() if line.startswith("HTTPS_PROXY="))
    secret = url.split("billing:", 1)[1].split("@edge:3128", 1)[0]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    rules = parse_rules("clients:\n  apps:\n" + "".join(
        line + "\n" for line in out.splitlines() if line.startswith("  ")))
    assert rules.clients.apps[0].name == "billing"
    assert rules.clients.apps[0].secret_sha256 == digest
    assert main(["app", "add", "bad name"]) == 2


def test_check_lists_apps_key_sources_and_egress_exceptions_never_secrets() -> None:
    from bastion_edge.cli.main import describe_rules

    rules = parse_rules(f"""
keys: {{default_file: /nonexistent/key}}
clients:
  apps:
    - {{name: billing, secret_sha256: '{hashlib.sha256(b"x").hexdigest()}',
       bastion_key_env: KEY_BILLING}}
  transparent_app: billing
egress: {{allow: ["localhost:8443"]}}
models:
  gpt-4o: [{{when: {{app: billing}}, use: big}}, {{use: small}}]
""")
    text = describe_rules(rules, {"KEY_BILLING": "bk-secret-value"})
    assert "file /nonexistent/key (NOT READABLE)" in text
    assert "billing" in text and "$KEY_BILLING" in text and "app=billing" in text
    assert "transparent listeners: billing" in text and "localhost:8443" in text
    assert "bk-secret-value" not in text and hashlib.sha256(b"x").hexdigest() not in text


@pytest.mark.parametrize("mode", ["socks5", "socks5@127.0.0.1:1080", "upstream:http://u:3128",
                                  "reverse:https://example.com", "dns", "wireguard", "local",
                                  "tun", "not-a-mode"])
def test_modes_the_proxy_does_not_police_never_start(mode: str) -> None:
    for rules in (NO_APPS, WITH_APPS):
        assert mode_problem(rules, "127.0.0.1", ["regular", mode]) is not None


def test_a_transparent_listener_beyond_loopback_needs_the_redirect_only_flag() -> None:
    assert mode_problem(WITH_APPS, "127.0.0.1", ["regular", "transparent@8081",
                                                 "transparent@::1:8081"]) is None
    for host, modes in (("0.0.0.0", ["transparent@8081"]),
                        ("127.0.0.1", ["transparent@10.0.0.5:8081"]),
                        ("", ["regular", "transparent"])):
        problem = mode_problem(WITH_APPS, host, modes)
        assert problem is not None and "--transparent-redirect-only" in problem
        assert mode_problem(WITH_APPS, host, modes, redirect_only=True) is None
    # Without apps the exposure check decides (--allow-unauthenticated or loopback).
    assert mode_problem(NO_APPS, "0.0.0.0", ["transparent@8081"]) is None
    assert exposure_problem(NO_APPS, "0.0.0.0", ["transparent@8081"]) is not None

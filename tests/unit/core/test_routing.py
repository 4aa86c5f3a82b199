"""classify_host and bastion_target: the one place that decides the upstream."""

from __future__ import annotations

import pytest

from bastion_edge.config.rules import Rules, UpstreamRules, parse_rules
from bastion_edge.core.routing import (
    HostKind,
    Target,
    bastion_target,
    classify_host,
    map_openai_path,
)


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("api.openai.com", HostKind.OPENAI),
        ("API.OpenAI.com", HostKind.OPENAI),
        ("api.openai.com.", HostKind.OPENAI),
        ("api.qubittron.ai", HostKind.BASTION),
        ("openai.com", None),
        ("api.openai.com.evil.net", None),
        ("xapi.openai.com", None),
        ("example.com", None),
    ],
)
def test_classify_host(host: str, kind: HostKind | None) -> None:
    assert classify_host(Rules(), host) is kind


def test_classify_host_follows_intercept_rules() -> None:
    rules = parse_rules(
        "intercept: {openai_hosts: [oai.corp.example], bastion_hosts: [b.example]}\n")
    assert classify_host(rules, "oai.corp.example") is HostKind.OPENAI
    assert classify_host(rules, "b.example") is HostKind.BASTION
    assert classify_host(rules, "api.openai.com") is None


@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [
        ("/v1", "/v1/chat/completions", "/v1/chat/completions"),
        ("/api/v1", "/v1/chat/completions?x=1", "/api/v1/chat/completions?x=1"),
        ("", "/v1/embeddings", "/embeddings"),
        ("/api", "/v1", "/api"),
        ("/api", "/v1?a=b", "/api?a=b"),
        ("/api", "/v10/x", "/v10/x"),
        ("/api", "/other", "/other"),
    ],
)
def test_map_openai_path(prefix: str, path: str, expected: str) -> None:
    assert map_openai_path(prefix, path) == expected


def test_openai_request_goes_under_base_url() -> None:
    upstream = UpstreamRules(base_url="https://gw.example:9443/bastion/v1/")
    dest = bastion_target(upstream, HostKind.OPENAI, "/v1/chat/completions")
    assert dest == Target("https", "gw.example", 9443, "/bastion/v1/chat/completions")
    assert dest.host_header == "gw.example:9443"
    assert dest.url == "https://gw.example:9443/bastion/v1/chat/completions"


def test_bastion_request_keeps_its_path_and_uses_https() -> None:
    dest = bastion_target(UpstreamRules(), HostKind.BASTION, "/v1/models")
    assert dest == Target("https", "api.qubittron.ai", 443, "/v1/models")
    assert dest.host_header == "api.qubittron.ai"  # default port omitted


def test_ipv6_base_url_host_header_bracketed() -> None:
    upstream = UpstreamRules(base_url="https://[::1]:9443/v1")
    dest = bastion_target(upstream, HostKind.OPENAI, "/v1/models")
    assert dest.host_header == "[::1]:9443"

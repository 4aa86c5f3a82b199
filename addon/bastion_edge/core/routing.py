"""Where a request goes: the one place that decides the upstream.

`classify_host` says whose traffic a request is (OpenAI's, Bastion's, or neither);
`bastion_target` maps it onto the configured Bastion base URL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from bastion_edge.config.schema import Rules, UpstreamRules


class HostKind(StrEnum):
    OPENAI = "openai"    # rewrite: host, key, models, store, TTS
    BASTION = "bastion"  # already Bastion: keep the app's key, only force https


def classify_host(rules: Rules, host: str) -> HostKind | None:
    name = host.lower().rstrip(".")
    if name in rules.openai_hosts:
        return HostKind.OPENAI
    if name in rules.bastion_hosts:
        return HostKind.BASTION
    return None


class Target(NamedTuple):
    """An upstream address: scheme, host, port and path."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path}"


def bastion_target(upstream: UpstreamRules, kind: HostKind, path: str) -> Target:
    """OpenAI paths `/v1/...` go under the base URL's path; Bastion paths stay as sent."""
    if kind is HostKind.OPENAI:
        path = map_openai_path(upstream.path_prefix, path)
    return Target("https", upstream.host, upstream.port, path)


def map_openai_path(prefix: str, path: str) -> str:
    if path == "/v1" or path.startswith(("/v1/", "/v1?")):
        return prefix + path[3:]
    return path

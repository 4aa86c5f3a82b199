"""The proxy's own HTTP client to Bastion (TTS translation calls Riva with it).

TLS trust matches what mitmproxy uses upstream: the system CAs, plus
`BASTION_UPSTREAM_CA` when given. Redirects are never followed (a redirect could
carry the Bastion key somewhere else).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import httpx

from bastion_edge.config.schema import UpstreamRules
from bastion_edge.deploy.tls_bundles import upstream_bundle

CONNECT_TIMEOUT_SECONDS = 10.0


def upstream_ssl_context(upstream: UpstreamRules, confdir: Path) -> ssl.SSLContext:
    if upstream.ca_file:
        return ssl.create_default_context(cafile=str(upstream_bundle(confdir, upstream.ca_file)))
    return ssl.create_default_context(cafile=certifi.where())


def make_upstream_client(upstream: UpstreamRules, confdir: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=upstream_ssl_context(upstream, confdir),
        timeout=httpx.Timeout(upstream.response_timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS),
        follow_redirects=False,
        trust_env=False,
    )

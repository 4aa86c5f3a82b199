"""An app that does not trust the proxy's CA: say the fix once per client, and count it.

mitmproxy logs `Client TLS handshake failed. The client does not trust the proxy's
certificate for api.openai.com (tlsv1 alert unknown ca)` at every connection, and the
app only sees a connection error. This addon (mitmproxy's `tls_failed_client` hook)
logs, once per client address, how to give the app the CA: `bastion-edge env`, or
`SSL_CERT_FILE` / `NODE_EXTRA_CA_CERTS` with the files in the confdir. Every such
handshake is counted in `bastion_edge_client_tls_untrusted_total`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mitmproxy import ctx, tls
from prometheus_client import CollectorRegistry, Counter

from bastion_edge.deploy.tls_bundles import CLIENT_BUNDLE, PROXY_CA_CERT

UNTRUSTED_MARK = "does not trust the proxy's certificate"
MAX_REMEMBERED = 4096  # client addresses already told; forgotten all at once beyond it
log = logging.getLogger(__name__)


def advice(client: str, error: str, confdir: Path, env_command: str) -> str:
    """The log line for one client: who, what failed, and the fix."""
    return (f"bastion-edge: the app at {client} does not trust the proxy's CA ({error}). "
            f"Give it the CA: eval \"$({env_command} --confdir {confdir})\" in its shell, "
            f"or set SSL_CERT_FILE={confdir / CLIENT_BUNDLE} (Python, curl, Go; also "
            f"REQUESTS_CA_BUNDLE for requests) or NODE_EXTRA_CA_CERTS="
            f"{confdir / PROXY_CA_CERT} (Node). Said once per client address; every "
            "such handshake is counted in bastion_edge_client_tls_untrusted_total.")


class TlsAdvice:
    """Add next to the BastionEdge addon: `TlsAdvice(edge.metrics.registry)`."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 env_command: str = "bastion-edge env") -> None:
        self.env_command = env_command
        self.untrusted = Counter(
            "bastion_edge_client_tls_untrusted",
            "Client TLS handshakes that failed because the client does not trust the "
            "proxy's CA.", registry=registry)
        self.told: set[str] = set()

    def tls_failed_client(self, data: tls.TlsData) -> None:
        error = data.conn.error or ""
        if UNTRUSTED_MARK not in error:
            return
        self.untrusted.inc()
        peer = data.context.client.peername
        address = str(peer[0]) if peer else "unknown"
        if address in self.told:
            return
        if len(self.told) >= MAX_REMEMBERED:
            self.told.clear()
        self.told.add(address)
        detail = error.split("(", 1)[-1].rstrip(")") if "(" in error else error
        host = data.conn.sni or "the intercepted host"
        confdir = Path(os.path.expanduser(ctx.options.confdir))
        log.warning(advice(address, f"{detail} for {host}", confdir, self.env_command))

"""CA bundles: `SSL_CERT_FILE` replaces a client's whole trust store, so the bundle an
app gets is the system CAs plus the proxy CA; likewise the upstream bundle is the
system CAs plus `BASTION_UPSTREAM_CA`, so other upstreams still verify."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import certifi

PROXY_CA_CERT = "mitmproxy-ca-cert.pem"
CLIENT_BUNDLE = "ca-bundle.pem"
UPSTREAM_BUNDLE = "upstream-ca-bundle.pem"

_SYSTEM_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSD
)


def system_ca_file() -> Path:
    default = ssl.get_default_verify_paths().cafile
    for candidate in (default, *_SYSTEM_CANDIDATES):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return Path(certifi.where())


def write_bundle(dest: Path, parts: list[Path]) -> Path:
    """Concatenate PEM files into `dest` (rewritten only when the content changes)."""
    content = b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in parts)
    if not dest.exists() or dest.read_bytes() != content:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # One temporary file per process: `--workers` start several writers at once.
        tmp = dest.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(0o644)
        tmp.replace(dest)
    return dest


def client_bundle(confdir: Path) -> Path:
    return write_bundle(confdir / CLIENT_BUNDLE, [system_ca_file(), confdir / PROXY_CA_CERT])


def upstream_bundle(confdir: Path, ca_file: str) -> Path:
    return write_bundle(confdir / UPSTREAM_BUNDLE, [system_ca_file(), Path(ca_file)])


def ensure_ca(confdir: Path) -> Path:
    """Create the proxy CA the way mitmproxy does, if it does not exist yet."""
    from mitmproxy import certs

    confdir.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(str(confdir), "mitmproxy", 2048)
    return confdir / PROXY_CA_CERT

"""The environment an app needs to use the proxy: what `bastion-edge env` prints and the
sidecar exports as app.env."""

from __future__ import annotations

from pathlib import Path


def app_environment(proxy_url: str, bundle: Path, proxy_ca: Path) -> dict[str, str]:
    """The variables an app needs (what `bastion-edge env` prints)."""
    return {
        "HTTPS_PROXY": proxy_url,
        "HTTP_PROXY": proxy_url,
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),  # curl prefers it over SSL_CERT_FILE when set
        "NODE_EXTRA_CA_CERTS": str(proxy_ca),
        "NODE_USE_ENV_PROXY": "1",
    }

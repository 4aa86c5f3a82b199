"""The environment an app needs to use the proxy: what `bastion-edge env` prints and the
sidecar exports as app.env."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

# Set by the sidecar entrypoint to the app.env it exported: the proxy's log then shows the
# app's view (the shared directory as the app mounts it, the proxy as the app reaches it)
# instead of the sidecar's own confdir and listen address.
EXPORTED_ENV_VAR = "BASTION_APP_ENV_FILE"
NODE_NOTE = ("# Node's fetch honours HTTPS_PROXY from Node 24 on (NODE_USE_ENV_PROXY=1 above); "
             "for older Node, see docs/how-to/transparent.md")


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


def exported_app_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """In the sidecar: the exported app.env as `export` lines for the log, else None."""
    path = environ.get(EXPORTED_ENV_VAR)
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    lines = [f"export {name}={shlex.quote(value)}" for name, _, value in pairs]
    return "\n".join([*lines, f"# (the same lines are in {path} for an env file)", NODE_NOTE])

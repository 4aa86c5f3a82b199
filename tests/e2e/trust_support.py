"""Shared by the trust-boundary end-to-end tests: rules with apps, a loopback origin."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import REPO, free_port

BILLING_SECRET = "billing-proxy-secret-5d2e"
REPORTS_SECRET = "reports-proxy-secret-0b7a"
BILLING_KEY = "bastion-billing-key-44c1"


def rules_with_apps(tmp: Path, extra: str = "") -> Path:
    """The shipped rules plus two apps (billing spends its own key) and `extra`."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "rules.yaml"
    path.write_text((REPO / "rules.yaml").read_text() + f"""
clients:
  apps:
    - name: billing
      secret_sha256: {hashlib.sha256(BILLING_SECRET.encode()).hexdigest()}
      bastion_key_env: QUBITTRON_API_KEY_BILLING
    - name: reports
      secret_sha256: {hashlib.sha256(REPORTS_SECRET.encode()).hexdigest()}
{extra}""")
    return path


def with_credentials(proxy_url: str, app: str, secret: str) -> str:
    return proxy_url.replace("http://", f"http://{app}:{secret}@", 1)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--noproxy", "", *args],
                          capture_output=True, text=True, timeout=30)


def headers_of(entry: dict[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in entry["headers"].items()}


@dataclass
class Origin:
    """A plain-http service on loopback that counts who reached it."""

    port: int
    hits: list[str] = field(default_factory=list)


@contextmanager
def loopback_origin() -> Iterator[Origin]:
    origin = Origin(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            origin.hits.append(self.path)
            body = b"loopback origin says hi"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", origin.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()

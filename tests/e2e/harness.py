"""End-to-end test harness: the product's own process runner plus test keys."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from bastion_edge.deploy.tls_bundles import ensure_ca
from bastion_edge.rehearsal.localrun import (
    BASTION_EDGE,
    BIN,
    Process,
    Proxy,
    Sandbox,
    free_port,
    start,
    start_sandbox,
    wait_until,
)
from bastion_edge.rehearsal.localrun import proxy_env as _proxy_env
from bastion_edge.rehearsal.localrun import start_proxy as _start_proxy

REPO = Path(__file__).resolve().parents[2]
BASTION_KEY = "bastion-e2e-key-7f3a"
APP_KEY = "sk-app-openai-key-DO-NOT-LEAK-91c2"

__all__ = ["BASTION_EDGE", "BIN", "Process", "Sandbox", "free_port", "start",
           "start_sandbox", "wait_until"]


def proxy_env(sandbox: Sandbox | None, **overrides: str | None) -> dict[str, str]:
    return _proxy_env(sandbox, BASTION_KEY, **overrides)


_SHARED_CA: list[Path] = []  # one confdir whose CA every test proxy starts with


def shared_ca_files() -> list[Path]:
    """The proxy CA files, made once per test session (a 2048-bit RSA key is slow)."""
    if not _SHARED_CA:
        confdir = Path(tempfile.mkdtemp(prefix="bastion-e2e-ca-"))
        atexit.register(shutil.rmtree, confdir, True)
        ensure_ca(confdir)
        _SHARED_CA.append(confdir)
    return sorted(_SHARED_CA[0].glob("mitmproxy-ca*"))


def seed_ca(confdir: Path) -> None:
    """Put the session's CA into `confdir` (modes kept: the key stays 0600)."""
    confdir.mkdir(parents=True, exist_ok=True)
    for source in shared_ca_files():
        if not (confdir / source.name).exists():
            shutil.copy2(source, confdir / source.name)


def start_proxy(
    tmp: Path, env: dict[str, str], rules: Path | None = None, extra: list[str] | None = None
) -> Proxy:
    """A proxy with a private copy of the shipped rules.yaml unless `rules` is given, and
    the session's pre-made CA in its confdir."""
    tmp.mkdir(parents=True, exist_ok=True)
    seed_ca(tmp / "confdir")
    if rules is None:
        rules = tmp / "rules.yaml"
        rules.write_text((REPO / "rules.yaml").read_text())
    return _start_proxy(tmp, env, rules, extra)

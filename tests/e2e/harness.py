"""End-to-end test harness: the product's own process runner plus test keys."""

from __future__ import annotations

from pathlib import Path

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


def start_proxy(
    tmp: Path, env: dict[str, str], rules: Path | None = None, extra: list[str] | None = None
) -> Proxy:
    """A proxy with a private copy of the shipped rules.yaml unless `rules` is given."""
    if rules is None:
        tmp.mkdir(parents=True, exist_ok=True)
        rules = tmp / "rules.yaml"
        rules.write_text((REPO / "rules.yaml").read_text())
    return _start_proxy(tmp, env, rules, extra)

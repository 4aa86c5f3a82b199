"""Shared set-up for the sandbox tests: a sandbox in a background thread, an httpx client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bastion_sandbox import RunningSandbox, SandboxConfig, SandboxThread

KEY = "bastion-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def run_sandbox_thread(tls_dir: Path, **overrides: Any) -> Iterator[RunningSandbox]:
    config = SandboxConfig(host="127.0.0.1", port=0, tls_dir=tls_dir, http_port=0, **overrides)
    with SandboxThread(config) as running:
        yield running


def client_for(sandbox: RunningSandbox, **kwargs: Any) -> httpx.Client:
    return httpx.Client(
        base_url=sandbox.origin,
        verify=sandbox.tls.client_ssl_context(),
        timeout=10,
        **kwargs,
    )


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) pairs of a Responses-style SSE body."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events

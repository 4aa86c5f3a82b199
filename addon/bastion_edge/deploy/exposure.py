"""Fail closed on exposure: who may reach the proxy's listeners at all.

A proxy that spends the Bastion key for anyone who can connect must not listen beyond
loopback unless apps authenticate (`clients.apps`) or the operator waived that
explicitly (`--allow-unauthenticated`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from mitmproxy.proxy import mode_specs

from bastion_edge.config.schema import Rules

EXIT_EXPOSED = 2


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; "" and 0.0.0.0 mean every interface."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_hosts(listen_host: str, modes: Sequence[str]) -> list[str]:
    """The address each mode listens on (a mode may name its own: `regular@10.0.0.1:8080`)."""
    hosts = []
    for spec in modes:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            hosts.append(listen_host)
            continue
        hosts.append(mode.custom_listen_host or listen_host)
    return hosts


def exposure_problem(rules: Rules, listen_host: str, modes: Sequence[str]) -> str | None:
    """Why starting would expose the key to anyone, or None when it is safe."""
    if rules.clients.apps:
        return None
    exposed = [h for h in listen_hosts(listen_host, modes) if not is_loopback_host(h)]
    if not exposed:
        return None
    where = ", ".join(sorted({h or "every interface" for h in exposed}))
    return (f"refusing to listen on {where} with no apps declared: anyone who can connect "
            "would spend the Bastion key. Declare apps under clients.apps in the rules "
            "(`bastion-edge app add NAME` prints an entry), listen on 127.0.0.1, or pass "
            "--allow-unauthenticated to accept the risk.")

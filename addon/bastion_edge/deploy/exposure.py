"""Fail closed on exposure: who may reach the proxy's listeners at all.

A proxy that spends the Bastion key for anyone who can connect must not listen beyond
loopback unless apps authenticate (`clients.apps`) or the operator waived that
explicitly (`--allow-unauthenticated`).

Every listener has an owner (`mode_problem`): only the modes whose traffic the proxy
polices start at all. `regular` authenticates apps and checks egress on every dial;
`transparent` attributes its traffic to `clients.transparent_app`, which is sound only
for what the redirect rules send it, so beyond loopback (where anyone could connect
to it directly) it needs `--transparent-redirect-only`, the operator's word that a
firewall lets nothing else reach its port. socks5, upstream, reverse, dns, wireguard,
local, tun, http3 and osproxy relay bytes the proxy neither authenticates nor checks
against the egress policy: refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from mitmproxy.proxy import mode_specs

from bastion_edge.config.schema import Rules

EXIT_EXPOSED = 2
POLICED_MODES = (mode_specs.RegularMode, mode_specs.TransparentMode)
REDIRECT_ONLY_FLAG = "--transparent-redirect-only"


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


def mode_problem(rules: Rules, listen_host: str, modes: Sequence[str],
                 redirect_only: bool = False) -> str | None:
    """Why a mode may not start (exit 2), or None when every listener has an owner."""
    for spec in modes:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError as e:
            return f"--mode {spec}: {e}"
        if not isinstance(mode, POLICED_MODES):
            return (f"refusing --mode {spec}: bastion-edge authenticates apps and enforces "
                    "the egress policy only in regular and transparent modes; a "
                    f"{mode.type_name} listener would relay to anywhere for anyone who can "
                    "connect. Use --mode regular (apps send HTTPS_PROXY) or transparent "
                    "with the redirect rules.")
        host = mode.custom_listen_host or listen_host
        if (isinstance(mode, mode_specs.TransparentMode) and rules.clients.apps
                and not is_loopback_host(host) and not redirect_only):
            return (f"refusing --mode {spec} on {host or 'every interface'}: a transparent "
                    f"listener's traffic is {rules.clients.transparent_app or 'no app'}'s "
                    "without credentials, so anyone who connects to it directly would "
                    "spend that app's key. Listen on loopback (the iptables REDIRECT of "
                    f"`bastion-edge redirect` sends there), or pass {REDIRECT_ONLY_FLAG} "
                    "if a firewall lets only redirected traffic reach its port.")
    return None

"""Where an app may tunnel: the egress decision, over plain values.

Refused: loopback, link-local (169.254.0.0/16 with cloud metadata, fe80::/10),
unspecified addresses, the cloud metadata/host services outside link-local (AWS
fd00:ec2::/32, Alibaba 100.100.100.200, Azure's wire server 168.63.129.16), and the
proxy's own ports on any local address. An IPv6 address that carries an IPv4 one
(IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48 at every RFC 6052
prefix length, 6to4, Teredo) is refused if the carried address is: the decision is
taken on the address dialled and on everything it may reach. `egress.allow`
makes exceptions: a host name as the app asked for it, or a network of the resolved
address; an entry without a port covers every port except the proxy's own (those
need an entry naming the port). Every resolved address must pass, and the caller
dials exactly the addresses checked, so a name pointing at 127.0.0.1 is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from bastion_edge.config.schema import EgressAllow
from bastion_edge.errors import ApiError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_METADATA: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {
    ipaddress.ip_network("fd00:ec2::/32"): "AWS's IPv6 instance metadata",
    ipaddress.ip_network("100.100.100.200/32"): "Alibaba Cloud's metadata service",
    ipaddress.ip_network("168.63.129.16/32"): "Azure's host wire server",
}
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str = ""  # why refused: safe to show the app


def normalize(address: str) -> Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def is_local_address(ip: Address) -> bool:
    """True if this host owns `ip` (binding to it succeeds)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow: tuple[EgressAllow, ...] = ()
    own_ports: frozenset[int] = frozenset()
    is_local: Callable[[Address], bool] = is_local_address

    def decide(self, host: str, port: int, addresses: Sequence[str]) -> Verdict:
        """May a tunnel to `host:port`, resolved to `addresses`, be opened?"""
        if not addresses:
            return Verdict(False, f"{host} did not resolve")
        name = host.lower().rstrip(".")
        for text in addresses:
            for ip in reachable_through(normalize(text)):
                verdict = self._decide_one(name, port, ip)
                if not verdict.allowed:
                    return verdict
        return Verdict(True)

    def _decide_one(self, name: str, port: int, ip: Address) -> Verdict:
        allowed = [a for a in self.allow if _covers(a, name, port, ip)]
        local = ip.is_loopback or ip.is_unspecified or self.is_local(ip)
        if port in self.own_ports and local:
            if any(a.port == port for a in allowed):
                return Verdict(True)
            return Verdict(False, f"{ip} port {port} is the proxy's own port")
        if allowed:
            return Verdict(True)
        kind = _forbidden_kind(ip)
        return Verdict(False, f"{ip} is {kind}") if kind else Verdict(True)


def reachable_through(ip: Address) -> list[Address]:
    """`ip` and every IPv4 address a packet to it may be translated or tunnelled to."""
    found: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv4Address):
        return found
    raw = ip.packed
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if raw[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d
        found.append(ipaddress.IPv4Address(raw[12:]))
    if ip in _NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(raw[12:]))
    if ip in _NAT64_LOCAL:  # RFC 6052: the prefix length is the operator's; try each
        found += [ipaddress.IPv4Address(raw[6:8] + raw[9:11]),  # /48 (octet 8 is "u")
                  ipaddress.IPv4Address(raw[7:8] + raw[9:12]),  # /56
                  ipaddress.IPv4Address(raw[9:13]),  # /64
                  ipaddress.IPv4Address(raw[12:])]  # /96
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found += list(ip.teredo)
    # 0.0.0.0 read from a prefix length not in use is not a destination a translator sends to
    return [found[0], *(v4 for v4 in found[1:] if not v4.is_unspecified)]


def _forbidden_kind(ip: Address) -> str | None:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local or ip in _LINK_LOCAL_V4:
        return "a link-local address (cloud metadata lives here)"
    for network, what in _METADATA.items():
        if ip in network:
            return what
    return None


def _covers(entry: EgressAllow, name: str, port: int, ip: Address) -> bool:
    if entry.port is not None and entry.port != port:
        return False
    if entry.host is not None:
        return entry.host == name
    return entry.network is not None and ip in entry.network


def egress_refused(host: str, port: int, reason: str) -> ApiError:
    return ApiError(
        403,
        f"bastion-edge refuses to connect to {host}:{port}: {reason}. Apps may not reach "
        "the proxy's own host or the metadata service through it; add an exception under "
        "egress.allow in rules.yaml if this is intended.",
        "egress_refused", "permission_error")


def own_upstream(address: tuple[str, int], upstreams: Collection[tuple[str, int]]) -> bool:
    return (address[0].lower(), address[1]) in upstreams

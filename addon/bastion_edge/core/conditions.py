"""Whether a rules `when:` condition holds for a request: the evaluation of config's data.

`Condition` (config.schema) says what to test; `RequestFacts` (core.facts) is what is
known of the request. All given tests must hold; an empty condition always holds.
"""

from __future__ import annotations

import fnmatch
import ipaddress

from bastion_edge.config.schema import Condition, IpNetwork
from bastion_edge.core.facts import RequestFacts


def holds(condition: Condition, facts: RequestFacts) -> bool:
    if condition.apps and facts.app not in condition.apps:
        return False
    if condition.endpoints and facts.endpoint not in condition.endpoints:
        return False
    if condition.has_image is not None and facts.has_image != condition.has_image:
        return False
    if condition.prompt_tokens_over is not None \
            and facts.prompt_tokens <= condition.prompt_tokens_over:
        return False
    for name, pattern in condition.headers:
        value = facts.headers.get(name)
        if value is None or not fnmatch.fnmatchcase(value, pattern):
            return False
    if condition.app_key_sha256 and not (
        facts.app_key_sha256
        and any(facts.app_key_sha256.startswith(p) for p in condition.app_key_sha256)
    ):
        return False
    return not condition.clients or client_in(facts.client_ip, condition.clients)


def client_in(client_ip: str | None, networks: tuple[IpNetwork, ...]) -> bool:
    """True when the address (IPv4-mapped IPv6 as IPv4) is in one of the networks."""
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)

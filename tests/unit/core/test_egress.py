"""The egress decision: loopback, link-local, unspecified and own ports refused."""

from __future__ import annotations

import ipaddress

import pytest

from bastion_edge.config.rules import parse_egress_allow
from bastion_edge.core.egress import EgressPolicy, is_local_address, normalize

OWN = frozenset({8080, 9090})


def policy(*allow: str, local: tuple[str, ...] = ("10.1.2.3",)) -> EgressPolicy:
    return EgressPolicy(tuple(parse_egress_allow(a) for a in allow), OWN,
                        lambda ip: str(ip) in local)


@pytest.mark.parametrize(("host", "port", "addresses", "reason"), [
    ("127.0.0.1", 5432, ["127.0.0.1"], "loopback"),
    ("localhost", 5432, ["::1", "127.0.0.1"], "loopback"),
    ("::1", 22, ["::1"], "loopback"),
    ("169.254.169.254", 80, ["169.254.169.254"], "link-local"),
    ("fe80::1", 80, ["fe80::1%eth0"], "link-local"),
    ("0.0.0.0", 80, ["0.0.0.0"], "unspecified"),
    ("rebind.example", 443, ["93.184.216.34", "127.0.0.2"], "loopback"),  # any address
    ("mapped", 443, ["::ffff:127.0.0.1"], "loopback"),
    ("pod-ip", 9090, ["10.1.2.3"], "own port"),  # the proxy's metrics port on its own IP
    ("nowhere.invalid", 443, [], "did not resolve"),
])
def test_refused(host: str, port: int, addresses: list[str], reason: str) -> None:
    verdict = policy().decide(host, port, addresses)
    assert not verdict.allowed
    assert reason in verdict.reason


def test_public_and_private_destinations_pass() -> None:
    assert policy().decide("example.com", 443, ["93.184.216.34"]).allowed
    assert policy().decide("db", 9090, ["10.9.9.9"]).allowed  # port 9090 elsewhere is fine


def test_allow_list_exceptions() -> None:
    by_name = policy("localhost:8443")
    assert by_name.decide("localhost", 8443, ["127.0.0.1"]).allowed
    assert not by_name.decide("localhost", 8444, ["127.0.0.1"]).allowed
    assert not by_name.decide("127.0.0.1", 8443, ["127.0.0.1"]).allowed  # named, not the IP
    by_net = policy("127.0.0.0/8")
    assert by_net.decide("anything", 5432, ["127.0.0.5"]).allowed
    # A network without a port does not open the proxy's own ports...
    assert not by_net.decide("127.0.0.1", 9090, ["127.0.0.1"]).allowed
    # ...an entry naming the port does.
    assert policy("127.0.0.1:9090").decide("127.0.0.1", 9090, ["127.0.0.1"]).allowed


def test_helpers() -> None:
    assert normalize("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert not is_local_address(ipaddress.ip_address("192.0.2.77"))


@pytest.mark.parametrize(("address", "reason"), [
    ("fd00:ec2::254", "AWS"),
    ("100.100.100.200", "Alibaba"),
    ("168.63.129.16", "Azure"),
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::6464:64c8", "Alibaba"),
    ("64:ff9b:1:a9fe:a9:fe00::", "link-local"),  # RFC 6052 /48 of 169.254.169.254
    ("64:ff9b:1:fe:a9:fea9::", "link-local"),  # /56
    ("64:ff9b:1:0:a9:fea9:fe00:0", "link-local"),  # /64
    ("64:ff9b:1::a83f:8110", "Azure"),  # /96 of 168.63.129.16
    ("::ffff:168.63.129.16", "Azure"),
    ("::169.254.169.254", "link-local"),  # IPv4-compatible
    ("::127.0.0.1", "loopback"),
    ("2002:a9fe:a9fe::1", "link-local"),  # 6to4
    ("2002:7f00:1::", "loopback"),
])
def test_metadata_and_every_ipv6_form_of_a_refused_address(address: str, reason: str) -> None:
    verdict = policy().decide(address, 80, [address])
    assert not verdict.allowed, address
    assert reason in verdict.reason


def test_ipv6_forms_of_public_addresses_pass() -> None:
    for address in ("64:ff9b::5db8:d822", "64:ff9b:1::5db8:d822", "2002:5db8:d822::1",
                    "2606:4700::1111"):
        assert policy().decide("example.com", 443, [address]).allowed, address

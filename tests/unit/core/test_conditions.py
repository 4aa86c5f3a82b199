"""core/conditions.py: whether a rules `when:` holds, over plain values."""

from __future__ import annotations

import ipaddress

import pytest

from bastion_edge.config.schema import Condition
from bastion_edge.core.conditions import client_in, holds
from bastion_edge.core.facts import CHAT, EMBEDDINGS, RequestFacts


def test_an_empty_condition_always_holds() -> None:
    assert holds(Condition(), RequestFacts(CHAT))


@pytest.mark.parametrize(("condition", "facts", "expected"), [
    (Condition(endpoints=(CHAT,)), RequestFacts(EMBEDDINGS), False),
    (Condition(apps=("billing",)), RequestFacts(CHAT, app="billing"), True),
    (Condition(apps=("billing",)), RequestFacts(CHAT), False),
    (Condition(has_image=True), RequestFacts(CHAT, has_image=False), False),
    (Condition(prompt_tokens_over=10), RequestFacts(CHAT, prompt_tokens=10), False),
    (Condition(prompt_tokens_over=10), RequestFacts(CHAT, prompt_tokens=11), True),
    (Condition(headers=(("x-team", "ml-*"),)), RequestFacts(CHAT, headers={"x-team": "ml-a"}),
     True),
    (Condition(headers=(("x-team", "ml-*"),)), RequestFacts(CHAT), False),
    (Condition(app_key_sha256=("abcdef12",)), RequestFacts(CHAT, app_key_sha256="abcdef12ff"),
     True),
    (Condition(app_key_sha256=("abcdef12",)), RequestFacts(CHAT), False),
])
def test_each_test_of_a_condition(condition: Condition, facts: RequestFacts,
                                  expected: bool) -> None:
    assert holds(condition, facts) is expected


def test_clients_match_ipv4_mapped_addresses_and_refuse_garbage() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_in("::ffff:10.1.2.3", nets)
    assert not client_in("not-an-ip", nets)
    assert not client_in(None, nets)
    assert holds(Condition(clients=nets), RequestFacts(CHAT, client_ip="10.9.9.9"))

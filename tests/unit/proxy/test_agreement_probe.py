"""The agreement probe: sampled, rate-bounded, bge-m3 through the given client and key."""

from __future__ import annotations

import asyncio
import json

import httpx

from bastion_edge.config.rules import RulesError, parse_rules
from bastion_edge.proxy.agreement_probe import AgreementProbe


def chat(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}}]}).encode()


def test_wanted_is_a_share_and_a_rate() -> None:
    draws = iter([0.05, 0.5, 0.01, 0.02, 0.03])
    now = [0.0]
    probe = AgreementProbe(0.1, 2.0, rng=lambda: next(draws), clock=lambda: now[0])
    assert probe.wanted("chat.completions")  # 0.05 < 0.1
    assert not probe.wanted("chat.completions")  # 0.5: not sampled
    assert probe.wanted("responses")  # second token
    assert not probe.wanted("chat.completions")  # bucket empty
    now[0] = 0.5  # one token back
    assert probe.wanted("chat.completions")
    assert not AgreementProbe(1.0, 10).wanted("embeddings")


def test_score_asks_bge_m3_with_the_bastion_key() -> None:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [
            {"index": 1, "embedding": [0.6, 0.8]}, {"index": 0, "embedding": [1.0, 0.0]}]})

    async def scenario() -> dict[str, object] | None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
            probe = AgreementProbe(1.0, 10)
            return await probe.score(client, "https://bastion.test/v1", "bk-1", {},
                                     "chat.completions", chat("yes"), False, chat("yes!"),
                                     False)

    assert asyncio.run(scenario()) == {"similarity": 0.6}
    (request,) = seen
    assert str(request.url) == "https://bastion.test/v1/embeddings"
    assert request.headers["authorization"] == "Bearer bk-1"
    assert json.loads(request.content) == {"model": "bge-m3", "input": ["yes", "yes!"]}


def test_a_failed_embedding_call_is_noted_not_raised() -> None:
    async def scenario() -> dict[str, object] | None:
        transport = httpx.MockTransport(lambda r: httpx.Response(503))
        async with httpx.AsyncClient(transport=transport) as client:
            return await AgreementProbe(1.0, 10).score(
                client, "https://b/v1", "k", {}, "chat.completions", chat("a"), False,
                chat("b"), False)

    assert asyncio.run(scenario()) == {"similarity_error": "HTTPStatusError"}


def test_rules_keys() -> None:
    rules = parse_rules("cutover:\n  mirror_agreement_share: 0.25\n"
                        "  mirror_agreement_per_second: 5\n")
    assert (rules.cutover.mirror_agreement_share,
            rules.cutover.mirror_agreement_per_second) == (0.25, 5.0)
    try:
        parse_rules("cutover:\n  mirror_agreement_share: 2\n")
    except RulesError as e:
        assert "expected a share from 0 to 1" in str(e)
    else:
        raise AssertionError("accepted a share of 2")

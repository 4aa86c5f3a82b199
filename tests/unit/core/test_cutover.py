from __future__ import annotations

import asyncio

import httpx

from bastion_edge.config.rules import RulesError, parse_rules
from bastion_edge.core.cutover import (
    BASTION,
    OPENAI,
    CutoverRules,
    conversation_key,
    destination_for,
    split_bucket,
)
from bastion_edge.core.mirror_compare import shape_differences
from bastion_edge.proxy.mirror import Mirror, MirrorRequest, MirrorResult


def test_split_bucket_is_stable_and_uniform() -> None:
    assert split_bucket("app-1") == split_bucket("app-1")
    buckets = [split_bucket(f"app-{i}") for i in range(10_000)]
    assert all(0 <= b < 100 for b in buckets)
    share = sum(b < 30 for b in buckets) / len(buckets)
    assert 0.28 < share < 0.32


def test_destination_by_mode() -> None:
    assert destination_for(CutoverRules(mode="rewrite"), "x") == BASTION
    assert destination_for(CutoverRules(mode="observe"), "x") == OPENAI
    assert destination_for(CutoverRules(mode="mirror"), "x") == OPENAI
    assert destination_for(CutoverRules(mode="split", split_percent=0), "x") == OPENAI
    assert destination_for(CutoverRules(mode="split", split_percent=100), "x") == BASTION


def test_conversation_key_survives_new_turns_but_not_new_conversations() -> None:
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    later = [*first, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]
    assert conversation_key({"messages": first}) == conversation_key({"messages": later})
    other = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "yo"}]
    assert conversation_key({"messages": first}) != conversation_key({"messages": other})
    assert conversation_key({"input": "hello"}) is not None
    assert conversation_key({"input": [{"role": "user"}], "previous_response_id": "r"}) is None


def test_cutover_rules_parse_and_locate_errors() -> None:
    rules = parse_rules("cutover:\n  mode: split\n  split_percent: 25\n  sticky_by: conversation\n")
    assert (rules.cutover.mode, rules.cutover.split_percent) == ("split", 25.0)
    for text, location in (("cutover:\n  mode: half\n", "cutover.mode"),
                           ("cutover:\n  split_percent: 120\n", "cutover.split_percent"),
                           ("cutover:\n  openai_base_url: http://x\n", "cutover.openai_base_url")):
        try:
            parse_rules(text)
        except RulesError as e:
            assert e.location == location
        else:
            raise AssertionError(f"{text!r} was accepted")


def test_shape_differences_ignore_values_not_structure() -> None:
    a = {"id": "x", "choices": [{"message": {"content": "a"}}], "usage": {"total_tokens": 3}}
    b = {"id": "y", "choices": [{"message": {"content": "bbb"}}], "usage": {"total_tokens": 9}}
    assert shape_differences(a, b) == []
    c = {"id": 1, "choices": [], "extra": True}
    assert shape_differences(a, c) == [
        "missing $.choices[]", "missing $.choices[].message", "missing $.choices[].message.content",
        "extra $.extra", "type $.id: string vs number", "missing $.usage",
        "missing $.usage.total_tokens"]


def test_mirror_never_exceeds_its_in_flight_limit() -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={"ok": True})

    async def scenario() -> tuple[list[bool], list[MirrorResult]]:
        client = httpx.AsyncClient(transport=httpx.MockTransport(slow))
        mirror, results = Mirror(), []
        copy = MirrorRequest("POST", "https://b/v1/x", {}, b"{}", False, 200, {"ok": True})
        started = [mirror.try_send(client, copy, 2, results.append) for _ in range(4)]
        assert mirror.in_flight == 2
        release.set()
        await mirror.drain()
        await client.aclose()
        return started, results

    started, results = asyncio.run(scenario())
    assert started == [True, True, False, False]
    assert [r.shape_match for r in results] == [True, True]

"""The mirror's agreement wiring without a network: the copy's kept body never reaches
the record, `agreement` appears only when judged, a failing judge never loses the
record, and the probe follows a reload of its share."""

from __future__ import annotations

import asyncio

import httpx

from bastion_edge.config.rules import parse_rules
from bastion_edge.proxy.mirror import (
    MAX_KEPT_BODY,
    Mirror,
    MirrorAddon,
    MirrorRequest,
    MirrorResult,
)
from bastion_edge.proxy.shared import Shared
from bastion_edge.telemetry.metrics import Metrics


def test_record_keeps_no_body_and_shows_agreement_only_when_judged() -> None:
    plain = MirrorResult(200, 1.0, None, True, reply_body=b"secret answer")
    assert "reply_body" not in plain.to_dict() and "agreement" not in plain.to_dict()
    judged = MirrorResult(200, 1.0, None, True, agreement={"similarity": 0.9})
    assert judged.to_dict()["agreement"] == {"similarity": 0.9}


def copy(keep: bool) -> MirrorRequest:
    return MirrorRequest("POST", "https://bastion.test/v1/chat/completions", {}, b"{}",
                         False, 200, None, keep_body=keep)


def test_the_judge_runs_in_the_copy_task_and_cannot_lose_the_record() -> None:
    asyncio.run(_judged_copies())


async def _judged_copies() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    done: list[MirrorResult] = []
    seen: list[bytes | None] = []

    async def judge(result: MirrorResult) -> None:
        seen.append(result.reply_body)
        result.agreement = {"similarity": 1.0}

    async def broken(result: MirrorResult) -> None:
        raise RuntimeError("embedding call blew up")

    mirror = Mirror()
    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        assert mirror.try_send(client, copy(True), 4, done.append, judge)
        assert mirror.try_send(client, copy(False), 4, done.append, broken)
        assert mirror.try_send(client, copy(False), 4, done.append)
        await mirror.drain()
        await asyncio.sleep(0)
    assert seen == [b'{"choices":[]}'] and len(seen[0] or b"") < MAX_KEPT_BODY
    assert [r.agreement for r in done] == [{"similarity": 1.0}, None, None]
    assert [r.reply_body for r in done][1:] == [None, None]  # kept only when wanted


def test_probe_is_rebuilt_when_a_reload_changes_its_share() -> None:
    shared = Shared({}, Metrics())
    addon = MirrorAddon(shared, lambda: httpx.AsyncClient(), lambda record: None)
    shared.publish(parse_rules("cutover: {mode: mirror, mirror_agreement_share: 0}", "r"))
    first = addon.probe()
    assert addon.probe() is first and not first.wanted("chat.completions")
    shared.publish(parse_rules("cutover: {mode: mirror, mirror_agreement_share: 1}", "r"))
    assert addon.probe() is not first and addon.probe().wanted("chat.completions")
    assert not addon.probe().wanted("embeddings")

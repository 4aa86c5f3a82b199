"""Responses state kept by the proxy, end to end: the real openai SDK, a real
`bastion-edge run`, and the sandbox, which (like Bastion) rejects `previous_response_id`
and any `store` other than false. The sandbox journal shows what went upstream."""

from __future__ import annotations

import base64
import json
import sqlite3
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import make_client
from cryptography.fernet import Fernet
from harness import Proxy, Sandbox, proxy_env, start_proxy, wait_until
from redis_server import running_redis

OTHER_APP_KEY = "sk-other-app-key-0000-different"
PNG_PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000105e227d40000000049454e44ae426082")).decode()
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]},
}


def upstream_bodies(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What reached the sandbox's /v1/responses, oldest first (as JSON bodies)."""
    return [json.loads(e["body"]) for e in sandbox.journal() if e["path"] == "/v1/responses"]


def upstream_paths(sandbox: Sandbox) -> list[str]:
    return [e["path"] for e in sandbox.journal()]


def texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role or type, text) of each item, to compare conversations compactly."""
    out = []
    for item in items:
        kind = item.get("role") or item["type"]
        content = item.get("content", item.get("output", item.get("arguments")))
        if isinstance(content, list):
            content = " ".join(p.get("text", p.get("type")) for p in content)
        out.append((kind, content))
    return out


def rules_file(tmp: Path, responses_state: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    rules = tmp / "rules.yaml"
    rules.write_text("models:\n  gpt-4o: gpt-oss-120b\n  gpt-4o-mini: gpt-oss-20b\n"
                     f"responses_state:\n{responses_state}")
    return rules


# ------------------------------------------------------------------ chaining


def test_three_turns_chained_by_previous_response_id(
    client: openai.OpenAI, sandbox: Sandbox, proxy: Proxy
) -> None:
    sandbox.clear_journal()
    first = client.responses.create(model="gpt-4o", input="My name is Ada.",
                                    instructions="Be brief.")
    second = client.responses.create(model="gpt-4o", input="What is my name?",
                                     previous_response_id=first.id)
    third = client.responses.create(model="gpt-4o", input="And again?",
                                    previous_response_id=second.id)
    assert "And again?" in third.output_text
    bodies = upstream_bodies(sandbox)
    assert len(bodies) == 3
    assert all("previous_response_id" not in b and b["store"] is False for b in bodies)
    assert bodies[0]["input"] == "My name is Ada."
    assert texts(bodies[2]["input"]) == [
        ("user", "My name is Ada."), ("assistant", first.output_text),
        ("user", "What is my name?"), ("assistant", second.output_text),
        ("user", "And again?"),
    ]
    # Output items go back verbatim, ids included; instructions are not carried over.
    assert bodies[2]["input"][1]["id"] == first.output[0].id
    assert "instructions" not in bodies[1]
    notes = [r["notes"] for r in _access(proxy) if r["path"] == "/v1/responses"][-2:]
    assert notes == [["expanded previous_response_id: 2 items"],
                     ["expanded previous_response_id: 4 items"]]


def test_streamed_three_turns_chained(client: openai.OpenAI, sandbox: Sandbox) -> None:
    sandbox.clear_journal()
    previous: str | None = None
    replies = []
    for text in ("stream one", "stream two", "stream three"):
        extra = {"previous_response_id": previous} if previous else {}
        events = list(client.responses.create(model="gpt-4o", input=text, stream=True, **extra))
        assert events[-1].type == "response.completed"
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text in deltas
        previous = events[-1].response.id
        replies.append(events[-1].response.output_text)
    last = upstream_bodies(sandbox)[-1]
    assert "previous_response_id" not in last and last["stream"] is True
    assert texts(last["input"]) == [
        ("user", "stream one"), ("assistant", replies[0]),
        ("user", "stream two"), ("assistant", replies[1]), ("user", "stream three")]
    assert previous is not None
    assert client.responses.retrieve(previous).output_text == replies[2]


def test_tool_call_turn_chained(client: openai.OpenAI, sandbox: Sandbox) -> None:
    sandbox.clear_journal()
    first = client.responses.create(model="gpt-4o", input="What's the weather in Paris?",
                                    tools=[WEATHER_TOOL])  # type: ignore[list-item]
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    second = client.responses.create(
        model="gpt-4o", previous_response_id=first.id, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": '{"sky": "sunny"}'}])
    assert "tool result" in second.output_text
    sent = upstream_bodies(sandbox)[-1]["input"]
    assert [item.get("type", "message") for item in sent] == [
        "message", "function_call", "function_call_output"]
    assert sent[1] == call.model_dump(exclude_none=True) | {"id": call.id}
    assert sent[2]["call_id"] == call.call_id


def test_image_turn_chained_keeps_image_and_vision_model(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    sandbox.clear_journal()
    image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_PIXEL}"}
    first = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is in this picture?"}, image]}])
    second = client.responses.create(model="gpt-4o", input="Describe it again.",
                                     previous_response_id=first.id)
    assert first.model == second.model == "Qwen2.5-VL-72B-Instruct"
    sent = upstream_bodies(sandbox)[-1]
    assert sent["model"] == "Qwen2.5-VL-72B-Instruct"
    assert sent["input"][0]["content"][1] == image


def test_unknown_previous_response_id_is_openai_404(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    sandbox.clear_journal()
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_nope")
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "previous_response_not_found"
    assert error["param"] == "previous_response_id"
    assert error["type"] == "invalid_request_error"
    assert upstream_paths(sandbox) == []


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    kept_not = client.responses.create(model="gpt-4o", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept_not.id)


# ------------------------------------------------------------------ retrieval


def test_retrieve_list_input_items_delete_then_404(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    first = client.responses.create(model="gpt-4o", input="one", metadata={"ticket": "T-1"},
                                    instructions="Answer briefly.")
    second = client.responses.create(
        model="gpt-4o", previous_response_id=first.id,
        input=[{"role": "user", "content": "two"}, {"role": "user", "content": "three"}])
    sandbox.clear_journal()

    got = client.responses.retrieve(first.id)
    assert (got.id, got.output_text, got.model) == (first.id, first.output_text, first.model)
    assert got.metadata == {"ticket": "T-1"} and got.instructions == "Answer briefly."
    assert got.store is True
    assert client.responses.retrieve(second.id).previous_response_id == first.id

    listed = client.responses.input_items.list(second.id, order="asc")
    assert texts([i.model_dump() for i in listed.data]) == [
        ("user", "one"), ("assistant", first.output_text), ("user", "two"), ("user", "three")]
    assert listed.has_more is False
    paged = [i.id for i in client.responses.input_items.list(second.id, limit=1)]  # auto-pages
    assert paged == [i.id for i in listed.data][::-1]  # default order: desc
    page = client.responses.input_items.list(second.id, limit=2, order="asc")
    assert page.has_more is True and page.last_id == listed.data[1].id
    raw = client.responses.input_items.with_raw_response.list(second.id, limit=2, order="asc",
                                                               after=page.last_id).http_response
    assert raw.json()["first_id"] == listed.data[2].id and raw.json()["has_more"] is False
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(second.id, limit=101)

    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve(second.id)
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o", input="x", previous_response_id=second.id)
    assert upstream_paths(sandbox) == []  # all of it answered by the proxy


def test_one_app_cannot_see_another_apps_responses(
    client: openai.OpenAI
) -> None:
    other = client.with_options(api_key=OTHER_APP_KEY)
    mine = client.responses.create(model="gpt-4o", input="app A's secret")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-4o", input="x", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    assert client.responses.retrieve(mine.id).output_text == mine.output_text


def test_metrics_count_stored_and_expanded(client: openai.OpenAI, proxy: Proxy) -> None:
    first = client.responses.create(model="gpt-4o", input="count me")
    client.responses.create(model="gpt-4o", input="and me", previous_response_id=first.id)
    metrics = proxy.metrics()
    for name in ("bastion_edge_responses_stored_total", "bastion_edge_responses_expanded_total",
                 'bastion_edge_responses_store_seconds_count{operation="put"}'):
        line = next(line for line in metrics.splitlines() if line.startswith(name))
        assert float(line.split()[-1]) >= 1, line


# ------------------------------------------------------------------ persistence


def test_sqlite_state_survives_restart_encrypted_0600(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rules = rules_file(tmp_path, "  encryption_key_env: RESPONSES_KEY\n")
    env = proxy_env(sandbox, RESPONSES_KEY=Fernet.generate_key().decode())
    first_proxy = start_proxy(tmp_path, env, rules=rules)
    first = make_client(monkeypatch, first_proxy).responses.create(
        model="gpt-4o", input="remember the word zanzibar")
    assert first_proxy.process.stop() == 0

    database = first_proxy.confdir / "responses.sqlite3"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    with sqlite3.connect(database) as db:
        (body,) = db.execute("SELECT body FROM responses WHERE id = ?", (first.id,)).fetchone()
    assert b"zanzibar" not in body and not body.startswith(b"{")

    again = start_proxy(tmp_path, env, rules=rules)
    try:
        client = make_client(monkeypatch, again)
        second = client.responses.create(model="gpt-4o", input="which word?",
                                         previous_response_id=first.id)
        sent = upstream_bodies(sandbox)[-1]["input"]
        assert texts(sent)[0] == ("user", "remember the word zanzibar")
        assert client.responses.retrieve(second.id).previous_response_id == first.id
    finally:
        assert again.process.stop() == 0


def test_ttl_expiry(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox),
                        rules=rules_file(tmp_path, "  ttl_seconds: 1\n"))
    try:
        client = make_client(monkeypatch, proxy)
        first = client.responses.create(model="gpt-4o", input="short-lived")
        # Stored with the rules' TTL (the store's expiry itself runs on a fake clock in
        # tests/unit/test_responses_stores.py); the purge runs only every 60 s.
        with sqlite3.connect(proxy.confdir / "responses.sqlite3") as db:
            (lifetime,) = db.execute("SELECT expires_at - touched_at FROM responses WHERE id = ?",
                                     (first.id,)).fetchone()
        assert lifetime == pytest.approx(1.0)

        def expired() -> bool:
            try:
                client.responses.retrieve(first.id)
            except openai.NotFoundError:
                return True
            return False

        wait_until(expired, what="the response to expire")
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="gpt-4o", input="x", previous_response_id=first.id)
    finally:
        assert proxy.process.stop() == 0


# ------------------------------------------------------------------ Redis, two replicas


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with running_redis(tmp_path) as url:
        yield url


def test_two_proxies_sharing_redis_continue_each_others_conversations(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str
) -> None:
    rules = rules_file(tmp_path, f"  store: {redis_url}\n")
    env = proxy_env(sandbox)
    one = start_proxy(tmp_path / "one", env, rules=rules)
    two = start_proxy(tmp_path / "two", env, rules=rules)
    try:
        on_one, on_two = make_client(monkeypatch, one), make_client(monkeypatch, two)
        first = on_one.responses.create(model="gpt-4o", input="replica turn one")
        second = on_two.responses.create(model="gpt-4o", input="replica turn two",
                                         previous_response_id=first.id)
        events = list(on_one.responses.create(model="gpt-4o", input="replica turn three",
                                              previous_response_id=second.id, stream=True))
        third = events[-1].response
        assert texts(upstream_bodies(sandbox)[-1]["input"])[::2] == [
            ("user", "replica turn one"), ("user", "replica turn two"),
            ("user", "replica turn three")]
        assert on_two.responses.retrieve(third.id).output_text == third.output_text
        on_two.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            on_one.responses.retrieve(first.id)
        assert not (one.confdir / "responses.sqlite3").exists()
    finally:
        assert one.process.stop() == 0
        assert two.process.stop() == 0


def _access(proxy: Proxy) -> list[dict[str, Any]]:
    wait_until(lambda: proxy.access_log.exists(), what="access log")
    return [json.loads(line) for line in proxy.access_log.read_text().splitlines()]


def test_retrieve_answered_by_proxy_for_any_http_client(
    proxy: Proxy, sandbox: Sandbox
) -> None:
    """An app calling the API with a bare HTTP client (no SDK) gets the same answers."""
    sandbox.clear_journal()
    bundle = proxy.app_env()["SSL_CERT_FILE"]
    verify = ssl.create_default_context(cafile=bundle)
    with httpx.Client(proxy=proxy.url, verify=verify, timeout=10) as http_client:
        reply = http_client.get("https://api.openai.com/v1/responses/resp_missing",
                                headers={"Authorization": "Bearer sk-curl-app"})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "response_not_found"
    assert upstream_paths(sandbox) == []

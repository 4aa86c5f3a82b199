"""Fallbacks and the capability gate on the request path, end to end: the real openai
SDK through `bastion-edge run` against a sandbox that makes models vanish and enforces
capabilities (a field its model lacks answers 502 there, as the guide says Bastion does).

Two proxies share the sandbox: `fresh` reads the model list every 0.3 s (a model that is
not listed is never sent); `stale` read it once at start, so a model that vanished
afterwards answers 404 model_not_found and the proxy retries on the next fallback.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import make_client
from harness import Proxy, Sandbox, proxy_env, start_proxy, start_sandbox, wait_until

RULES = """
models:
  gpt-4o-mini: gpt-oss-20b
  gpt-4o: gpt-oss-120b
  gpt-3.5-turbo: Llama-3.1-8B-Instruct
  gpt-4-turbo: Qwen2.5-VL-72B-Instruct
  whisper-1: whisper-large-v3
  gpt-4.1: Qwen3-Coder-30B-A3B-Instruct
fallbacks:
  gpt-oss-20b: [Meta-Llama-3_3-70B-Instruct]
  gpt-oss-120b: [Meta-Llama-3_3-70B-Instruct]
  Llama-3.1-8B-Instruct: [Qwen3-Coder-30B-A3B-Instruct]
  whisper-large-v3: [whisper-large-v3-turbo]
  Qwen3-Coder-30B-A3B-Instruct: [Meta-Llama-3_3-70B-Instruct]
capabilities:
  Llama-3.1-8B-Instruct: {tools: false, json_schema: false}
  Qwen2.5-VL-72B-Instruct: {tools: false}
models_refresh_seconds: REFRESH
"""
LLAMA_70B = "Meta-Llama-3_3-70B-Instruct"
TOOLS: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]
SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}
HI: Any = [{"role": "user", "content": "hi"}]


def _rules(tmp: Path, refresh: str) -> Path:
    path = tmp / f"rules-{refresh}.yaml"
    path.write_text(RULES.replace("REFRESH", refresh))
    return path


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    tmp = tmp_path_factory.mktemp("fallback-sandbox")
    sandbox = start_sandbox(tmp, ["--capabilities", str(_rules(tmp, "1"))])
    yield sandbox
    sandbox.process.stop()


def _gauge(proxy: Proxy, model: str) -> str | None:
    found = re.search(rf'^bastion_edge_model_available{{model="{re.escape(model)}"}} (\S+)$',
                      proxy.metrics(), re.M)
    return found.group(1) if found else None


def _fallbacks(proxy: Proxy, to_model: str, reason: str) -> float:
    found = re.search(rf'^bastion_edge_model_fallbacks_total{{from_model="[^"]*",'
                      rf'reason="{reason}",to_model="{re.escape(to_model)}"}} (\S+)$',
                      proxy.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def fresh(box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("fresh")
    proxy = start_proxy(tmp, proxy_env(box), _rules(tmp, "0.3"))
    wait_until(lambda: _gauge(proxy, "gpt-oss-20b") == "1.0", what="first list read")
    yield proxy
    assert proxy.process.stop() == 0, proxy.process.log()


@pytest.fixture(scope="module")
def stale(box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("stale")
    proxy = start_proxy(tmp, proxy_env(box), _rules(tmp, "3600"))
    wait_until(lambda: _gauge(proxy, "whisper-large-v3") == "1.0", what="first list read")
    yield proxy
    assert proxy.process.stop() == 0, proxy.process.log()


@pytest.fixture()
def admin(box: Sandbox) -> Iterator[httpx.Client]:
    """The sandbox's admin API; every model back to available after the test."""
    box.clear_journal()
    with box.client() as c:
        yield c
        c.delete(f"{box.base_url.removesuffix('/v1')}/sandbox/models")


def _set_available(admin: httpx.Client, box: Sandbox, model: str, available: bool) -> None:
    origin = box.base_url.removesuffix("/v1")
    admin.patch(f"{origin}/sandbox/models/{model}", json={"available": available})


def _calls(box: Sandbox, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    return [e for e in box.journal() if e["path"] == path]


def _served(client: openai.OpenAI, model: str = "gpt-4o-mini") -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-bastion-edge-upstream-model"]


def test_an_unlisted_model_is_served_by_its_fallback_plain_and_streaming(
        fresh: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _set_available(admin, box, "gpt-oss-20b", False)
    wait_until(lambda: _gauge(fresh, "gpt-oss-20b") == "0.0", what="20b unlisted")
    client = make_client(monkeypatch, fresh)
    assert _served(client) == LLAMA_70B
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI, stream=True)
    assert raw.headers["x-bastion-edge-upstream-model"] == LLAMA_70B
    chunks = list(raw.parse())
    assert chunks and {c.model for c in chunks} == {LLAMA_70B}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Never sent to the unlisted model: no 404 was needed.
    assert [(e["model"], e["status"]) for e in _calls(box)] == [(LLAMA_70B, 200)] * 2
    assert _fallbacks(fresh, LLAMA_70B, "unlisted") >= 2


def test_a_model_that_disappears_between_refreshes(
        fresh: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(monkeypatch, fresh)
    wait_until(lambda: _gauge(fresh, "gpt-oss-20b") == "1.0", what="20b listed")
    assert _served(client) == "gpt-oss-20b"
    _set_available(admin, box, "gpt-oss-20b", False)
    wait_until(lambda: _gauge(fresh, "gpt-oss-20b") == "0.0", what="20b gone")
    assert _served(client) == LLAMA_70B
    _set_available(admin, box, "gpt-oss-20b", True)
    wait_until(lambda: _gauge(fresh, "gpt-oss-20b") == "1.0", what="20b back")
    assert _served(client) == "gpt-oss-20b"
    assert [e["status"] for e in _calls(box)] == [200, 200, 200]


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _replayed(box: Sandbox, path: str, first_model: str, then: str) -> tuple[bytes, bytes]:
    """The two bodies Bastion got (the 404 and the retry); checks they are whole."""
    calls = _calls(box, path)
    assert [(e["model"], e["status"]) for e in calls] == [(first_model, 404), (then, 200)]
    bodies = [e["body"].encode() for e in calls]
    for entry, body in zip(calls, bodies, strict=True):
        assert entry["body_sha256"] == _sha(body)  # the journal kept the body whole
    return bodies[0], bodies[1]


def _attempts(proxy: Proxy, path: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    record = [r for r in records if r["path"] == path][-1]
    attempts: list[dict[str, Any]] = record["attempts"]
    assert all(isinstance(a["ms"], float | int) and a["ms"] >= 0 for a in attempts)
    return attempts


def test_a_404_is_retried_on_the_fallback_with_the_json_body_byte_exact(
        stale: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _set_available(admin, box, "gpt-oss-20b", False)
    before = _fallbacks(stale, LLAMA_70B, "not_found")
    assert _served(make_client(monkeypatch, stale)) == LLAMA_70B
    first, retry = _replayed(box, "/v1/chat/completions", "gpt-oss-20b", LLAMA_70B)
    assert retry == first.replace(b'"model":"gpt-oss-20b"', f'"model":"{LLAMA_70B}"'.encode())
    assert [(a["model"], a["status"]) for a in _attempts(stale, "/v1/chat/completions")] == [
        ("gpt-oss-20b", 404), (LLAMA_70B, 200)]
    assert _fallbacks(stale, LLAMA_70B, "not_found") == before + 1
    assert _gauge(stale, "gpt-oss-20b") == "0.0"  # marked until the next refresh
    box.clear_journal()  # the next request skips it without asking
    assert _served(make_client(monkeypatch, stale)) == LLAMA_70B
    assert [e["model"] for e in _calls(box)] == [LLAMA_70B]


def test_a_404_on_a_stream_falls_back_and_the_app_sees_one_stream(
        stale: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _set_available(admin, box, "gpt-oss-120b", False)
    client = make_client(monkeypatch, stale)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, stream=True)
    assert raw.headers["x-bastion-edge-upstream-model"] == LLAMA_70B
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert chunks and {c.model for c in chunks} == {LLAMA_70B}
    first, retry = _replayed(box, "/v1/chat/completions", "gpt-oss-120b", LLAMA_70B)
    assert retry == first.replace(b'"model":"gpt-oss-120b"', f'"model":"{LLAMA_70B}"'.encode())
    assert b'"stream":true' in retry


def test_a_streamed_responses_create_retried_after_a_404_is_still_stored(
        stale: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _set_available(admin, box, "Qwen3-Coder-30B-A3B-Instruct", False)
    client = make_client(monkeypatch, stale)
    events = list(client.responses.create(model="gpt-4.1", input="remember 7", stream=True))
    done = [e for e in events if e.type == "response.completed"]
    assert len(done) == 1 and done[0].response.model == LLAMA_70B
    assert [(e["model"], e["status"]) for e in _calls(box, "/v1/responses")] == [
        ("Qwen3-Coder-30B-A3B-Instruct", 404), (LLAMA_70B, 200)]
    box.clear_journal()
    follow = client.responses.create(model="gpt-4.1", input="which number?",
                                     previous_response_id=done[0].response.id)
    assert follow.output_text
    sent = _calls(box, "/v1/responses")[-1]["body"]
    assert "remember 7" in sent and "which number?" in sent  # the retried turn was stored


def test_a_404_on_a_small_multipart_upload_is_replayed_byte_exact(
        stale: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _set_available(admin, box, "whisper-large-v3", False)
    audio = (b"RIFF fake audio, ASCII so the journal keeps it exact " * 80)[:4000]
    client = make_client(monkeypatch, stale)
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav"))
    assert raw.headers["x-bastion-edge-upstream-model"] == "whisper-large-v3-turbo"
    assert raw.headers["x-sandbox-file-sha256"] == _sha(audio)
    assert "whisper-large-v3-turbo" in raw.parse().text
    path = "/v1/audio/transcriptions"
    calls = _calls(box, path)
    assert [(e["model"], e["status"]) for e in calls] == [
        ("whisper-large-v3", 404), ("whisper-large-v3-turbo", 200)]
    first, retry = calls  # the journal keeps a form's fields and file digest, not its bytes
    assert first["file"] == retry["file"]
    assert first["file"]["sha256"] == _sha(audio) and first["file"]["bytes"] == len(audio)
    assert {**first["form"], "model": "whisper-large-v3-turbo"} == retry["form"]
    assert retry["body_bytes"] == first["body_bytes"] + len("-turbo")
    assert [a["model"] for a in _attempts(stale, path)] == ["whisper-large-v3",
                                                            "whisper-large-v3-turbo"]


@pytest.mark.parametrize(("status", "error"), [(404, openai.NotFoundError),
                                               (503, openai.InternalServerError)])
def test_other_upstream_statuses_pass_through_unchanged(
        fresh: Proxy, box: Sandbox, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch,
        status: int, error: type[openai.APIStatusError]) -> None:
    client = make_client(monkeypatch, fresh)  # Llama's fallback is listed: a retry could go
    with pytest.raises(error) as answered:  # a 404 that is not model_not_found, a 503
        client.chat.completions.create(model="gpt-3.5-turbo", messages=HI,
                                       extra_headers={"x-sandbox-fault": f"status={status}"})
    assert answered.value.status_code == status
    assert answered.value.response.headers["x-bastion-edge-upstream-model"] == \
        "Llama-3.1-8B-Instruct"
    sent = [json.loads(e["body"])["model"] for e in _calls(box)]
    assert sent == ["Llama-3.1-8B-Instruct"]  # not retried


def test_tools_and_json_schema_go_to_the_fallback_that_has_them(
        fresh: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(monkeypatch, fresh)
    assert _served(client, "gpt-3.5-turbo") == "Llama-3.1-8B-Instruct"  # plain: the target
    tools = client.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo", messages=HI, tools=TOOLS)
    assert tools.headers["x-bastion-edge-upstream-model"] == "Qwen3-Coder-30B-A3B-Instruct"
    assert tools.parse().choices
    schema = client.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo", messages=HI, response_format=SCHEMA)
    assert schema.headers["x-bastion-edge-upstream-model"] == "Qwen3-Coder-30B-A3B-Instruct"
    assert json.loads(schema.parse().choices[0].message.content or "")
    assert [(e["model"], e["status"]) for e in _calls(box)] == [
        ("Llama-3.1-8B-Instruct", 200), ("Qwen3-Coder-30B-A3B-Instruct", 200),
        ("Qwen3-Coder-30B-A3B-Instruct", 200)]
    assert _fallbacks(fresh, "Qwen3-Coder-30B-A3B-Instruct", "tools") >= 1
    assert _fallbacks(fresh, "Qwen3-Coder-30B-A3B-Instruct", "json_schema") >= 1


def test_no_model_with_the_capability_is_a_400_and_nothing_is_sent(
        fresh: Proxy, box: Sandbox, admin: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(monkeypatch, fresh)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4-turbo", messages=HI, tools=TOOLS)
    assert refused.value.code == "model_capability_unsupported"
    assert refused.value.param == "tools"
    assert refused.value.response.headers["x-bastion-edge-error"] == \
        "model_capability_unsupported"
    assert _calls(box) == []

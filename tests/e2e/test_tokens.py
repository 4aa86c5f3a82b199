"""Token accounting end to end: `bastion-edge run` against the sandbox, whose usage
figures are deterministic (prompt tokens = characters // 4, output tokens = streamed
pieces of 8 characters of `sandbox:<model>: <text>`, cached = the conversation prefix).

Every kind of reply: chat JSON, chat SSE with and without `include_usage` (the app's
stream byte-identical to the one it would have had), completions SSE, Responses SSE,
embeddings and TTS; the access log, `/metrics` and the flow of figures between them."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import make_client
from harness import BASTION_KEY, Proxy, Sandbox, proxy_env, start_proxy, wait_until

SYSTEM = "Be brief."  # 9 characters: 2 tokens, the cached prefix
USER = "Say hi"  # 6 characters; 15 in all: 3 prompt tokens
# "sandbox:gpt-oss-120b: Say hi" is 28 characters: 4 pieces, 4 output tokens
CHAT_TOKENS = {"input": 3, "output": 4, "cached_input": 2, "reasoning": 0}
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


@pytest.fixture(scope="module")
def edge(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy of its own: its access log and counters hold only this module's requests."""
    running = start_proxy(tmp_path_factory.mktemp("tokens"), proxy_env(sandbox))
    yield running
    assert running.process.stop() == 0, running.process.log()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, edge: Proxy) -> openai.OpenAI:
    return make_client(monkeypatch, edge)


def records(edge: Proxy) -> list[dict[str, Any]]:
    return [json.loads(line) for line in edge.access_log.read_text().splitlines()]


def last_record(edge: Proxy, endpoint: str) -> dict[str, Any]:
    """The newest record of `endpoint`, once the exchange just made has one: a record is
    written when the exchange ends, which may be just after the app has read it all."""
    def newest() -> dict[str, Any] | None:
        mine = [r for r in records(edge) if r["endpoint"] == endpoint]
        return mine[-1] if mine and mine[-1]["request_id"] not in SEEN else None
    wait_until(lambda: newest() is not None, what=f"the access-log record of {endpoint}")
    record = newest()
    assert record is not None
    SEEN.add(record["request_id"])
    return record


SEEN: set[str] = set()  # records a test has read already


def counter(edge: Proxy, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in edge.metrics().splitlines():
        if line.startswith(name + "{") and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_chat_json_tokens_in_log_and_metrics(app: openai.OpenAI, edge: Proxy) -> None:
    series = {"app": "none", "original_model": "gpt-4o", "upstream_model": "gpt-oss-120b",
              "destination": "bastion"}
    before = {d: counter(edge, "bastion_edge_tokens_total", direction=d, **series)
              for d in CHAT_TOKENS}
    completion = app.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 4)
    record = last_record(edge, "chat.completions")
    assert record["tokens"] == CHAT_TOKENS and record["tokens_source"] == "upstream"
    for direction, count in CHAT_TOKENS.items():
        after = counter(edge, "bastion_edge_tokens_total", direction=direction, **series)
        assert after - before[direction] == count, direction
    assert counter(edge, "bastion_edge_tokens_per_request_bucket", direction="output",
                   upstream_model="gpt-oss-120b", le="4.0") >= 1


def test_chat_stream_with_include_usage_app_sees_its_usage(app: openai.OpenAI,
                                                           edge: Proxy) -> None:
    chunks = list(app.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 4)
    record = last_record(edge, "chat.completions")
    assert record["stream"] is True and record["tokens"] == CHAT_TOKENS


def test_chat_stream_without_include_usage_counted_but_not_shown(app: openai.OpenAI,
                                                                 edge: Proxy) -> None:
    chunks = list(app.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the app
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == \
        "sandbox:gpt-oss-120b: Say hi"
    record = last_record(edge, "chat.completions")
    assert record["tokens"] == CHAT_TOKENS and record["tokens_source"] == "upstream"
    assert "stream usage asked upstream, kept from the app" in record["notes"]


def raw_stream(client: httpx.Client, url: str, body: dict[str, Any],
               headers: dict[str, str]) -> bytes:
    with client.stream("POST", url, json=body, headers=headers) as reply:
        assert reply.status_code == 200
        return b"".join(reply.iter_raw())


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": MESSAGES}),
    ("/v1/completions", {"prompt": USER}),
])
def test_app_visible_stream_is_byte_identical_to_one_without_usage(
        edge: Proxy, sandbox: Sandbox, path: str, body: dict[str, Any]) -> None:
    """What the app gets through the proxy (which asked Bastion for the usage chunk) is
    byte for byte what Bastion sends to a request that did not ask."""
    fixed = {"x-sandbox-fixed-id": "cmpl-fixed"}  # same id and `created` in both replies
    env = edge.app_env()
    model = "gpt-4o" if "chat" in path else "gpt-3.5-turbo-instruct"
    upstream = "gpt-oss-120b" if "chat" in path else "gpt-oss-20b"
    app_tls = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=app_tls, timeout=30) as c:
        via_proxy = raw_stream(c, f"https://api.openai.com{path}",
                               {"model": model, "stream": True, **body},
                               {"authorization": "Bearer sk-app", **fixed})
    direct_tls = ssl.create_default_context(cafile=str(sandbox.ca))
    with httpx.Client(verify=direct_tls, timeout=30) as c:
        direct = raw_stream(c, f"https://127.0.0.1:{sandbox.port}{path}",
                            {"model": upstream, "stream": True, **body},
                            {"authorization": f"Bearer {BASTION_KEY}", **fixed})
        with_usage = raw_stream(c, f"https://127.0.0.1:{sandbox.port}{path}",
                                {"model": upstream, "stream": True, **body,
                                 "stream_options": {"include_usage": True}},
                                {"authorization": f"Bearer {BASTION_KEY}", **fixed})
    assert via_proxy == direct
    assert with_usage != direct  # what the proxy received and took back out
    assert last_record(edge, "chat.completions" if "chat" in path else "completions")[
        "tokens"]["output"] > 0


def test_responses_stream_tokens(app: openai.OpenAI, edge: Proxy) -> None:
    events = list(app.responses.create(model="gpt-4o", input="Tell me", stream=True))
    completed = events[-1]
    assert completed.type == "response.completed"
    # input "Tell me": 7 characters, 1 token; "sandbox:gpt-oss-120b: Tell me": 29, 4 pieces
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens == 1
    assert completed.response.usage.output_tokens == 4
    record = last_record(edge, "responses")
    assert record["tokens"] == {"input": 1, "output": 4, "cached_input": 0, "reasoning": 0}


def test_embeddings_tokens(app: openai.OpenAI, edge: Proxy) -> None:
    result = app.embeddings.create(model="text-embedding-3-small",
                                   input=["one two three", "four"])
    # 13 characters: 3 tokens; 4 characters: 1 token
    assert result.usage.prompt_tokens == 4
    record = last_record(edge, "embeddings")
    assert record["tokens"] == {"input": 4} and record["tokens_source"] == "upstream"


def test_tts_characters(app: openai.OpenAI, edge: Proxy) -> None:
    text = "Twenty-one characters"
    app.audio.speech.create(model="tts-1", voice="alloy", input=text).read()
    record = last_record(edge, "audio.speech")
    assert record["tts_characters"] == len(text) == 21
    assert record["tokens"] is None and record["tokens_source"] == "not_reported"
    assert counter(edge, "bastion_edge_tts_characters_total", destination="bastion") >= 21


def test_tts_sse_adapter_estimate_is_not_counted(edge: Proxy) -> None:
    """The speech SSE's `speech.audio.done` carries usage the adapter estimated: the
    record keeps the characters and no token figures."""
    env = edge.app_env()
    text = "Streamed speech."
    payload = {"model": "gpt-4o-mini-tts", "voice": "coral", "input": text,
               "response_format": "wav", "stream_format": "sse"}
    tls = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=tls, timeout=60) as c, \
            c.stream("POST", "https://api.openai.com/v1/audio/speech", json=payload,
                     headers={"authorization": "Bearer sk-app"}) as reply:
        events = [json.loads(line[5:]) for line in reply.iter_lines() if line.startswith("data:")]
    assert events[-1]["type"] == "speech.audio.done" and "usage" in events[-1]
    record = last_record(edge, "audio.speech")
    assert record["tts_characters"] == len(text)
    assert record["tokens"] is None and record["tokens_source"] == "not_reported"


def test_no_usage_is_recorded_as_not_reported(app: openai.OpenAI, edge: Proxy) -> None:
    app.models.list()
    record = last_record(edge, "models")
    assert record["tokens"] is None and record["tokens_source"] == "not_reported"


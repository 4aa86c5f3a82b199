"""The sandbox's OpenAI-compatible surface over real TLS: auth, models, endpoints, journal."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sandbox_support import AUTH, KEY, client_for, run_sandbox_thread, sse_data, sse_events

from bastion_sandbox import RunningSandbox

CHAT = "gpt-oss-20b"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client_for(sandbox, headers=AUTH) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, str | None]:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def chat_body(text: str = "hello sandbox", model: str = CHAT, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


# --- auth ---------------------------------------------------------------------------


def test_missing_key_is_401_invalid_api_key(sandbox: RunningSandbox) -> None:
    with client_for(sandbox) as anonymous:
        response = anonymous.get("/v1/models")
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "authentication_error"


def test_openai_key_is_refused_and_masked(sandbox: RunningSandbox) -> None:
    with client_for(sandbox) as c:
        response = c.get("/v1/models", headers={"Authorization": "Bearer sk-proj-abcdef123456"})
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "openai_key_received"
    assert "sk-proj-abcdef123456" not in response.text


def test_non_bearer_scheme_is_401(client: httpx.Client) -> None:
    response = client.get("/v1/models", headers={"Authorization": f"Basic {KEY}"})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_configured_keys_reject_others(tmp_path: Path) -> None:
    for sandbox in run_sandbox_thread(tmp_path, api_keys=frozenset({"good-key"})):
        with client_for(sandbox) as c:
            good = c.get("/v1/models", headers={"Authorization": "Bearer good-key"})
            bad = c.get("/v1/models", headers={"Authorization": "Bearer other-key"})
        assert good.status_code == 200
        assert bad.status_code == 401
        assert error_of(bad)["code"] == "invalid_api_key"


# --- models -------------------------------------------------------------------------


def test_models_list_has_bastion_models_only(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {"gpt-oss-120b", "Qwen2.5-VL-72B-Instruct", "bge-m3", "whisper-large-v3"} <= ids
    assert "gpt-4o" not in ids
    assert all(m["object"] == "model" for m in body["data"])


def test_model_retrieve_and_unknown(client: httpx.Client) -> None:
    assert client.get("/v1/models/bge-m3").json()["id"] == "bge-m3"
    response = client.get("/v1/models/gpt-4o")
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat_body(model="gpt-4o")),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "x"}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
        ("/v1/images/generations", {"model": "dall-e-3", "prompt": "x"}),
        ("/v1/responses", {"model": "gpt-4o", "input": "x", "store": False}),
    ],
)
def test_openai_model_ids_are_404_naming_the_id(
    client: httpx.Client, path: str, body: dict[str, object]
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "model_not_found"
    assert str(body["model"]) in str(error["message"])


def test_wrong_kind_of_model_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"model": CHAT, "input": "x"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "model_not_supported"
    response = client.post("/v1/chat/completions", json=chat_body(model="bge-m3"))
    assert error_of(response)["code"] == "model_not_supported"


def test_image_input_needs_the_vision_model(client: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    body = {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": content}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "image_input_not_supported"
    body["model"] = "Qwen2.5-VL-72B-Instruct"
    reply = client.post("/v1/chat/completions", json=body).json()
    assert (
        reply["choices"][0]["message"]["content"] == "sandbox:Qwen2.5-VL-72B-Instruct: what is this"
    )


def test_long_prompt_needs_the_long_context_model(client: httpx.Client) -> None:
    long_text = "word " * 40_000  # ~50k estimated tokens
    short = client.post("/v1/chat/completions", json=chat_body(long_text))
    assert short.status_code == 400
    assert error_of(short)["code"] == "context_length_exceeded"
    ok = client.post(
        "/v1/chat/completions", json=chat_body(long_text, model="Meta-Llama-3_3-70B-Instruct")
    )
    assert ok.status_code == 200


# --- chat and completions --------------------------------------------------------------


def test_chat_non_stream_echoes_model_and_text(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("tell me a joke", extra_x=1))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == CHAT
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": f"sandbox:{CHAT}: tell me a joke",
        "refusal": None,
    }
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_chat_reply_uses_first_40_chars(client: httpx.Client) -> None:
    text = "0123456789" * 6
    body = client.post("/v1/chat/completions", json=chat_body(text)).json()
    assert body["choices"][0]["message"]["content"] == f"sandbox:{CHAT}: {text[:40]}"


def test_chat_stream_chunks_usage_and_done(client: httpx.Client) -> None:
    body = chat_body("stream me please", stream=True, stream_options={"include_usage": True})
    response = client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_data(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert len([piece for piece in content if piece]) >= 3
    assert "".join(content) == f"sandbox:{CHAT}: stream me please"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] >= 3


def test_chat_stream_without_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(stream=True))
    chunks = [json.loads(p) for p in sse_data(response.text)[:-1]]
    assert all(c["choices"] for c in chunks)


def test_chat_weather_with_tools_calls_the_function(client: httpx.Client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    body = client.post(
        "/v1/chat/completions", json=chat_body("What's the weather in Paris?", tools=tools)
    ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    follow_up = {
        "model": CHAT,
        "tools": tools,
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"},
        ],
    }
    answer = client.post("/v1/chat/completions", json=follow_up).json()
    assert answer["choices"][0]["message"]["content"] == f"sandbox:{CHAT}: tool result: sunny, 21C"


def test_completions_non_stream_and_stream(client: httpx.Client) -> None:
    body = {"model": "Llama-3.1-8B-Instruct", "prompt": "Once upon a time"}
    reply = client.post("/v1/completions", json=body).json()
    assert reply["object"] == "text_completion"
    assert reply["choices"][0]["text"] == "sandbox:Llama-3.1-8B-Instruct: Once upon a time"
    streamed = client.post("/v1/completions", json={**body, "stream": True})
    payloads = sse_data(streamed.text)
    assert payloads[-1] == "[DONE]"
    text = "".join(json.loads(p)["choices"][0]["text"] for p in payloads[:-1])
    assert text == reply["choices"][0]["text"]


# --- embeddings ----------------------------------------------------------------------


def test_embeddings_float_and_base64_agree(client: httpx.Client) -> None:
    floats = client.post("/v1/embeddings", json={"model": "bge-m3", "input": ["a", "b"]}).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 1024
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-3
    assert floats["data"][1]["embedding"] != vector
    encoded = client.post(
        "/v1/embeddings", json={"model": "bge-m3", "input": "a", "encoding_format": "base64"}
    ).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack("<1024f", raw)) == vector


def test_embeddings_reject_bad_input_and_dimensions(client: httpx.Client) -> None:
    assert client.post("/v1/embeddings", json={"model": "bge-m3", "input": ""}).status_code == 400
    response = client.post(
        "/v1/embeddings", json={"model": "bge-m3", "input": "x", "dimensions": 256}
    )
    assert error_of(response)["code"] == "dimensions_not_supported"


# --- images ----------------------------------------------------------------------------


def test_images_require_model_and_return_png(client: httpx.Client) -> None:
    missing = client.post("/v1/images/generations", json={"prompt": "a cat"})
    assert missing.status_code == 400
    assert error_of(missing)["param"] == "model"
    body = {"model": "FLUX.1-schnell", "prompt": "a cat", "response_format": "b64_json"}
    png = base64.b64decode(
        client.post("/v1/images/generations", json=body).json()["data"][0]["b64_json"]
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    url = client.post("/v1/images/generations", json={**body, "response_format": "url"}).json()
    fetched = client.get(url["data"][0]["url"])
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.content == png


# --- responses ---------------------------------------------------------------------------


def test_responses_require_store_false(client: httpx.Client) -> None:
    for body in ({"model": CHAT, "input": "x"}, {"model": CHAT, "input": "x", "store": True}):
        response = client.post("/v1/responses", json=body)
        assert response.status_code == 400
        error = error_of(response)
        assert (error["code"], error["param"]) == ("store_must_be_false", "store")


def test_responses_reject_previous_response_id(client: httpx.Client) -> None:
    body = {"model": CHAT, "input": "x", "store": False, "previous_response_id": "resp_1"}
    response = client.post("/v1/responses", json=body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "previous_response_id_not_supported"


def test_responses_are_not_retrievable(client: httpx.Client) -> None:
    assert client.get("/v1/responses/resp_123").status_code == 404
    assert client.delete("/v1/responses/resp_123").status_code == 404


def test_responses_non_stream_shape(client: httpx.Client) -> None:
    body = client.post(
        "/v1/responses", json={"model": CHAT, "input": "hi there", "store": False}
    ).json()
    assert body["id"].startswith("resp_")
    assert body["object"] == "response"
    assert body["store"] is False
    assert "output_text" not in body
    message = body["output"][0]
    assert message["type"] == "message"
    assert message["content"][0] == {
        "type": "output_text",
        "text": f"sandbox:{CHAT}: hi there",
        "annotations": [],
        "logprobs": [],
    }
    assert body["usage"]["total_tokens"] > 0


def test_responses_stream_event_sequence(client: httpx.Client) -> None:
    response = client.post(
        "/v1/responses", json={"model": CHAT, "input": "stream it", "store": False, "stream": True}
    )
    assert "[DONE]" not in response.text
    events = sse_events(response.text)
    names = [name for name, _ in events]
    deltas = names.count("response.output_text.delta")
    assert deltas >= 3
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == f"sandbox:{CHAT}: stream it"
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == text


# --- paths ------------------------------------------------------------------------------


def test_no_audio_speech_and_unknown_paths_are_404_envelopes(client: httpx.Client) -> None:
    for path in ("/v1/audio/speech", "/v1/nope"):
        response = client.post(path, json={"model": "tts-1", "input": "x", "voice": "alloy"})
        assert response.status_code == 404
        assert error_of(response)["code"] == "unknown_url"


def test_invalid_json_is_400_envelope(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


# --- journal -----------------------------------------------------------------------------


def test_journal_records_key_model_store_and_body(
    sandbox: RunningSandbox, client: httpx.Client
) -> None:
    client.delete("/sandbox/journal")
    client.post("/v1/responses", json={"model": CHAT, "input": "journal me", "store": False})
    with client_for(sandbox) as c:
        c.get("/v1/models", headers={"Authorization": "Bearer sk-leaked-openai-key"})
        entries = c.get("/sandbox/journal").json()  # no auth needed
    assert [e["path"] for e in entries] == ["/v1/responses", "/v1/models"]
    first, second = entries
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert (first["model"], first["store"], first["status"]) == (CHAT, False, 200)
    assert json.loads(first["body"])["input"] == "journal me"
    assert first["body_bytes"] == len(first["body"].encode())
    assert len(first["body_sha256"]) == 64
    assert second["status"] == 401
    assert second["headers"]["authorization"] == "Bearer sk-leaked-openai-key"
    assert client.delete("/sandbox/journal").status_code == 200
    assert client.get("/sandbox/journal").json() == []


def test_journal_since_filters_older_entries(client: httpx.Client) -> None:
    client.get("/v1/models")
    seq = client.get("/sandbox/journal").json()[-1]["seq"]
    client.get("/v1/models/bge-m3")
    newer = client.get("/sandbox/journal", params={"since": seq}).json()
    assert [e["path"] for e in newer] == ["/v1/models/bge-m3"]


# --- audio uploads ---------------------------------------------------------------------


def test_large_upload_streams_and_is_journalled(client: httpx.Client) -> None:
    data = bytes(range(256)) * 8192 + b"\r\n--tail--\r\n"  # ~2 MB
    digest = hashlib.sha256(data).hexdigest()
    client.delete("/sandbox/journal")
    response = client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-large-v3", "response_format": "verbose_json"},
        files={"file": ("big.wav", data, "audio/wav")},
    )
    assert response.status_code == 200
    assert response.headers["x-sandbox-file-sha256"] == digest
    assert response.json()["task"] == "transcribe"
    assert digest in response.json()["text"]
    entry = client.get("/sandbox/journal").json()[-1]
    assert entry["model"] == "whisper-large-v3"
    assert entry["form"]["response_format"] == "verbose_json"
    assert entry["file"] == {
        "filename": "big.wav",
        "content_type": "audio/wav",
        "bytes": len(data),
        "sha256": digest,
    }
    assert entry["body_bytes"] > len(data)


def test_transcription_rules(client: httpx.Client) -> None:
    no_file = client.post("/v1/audio/transcriptions", files={"model": (None, "whisper-large-v3")})
    assert no_file.status_code == 400
    assert error_of(no_file)["param"] == "file"
    wrong = client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("a.wav", b"x")},
    )
    assert wrong.status_code == 404
    assert error_of(wrong)["code"] == "model_not_found"
    as_json = client.post("/v1/audio/transcriptions", json={"model": "whisper-large-v3"})
    assert as_json.status_code == 400

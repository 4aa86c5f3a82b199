"""The real openai SDK against the sandbox: every endpoint Bastion supports, over TLS."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator

import openai
import pytest
from openai.types.responses import ResponseTextDeltaEvent
from sandbox_support import KEY, client_for, run_sandbox_thread

from bastion_sandbox import RunningSandbox
from bastion_sandbox.embeddings import embedding_vector

CHAT = "gpt-oss-120b"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(tmp_path_factory.mktemp("tls"))


def make_client(sandbox: RunningSandbox, api_key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=sandbox.base_url,
        api_key=api_key,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=sandbox.tls.client_ssl_context()),
    )


@pytest.fixture(scope="module")
def client(sandbox: RunningSandbox) -> Iterator[openai.OpenAI]:
    with make_client(sandbox) as c:
        yield c


def last_journal_entry(sandbox: RunningSandbox) -> dict[str, object]:
    with client_for(sandbox) as c:
        entry: dict[str, object] = c.get("/sandbox/journal").json()[-1]
    return entry


def test_sdk_chat(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    assert completion.choices[0].message.content == f"sandbox:{CHAT}: Hello from the SDK"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_sdk_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Stream from the SDK"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"sandbox:{CHAT}: Stream from the SDK"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 3


def test_sdk_embeddings_default_base64(sandbox: RunningSandbox, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="bge-m3", input="embed me")
    vector = result.data[0].embedding
    assert vector == embedding_vector("embed me", 1024).tolist()
    body = last_journal_entry(sandbox)["body"]
    assert isinstance(body, str) and '"encoding_format":"base64"' in body.replace(" ", "")


def test_sdk_responses_non_stream(client: openai.OpenAI) -> None:
    response = client.responses.create(model=CHAT, input="Responses hello", store=False)
    assert response.output_text == f"sandbox:{CHAT}: Responses hello"
    assert response.id.startswith("resp_")


def test_sdk_responses_without_store_false_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CHAT, input="x")
    assert caught.value.code == "store_must_be_false"


def test_sdk_responses_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=CHAT, input="Stream it", store=False, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) >= 3
    assert "".join(d.delta for d in deltas) == f"sandbox:{CHAT}: Stream it"
    assert events[-1].response.output_text == f"sandbox:{CHAT}: Stream it"


def test_sdk_responses_stream_helper_accumulates(client: openai.OpenAI) -> None:
    with client.responses.stream(model=CHAT, input="Helper", store=False) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == f"sandbox:{CHAT}: Helper"


def test_sdk_responses_function_call_chain(client: openai.OpenAI) -> None:
    tools: list[openai.types.responses.ToolParam] = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ]
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model=CHAT, input=[question], tools=tools, store=False)
    call = first.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    second = client.responses.create(
        model=CHAT,
        store=False,
        tools=tools,
        input=[
            question,
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.output_text == f"sandbox:{CHAT}: tool result: sunny, 21C"


def awkward_bytes() -> bytes:
    chunks = [
        os.urandom(1000),
        b"\r\n--boundary\r\n",
        b"\x00" * 50,
        b"\r\r\n\n--",
        os.urandom(3000),
    ]
    return b"".join(chunks)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK deprecates translations
@pytest.mark.parametrize("task", ["transcriptions", "translations"])
def test_sdk_audio_upload_is_byte_exact(client: openai.OpenAI, task: str) -> None:
    data = awkward_bytes()
    api = client.audio.transcriptions if task == "transcriptions" else client.audio.translations
    raw = api.with_raw_response.create(model="whisper-large-v3", file=("clip.wav", data))
    digest = hashlib.sha256(data).hexdigest()
    assert raw.headers["x-sandbox-file-sha256"] == digest
    assert raw.headers["x-sandbox-file-bytes"] == str(len(data))
    assert digest in raw.parse().text


def test_sdk_transcription_text_format(client: openai.OpenAI) -> None:
    text = client.audio.transcriptions.create(
        model="whisper-large-v3", file=("a.mp3", b"abc"), response_format="text"
    )
    assert hashlib.sha256(b"abc").hexdigest() in str(text)


def test_sdk_images(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="FLUX.1-schnell", prompt="a lighthouse", response_format="b64_json"
    )
    assert result.data is not None
    png = base64.b64decode(result.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG")


def test_sdk_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-oss-120b" in ids and "FLUX.1-schnell" in ids


def test_sdk_typed_errors(sandbox: RunningSandbox, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    leaky = make_client(sandbox, api_key="sk-openai-key-1234")
    with leaky, pytest.raises(openai.AuthenticationError) as auth:
        leaky.models.list()
    assert auth.value.code == "openai_key_received"

"""Every endpoint Bastion serves, through a real `bastion-edge run`, with the real
openai SDK configured only by the environment `bastion-edge env` prints."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path

import openai
import pytest
from harness import APP_KEY, BASTION_KEY, Proxy, Sandbox

PNG_PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000105e227d40000000049454e44ae426082")).decode()


def headers_of(entry: dict[str, object]) -> dict[str, str]:
    raw = entry["headers"]
    assert isinstance(raw, dict)
    return {str(k).lower(): str(v) for k, v in raw.items()}


def test_chat_completion_reaches_bastion_with_bastion_key_and_model(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"OpenAI-Organization": "org-secret", "OpenAI-Project": "proj-secret"})
    completion = raw.parse()
    assert completion.model == "gpt-oss-120b"
    assert "hello there" in (completion.choices[0].message.content or "")
    assert raw.headers["x-bastion-edge-upstream-model"] == "gpt-oss-120b"
    seen = sandbox.last("/v1/chat/completions")
    headers = headers_of(seen)
    assert headers["authorization"] == f"Bearer {BASTION_KEY}"
    assert "openai-organization" not in headers and "openai-project" not in headers
    assert seen["model"] == "gpt-oss-120b"


def test_chat_stream_arrives_in_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream please" in text
    assert len([c for c in chunks if c.choices]) > 2
    assert {c.model for c in chunks} == {"gpt-oss-20b"}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_vision_input_goes_to_vision_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=[{
        "role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_PIXEL}"}},
        ]}])
    assert completion.model == "Qwen2.5-VL-72B-Instruct"


def test_route_header_selects_coding_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "write a loop"}],
        extra_headers={"X-Bastion-Route": "coding"})
    assert completion.model == "Qwen3-Coder-30B-A3B-Instruct"


def test_long_prompt_goes_to_long_context_model(client: openai.OpenAI) -> None:
    long_text = "lorem ipsum dolor sit amet " * 4000  # ~108k chars, ~27k tokens
    completion = client.chat.completions.create(
        model="gpt-4-turbo", messages=[{"role": "user", "content": long_text}])
    assert completion.model == "Meta-Llama-3_3-70B-Instruct"


def test_completions_legacy_endpoint(client: openai.OpenAI, sandbox: Sandbox) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.model == "gpt-oss-20b"
    assert completion.choices[0].text


def test_embeddings_default_base64_decode(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert result.model == "bge-m3"
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 1024
    assert result.data[0].embedding != result.data[1].embedding


def test_images_generation_injects_model_when_omitted(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    image = client.images.generate(prompt="a lighthouse", response_format="b64_json")
    assert image.data and image.data[0].b64_json
    assert base64.b64decode(image.data[0].b64_json).startswith(b"\x89PNG")
    assert sandbox.last("/v1/images/generations")["model"] == "FLUX.1-schnell"


def _awkward_audio(size: int) -> bytes:
    """Bytes a lossy multipart re-encoder would mangle: CR, LF, NUL, dashes, boundaries."""
    pattern = b"\r\n--\x00\r\n\r\n--boundary\r\nContent-Disposition: form-data\r\n\r\r\n\n\x00--"
    noise = hashlib.sha256(b"seed").digest() * 4
    body = (pattern + noise) * (size // (len(pattern) + len(noise)) + 1)
    return body[:size]


@pytest.mark.parametrize("size", [4096, 3 * 1024 * 1024], ids=["buffered", "streamed"])
def test_transcription_file_arrives_byte_exact(
    client: openai.OpenAI, sandbox: Sandbox, size: int
) -> None:
    audio = _awkward_audio(size)
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav"))
    assert raw.headers["x-sandbox-file-sha256"] == hashlib.sha256(audio).hexdigest()
    assert int(raw.headers["x-sandbox-file-bytes"]) == size
    assert sandbox.last("/v1/audio/transcriptions")["model"] == "whisper-large-v3"
    assert raw.parse().text


def test_translation_multipart_model_mapped(client: openai.OpenAI, sandbox: Sandbox) -> None:
    audio = _awkward_audio(2000)
    result = client.audio.translations.create(model="whisper-1", file=("a.mp3", audio))
    assert result.text
    assert sandbox.last("/v1/audio/translations")["model"] == "whisper-large-v3"


def test_responses_store_forced_false(client: openai.OpenAI, sandbox: Sandbox) -> None:
    response = client.responses.create(model="gpt-4o", input="Tell me a fact")
    assert response.output_text
    assert response.model == "gpt-oss-120b"
    body = sandbox.last("/v1/responses")
    assert body["store"] is False


def test_responses_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o", input="stream it", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "stream it" in deltas


def test_models_retrieve_maps_path_id(client: openai.OpenAI, sandbox: Sandbox) -> None:
    model = client.models.retrieve("gpt-4o")
    assert model.id == "gpt-oss-120b"
    assert sandbox.journal()[-1]["path"] == "/v1/models/gpt-oss-120b"
    listed = {m.id for m in client.models.list()}
    assert {"gpt-oss-120b", "bge-m3"} <= listed


def test_app_key_never_reaches_upstream_or_logs(
    client: openai.OpenAI, sandbox: Sandbox, proxy: Proxy
) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    seen = json.dumps(sandbox.journal())
    assert APP_KEY not in seen and "sk-" not in seen
    for text in (proxy.process.log(), proxy.access_log.read_text()):
        assert APP_KEY not in text
        assert BASTION_KEY not in text


def test_access_log_records_the_exchange(client: openai.OpenAI, proxy: Proxy) -> None:
    client.embeddings.create(model="text-embedding-3-small", input="log me")
    records = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    record = [r for r in records if r["endpoint"] == "embeddings"][-1]
    assert record["original_model"] == "text-embedding-3-small"
    assert record["upstream_model"] == "bge-m3"
    assert record["status"] == 200 and record["destination"] == "bastion"
    assert {"host", "key", "model"} <= set(record["rewrites"])
    assert record["ttfb_ms"] is not None and record["duration_ms"] >= record["ttfb_ms"]


def test_metrics_count_requests(client: openai.OpenAI, proxy: Proxy) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "m"}])
    text = proxy.metrics()
    wanted = ('app="none",destination="bastion",endpoint="chat.completions",'
              'original_model="gpt-4o",'
              'status_class="2xx",stream="false",upstream_model="gpt-oss-120b"')
    line = next(line for line in text.splitlines()
                if line.startswith(f"bastion_edge_requests_total{{{wanted}}}"))
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert 'bastion_edge_rewrites_total{kind="model"}' in text


def test_float_embeddings_pass_too(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="text-embedding-3-small", input="x", encoding_format="float")
    vector = result.data[0].embedding
    assert len(vector) == 1024
    packed = struct.pack(f"<{len(vector)}f", *vector)
    assert len(packed) == 4096


def test_environment_is_all_the_app_got(proxy: Proxy) -> None:
    env = proxy.app_env()
    assert set(env) == {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_FILE",
                        "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                        "NODE_USE_ENV_PROXY", "NODE_OPTIONS"}
    assert env["NODE_OPTIONS"].startswith("--import /")  # the preload for Node's fetch
    bundle = Path(env["SSL_CERT_FILE"]).read_text()
    proxy_ca = Path(env["NODE_EXTRA_CA_CERTS"]).read_text().strip()
    assert proxy_ca in bundle and bundle.count("BEGIN CERTIFICATE") > 10
    assert oct(os.stat(proxy.confdir / "mitmproxy-ca.pem").st_mode & 0o777) == "0o600"

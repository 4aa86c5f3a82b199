"""`client.audio.speech.create` unchanged, against Bastion's Riva contract: every
format decoded back with PyAV, speed, voices, SSE, chunked long input, both kinds of
Riva reply, and other flows served while audio is transcoded."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import openai
import pytest
from conftest import make_client
from harness import Proxy, Sandbox, proxy_env, start_proxy, start_sandbox

from bastion_sandbox import speech_seconds

TEXT = "Zero-code migration works. The app never changed a line."

# response_format -> (codec name PyAV reports, sample rate)
FORMATS = {
    "mp3": ("mp3", 24000),
    "opus": ("opus", 48000),
    "aac": ("aac", 24000),
    "flac": ("flac", 24000),
    "wav": ("pcm_s16le", 24000),
}


def decoded(audio: bytes, fmt: str | None = None) -> tuple[str, int, float]:
    """(codec, sample rate, duration in seconds) by decoding every frame."""
    options = {"format": fmt} if fmt else {}
    with av.open(io.BytesIO(audio), **options) as container:  # type: ignore[arg-type]
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        codec = stream.codec_context.name.removesuffix("float")  # mp3float is the mp3 decoder
        return codec, stream.codec_context.sample_rate, samples / stream.rate


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_is_really_that_format(client: openai.OpenAI, fmt: str) -> None:
    raw = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=fmt)  # type: ignore[arg-type]
    audio = raw.content
    codec, rate, seconds = decoded(audio)
    assert (codec, rate) == FORMATS[fmt]
    assert seconds == pytest.approx(speech_seconds(TEXT), rel=0.08)
    expected_type = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                     "flac": "audio/flac", "wav": "audio/wav"}[fmt]
    assert raw.headers["content-type"].startswith(expected_type)


def test_default_format_is_mp3_and_pcm_is_raw_24k(client: openai.OpenAI) -> None:
    mp3 = client.audio.speech.create(model="tts-1", voice="nova", input=TEXT).read()
    assert decoded(mp3)[0] == "mp3"
    pcm = client.audio.speech.create(model="tts-1", voice="nova", input=TEXT,
                                     response_format="pcm").read()
    assert not pcm.startswith((b"RIFF", b"ID3", b"OggS", b"fLaC"))
    assert len(pcm) / 2 / 24000 == pytest.approx(speech_seconds(TEXT), rel=0.08)


@pytest.mark.parametrize("speed", [0.5, 2.0, 4.0])
def test_speed_changes_duration(client: openai.OpenAI, speed: float) -> None:
    audio = client.audio.speech.create(model="tts-1", voice="echo", input=TEXT,
                                       response_format="wav", speed=speed).read()
    assert decoded(audio)[2] == pytest.approx(speech_seconds(TEXT) / speed, rel=0.1)


def test_voice_object_and_riva_voice_name(client: openai.OpenAI, sandbox: Sandbox) -> None:
    for voice in ({"id": "fable"}, "English-US.Male-1"):
        raw = client.audio.speech.with_raw_response.create(
            model="tts-1", voice=voice, input="Hello.", response_format="wav")  # type: ignore[arg-type]
        assert decoded(raw.content)[2] > 0
    riva = [e for e in sandbox.journal() if e["path"] == "/api/v1/tts/text_to_audio"]
    bodies = [json.loads(e["body"]) for e in riva[-2:]]
    assert [b["voice_name"] for b in bodies] == ["English-GB.Male-1", "English-US.Male-1"]
    assert bodies[0]["language_code"] == "en-GB"
    assert all(e["headers"]["authorization"].startswith("Bearer bastion-") for e in riva)


def test_sse_stream_reassembles_to_audio(proxy: Proxy) -> None:
    env = proxy.app_env()
    long_text = " ".join(f"Sentence number {i} is here." for i in range(40))
    payload = {"model": "gpt-4o-mini-tts", "voice": "coral", "input": long_text,
               "response_format": "wav", "stream_format": "sse"}
    chunks: list[bytes] = []
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=env["SSL_CERT_FILE"], timeout=60) as c, \
            c.stream("POST", "https://api.openai.com/v1/audio/speech", json=payload,
                     headers={"authorization": "Bearer sk-app"}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in reply.iter_lines() if line.startswith("data:")]
    for event in events[:-1]:
        assert event["type"] == "speech.audio.delta"
        chunks.append(base64.b64decode(event["audio"]))
    assert events[-1]["type"] == "speech.audio.done" and len(chunks) > 1
    assert decoded(b"".join(chunks), "wav")[2] == pytest.approx(
        speech_seconds(long_text), rel=0.1)


def test_long_input_is_chunked_and_joined(client: openai.OpenAI, sandbox: Sandbox) -> None:
    sandbox.clear_journal()
    text = ("This sentence is exactly long enough to matter here. " * 75)[:4000]
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text,
                                       response_format="flac").read()
    calls = [e for e in sandbox.journal() if e["path"] == "/api/v1/tts/text_to_audio"]
    assert len(calls) > 3  # over Riva's ~20 s per request
    assert decoded(audio)[2] == pytest.approx(speech_seconds(text), rel=0.08)


def test_bad_input_gets_400_naming_the_field(client: openai.OpenAI) -> None:
    cases = [({"input": ""}, "input"), ({"input": "x" * 4097}, "input"),
             ({"speed": 5}, "speed"), ({"response_format": "ogg"}, "response_format")]
    for override, param in cases:
        body = {"model": "tts-1", "voice": "alloy", "input": "hi", **override}
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.speech.create(**body)  # type: ignore[arg-type]
        assert caught.value.param == param


def test_instructions_accepted_and_logged_as_ignored(client: openai.OpenAI, proxy: Proxy) -> None:
    client.audio.speech.create(model="gpt-4o-mini-tts", voice="sage", input="Hi.",
                               instructions="Speak like a pirate").read()
    records = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    speech = [r for r in records if r["endpoint"] == "audio.speech"][-1]
    assert "instructions-ignored" in speech["notes"]
    assert "tts" in speech["rewrites"] and speech["upstream_model"] == "English-US.Female-Calm"
    assert speech["original_model"] == "gpt-4o-mini-tts"  # the app's model, not null


def test_curl_download_with_streaming_response(proxy: Proxy, tmp_path: Path) -> None:
    out = tmp_path / "speech.aac"
    env = proxy.app_env()
    subprocess.run(
        ["curl", "-sS", "--fail", "--noproxy", "", "-x", env["HTTPS_PROXY"], "--cacert",
         env["SSL_CERT_FILE"], "https://api.openai.com/v1/audio/speech", "-o", str(out),
         "-H", "Authorization: Bearer sk-app", "-H", "content-type: application/json",
         "-d", json.dumps({"model": "tts-1", "voice": "onyx", "input": TEXT,
                           "response_format": "aac"})], check=True, timeout=60)
    assert decoded(out.read_bytes())[0] == "aac"


def test_other_flows_keep_flowing_while_audio_transcodes(
    client: openai.OpenAI, proxy: Proxy
) -> None:
    """Wiring: a chat call and /healthz are answered while a long speech download is open.
    That transcoding never runs on the event loop is shown in test_tts_adapter."""
    long_text = ("A long passage that keeps the transcoder busy for a while. " * 60)[:3500]
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=long_text, response_format="opus") as reply:
        chunks = reply.iter_bytes()
        first = next(chunks)  # the download is under way
        assert httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/healthz").status_code == 200
        chat = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "meanwhile"}])
        assert chat.model == "gpt-oss-120b"
        audio = first + b"".join(chunks)
    assert decoded(audio)[2] == pytest.approx(speech_seconds(long_text), rel=0.08)


@pytest.fixture(scope="module")
def pcm_riva(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A Bastion whose Riva answers raw PCM (no header) instead of WAV."""
    tmp = tmp_path_factory.mktemp("pcm")
    box = start_sandbox(tmp, ["--riva-audio", "pcm"], tls_dir=sandbox.tls_dir)
    running = start_proxy(tmp / "proxy", proxy_env(box))
    yield running
    running.process.stop()
    box.process.stop()


def test_raw_pcm_riva_replies_are_handled(
    monkeypatch: pytest.MonkeyPatch, pcm_riva: Proxy
) -> None:
    client = make_client(monkeypatch, pcm_riva)
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT,
                                       response_format="mp3").read()
    assert decoded(audio)[2] == pytest.approx(speech_seconds(TEXT), rel=0.08)


def test_sdk_streaming_download(client: openai.OpenAI, tmp_path: Path) -> None:
    out = tmp_path / "speech.flac"
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="verse", input=TEXT, response_format="flac") as reply:
        reply.stream_to_file(out)
    codec, rate, seconds = decoded(out.read_bytes())
    assert (codec, rate) == FORMATS["flac"]
    assert seconds == pytest.approx(speech_seconds(TEXT), rel=0.08)


NODE_SPEECH_APP = """\
import OpenAI from "openai";
import { writeFile } from "node:fs/promises";
const client = new OpenAI({ maxRetries: 0, timeout: 30000 });
const speech = await client.audio.speech.create({
  model: "tts-1", voice: "alloy", input: process.argv[3], response_format: "opus" });
await writeFile(process.argv[2], Buffer.from(await speech.arrayBuffer()));
"""


def test_node_sdk_speech_works_unchanged(proxy: Proxy, tmp_path: Path) -> None:
    """openai-node's audio.speech.create, configured only by `bastion-edge env`."""
    from test_transparent import app_env, node_app, require_node

    require_node()
    app = node_app(tmp_path / "node-app", NODE_SPEECH_APP)
    out = tmp_path / "node.opus"
    done = subprocess.run(["node", str(app), str(out), TEXT],
                          env=app_env(tmp_path, **proxy.app_env()),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    codec, rate, seconds = decoded(out.read_bytes())
    assert (codec, rate) == FORMATS["opus"]
    assert seconds == pytest.approx(speech_seconds(TEXT), rel=0.08)

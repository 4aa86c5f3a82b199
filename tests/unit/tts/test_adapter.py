"""The TTS adapter end to end against a fake Riva (real audio, real sockets)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web
from tts_fakes import FakeRiva, decode, spoken_text_and_rate

from bastion_edge.config.rules import TtsRules
from bastion_edge.tts.adapter import TOKEN_HEADER, SpeechJob, TtsAdapter

RULES = TtsRules(voices={"alloy": "English-US.Female-1", "onyx": "Plain-Voice"},
                 no_ssml_voices=frozenset({"Plain-Voice"}), sample_rate_hz=22050)
SENTENCE = "The quick brown fox jumps over the lazy dog near the riverbank. "


@dataclass
class Env:
    adapter: TtsAdapter
    riva: FakeRiva
    http: httpx.AsyncClient
    job: SpeechJob

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}/v1/audio/speech"

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {TOKEN_HEADER: token or self.adapter.register(self.job)}

    async def post(self, **fields: object) -> httpx.Response:
        body = {"model": "tts-1", "input": "Hello there, world.", "voice": "alloy", **fields}
        return await self.http.post(self.url, json=body, headers=self.headers())


@asynccontextmanager
async def environment(riva: FakeRiva | None = None, timeout: float = 10.0,
                      tts: TtsRules = RULES) -> AsyncIterator[Env]:
    riva = await (riva or FakeRiva()).start()
    adapter = TtsAdapter()
    await adapter.start()
    async with httpx.AsyncClient(timeout=30) as http:
        job = SpeechJob(riva.url, "sk-bastion-test", tts, http, timeout)
        try:
            yield Env(adapter, riva, http, job)
        finally:
            await adapter.stop()
            await riva.stop()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def sse_events(body: bytes) -> list[dict[str, object]]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith(b"data:")]


# -- formats and the Riva request


@pytest.mark.parametrize(("fmt", "content_type", "rate"), [
    ("mp3", "audio/mpeg", 24000), ("opus", "audio/opus", 48000), ("aac", "audio/aac", 24000),
    ("flac", "audio/flac", 24000), ("wav", "audio/wav", 24000), ("pcm", "audio/pcm", 24000),
])
def test_each_format_streams_valid_audio(fmt: str, content_type: str, rate: int) -> None:
    async def scenario() -> None:
        async with environment() as env:
            text = "Hello there, world. This is a short test."  # 41 chars ~ 2.7 s
            response = await env.post(input=text, response_format=fmt)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == content_type
            assert response.headers["transfer-encoding"] == "chunked"
            expected = len(text) / 15
            if fmt == "pcm":
                assert len(response.content) / 2 / rate == pytest.approx(expected, rel=0.05)
            else:
                decoded = decode(response.content)
                assert decoded.rate == rate
                assert decoded.seconds == pytest.approx(expected, rel=0.05)
    run(scenario)


def test_riva_gets_key_voice_language_rate_and_linear_pcm() -> None:
    async def scenario() -> None:
        async with environment() as env:
            response = await env.post(instructions="whisper")
            assert response.status_code == 200
            assert env.riva.auth == ["Bearer sk-bastion-test"]
            assert env.riva.calls == [{"text": "Hello there, world.", "language_code": "en-US",
                                       "encoding": 1, "sample_rate_hz": 22050,
                                       "voice_name": "English-US.Female-1"}]
            assert response.headers["x-bastion-edge-tts"] == (
                "riva_voice=English-US.Female-1;chunks=1;characters=19;ssml_rate=none;atempo=1")
            assert response.headers["x-bastion-edge-note"] == "instructions-ignored"
    run(scenario)


@pytest.mark.parametrize(("voice", "speed", "header", "ssml_rate"), [
    ("alloy", 2.0, "ssml_rate=200%;atempo=1", 200),
    ("alloy", 4.0, "ssml_rate=250%;atempo=1.6", 250),
    ("onyx", 2.0, "ssml_rate=none;atempo=2", None),
])
def test_speed_via_ssml_and_atempo_shortens_audio(voice: str, speed: float, header: str,
                                                  ssml_rate: int | None) -> None:
    async def scenario() -> None:
        async with environment() as env:
            text = SENTENCE * 2
            response = await env.post(input=text, voice=voice, speed=speed,
                                      response_format="wav")
            assert response.status_code == 200
            assert response.headers["x-bastion-edge-tts"].endswith(header)
            spoken, rate = spoken_text_and_rate(str(env.riva.calls[0]["text"]))
            assert rate == (ssml_rate or 100) and spoken == text.strip()
            expected = len(text.strip()) / 15 / speed
            assert decode(response.content).seconds == pytest.approx(expected, rel=0.05)
    run(scenario)


# -- chunking and streaming


def test_long_text_is_chunked_into_several_riva_calls_and_joined() -> None:
    async def scenario() -> None:
        async with environment() as env:
            text = (SENTENCE * 70)[:4096]
            response = await env.post(input=text, response_format="flac")
            assert response.status_code == 200
            calls = env.riva.calls
            assert len(calls) > 10
            assert f"chunks={len(calls)};" in response.headers["x-bastion-edge-tts"]
            assert all(len(str(c["text"])) / 15 < 16 for c in calls)
            spoken = " ".join(str(c["text"]) for c in calls)
            assert " ".join(spoken.split()) == " ".join(text.split())
            total = sum(max(0.2, len(str(c["text"])) / 15) for c in calls)
            assert decode(response.content).seconds == pytest.approx(total, rel=0.02)
            assert env.adapter.chunks == len(calls) and env.adapter.requests == 1
            assert env.adapter.transcode_seconds > 0
    run(scenario)


@pytest.mark.parametrize("stream_format", ["sse", "audio"])
def test_first_chunk_is_sent_before_later_chunks_are_synthesized(stream_format: str) -> None:
    """Riva holds chunk 3 until the app has received audio: only a streaming adapter passes."""
    gate = asyncio.Event()

    async def hold_after_two(index: int, payload: dict[str, object]) -> None:
        if index >= 2:
            await asyncio.wait_for(gate.wait(), 10)

    async def scenario() -> None:
        async with environment(FakeRiva(before_reply=hold_after_two)) as env:
            body = {"model": "tts-1", "input": SENTENCE * 20, "voice": "alloy",
                    "response_format": "mp3", "stream_format": stream_format}
            received = b""
            async with env.http.stream("POST", env.url, json=body,
                                       headers=env.headers()) as response:
                assert response.status_code == 200
                async for piece in response.aiter_bytes():
                    received += piece
                    if not gate.is_set():
                        assert len(env.riva.calls) <= 3
                        gate.set()
            assert gate.is_set() and len(env.riva.calls) > 3
            if stream_format == "sse":
                events = sse_events(received)
                assert events[-1]["type"] == "speech.audio.done"
                audio = b"".join(base64.b64decode(str(e["audio"])) for e in events[:-1])
            else:
                audio = received
            assert decode(audio).seconds == pytest.approx(len(SENTENCE * 20) / 15, rel=0.05)
    run(scenario)


def test_sse_events_reassemble_into_valid_audio_with_usage() -> None:
    async def scenario() -> None:
        async with environment() as env:
            text = SENTENCE * 8
            response = await env.post(input=text, response_format="opus", stream_format="sse")
            assert response.headers["content-type"] == "text/event-stream"
            events = sse_events(response.content)
            assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
            assert events[-1] == {"type": "speech.audio.done", "usage": {
                "input_tokens": 128, "output_tokens": 0, "total_tokens": 128}}
            audio = b"".join(base64.b64decode(str(e["audio"])) for e in events[:-1])
            decoded = decode(audio)
            assert (decoded.container, decoded.rate) == ("ogg", 48000)
            assert decoded.seconds == pytest.approx(len(text.strip()) / 15, rel=0.05)
    run(scenario)


@pytest.mark.parametrize("container", ["wav_placeholder", "raw", "flac", "ogg"])
def test_riva_reply_containers_all_accepted(container: str) -> None:
    async def scenario() -> None:
        async with environment(FakeRiva(container=container)) as env:
            response = await env.post(input=SENTENCE, response_format="wav")
            assert response.status_code == 200
            expected = len(SENTENCE.strip()) / 15
            assert decode(response.content).seconds == pytest.approx(expected, rel=0.05)
    run(scenario)


# -- refusals and failures


def test_unknown_missing_and_used_tokens_are_403() -> None:
    async def scenario() -> None:
        async with environment() as env:
            body = {"model": "tts-1", "input": "hi", "voice": "alloy"}
            for headers in ({}, {TOKEN_HEADER: "guessed"}):
                response = await env.http.post(env.url, json=body, headers=headers)
                assert response.status_code == 403
                assert response.json()["error"]["code"] == "invalid_tts_token"
            token = env.adapter.register(env.job)
            assert (await env.http.post(env.url, json=body, headers=env.headers(token))
                    ).status_code == 200
            assert (await env.http.post(env.url, json=body, headers=env.headers(token))
                    ).status_code == 403
            assert len(env.riva.calls) == 1 and env.adapter.rejected_tokens == 3
            other = await env.http.get(f"http://127.0.0.1:{env.adapter.port}/v1/models")
            assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    run(scenario)


def test_expired_token_is_403() -> None:
    async def scenario() -> None:
        riva = await FakeRiva().start()
        adapter = TtsAdapter(token_ttl_seconds=0.05)
        await adapter.start()
        async with httpx.AsyncClient() as http:
            token = adapter.register(SpeechJob(riva.url, "k", RULES, http, 5))
            await asyncio.sleep(0.1)
            response = await http.post(
                f"http://127.0.0.1:{adapter.port}/v1/audio/speech", headers={TOKEN_HEADER: token},
                json={"model": "tts-1", "input": "hi", "voice": "alloy"})
            assert response.status_code == 403
        await adapter.stop()
        await riva.stop()
    run(scenario)


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": ""}, "input"), ({"speed": 9}, "speed"), ({"response_format": "ogg"},
                                                        "response_format"),
    ({"voice": {"nope": 1}}, "voice"),
])
def test_invalid_request_is_400_before_anything_goes_upstream(fields: dict[str, object],
                                                              param: str) -> None:
    async def scenario() -> None:
        async with environment() as env:
            response = await env.post(**fields)
            assert response.status_code == 400 and response.json()["error"]["param"] == param
            assert env.riva.calls == []
    run(scenario)


def test_unknown_voice_without_default_is_400() -> None:
    async def scenario() -> None:
        async with environment(tts=TtsRules(default_voice=None)) as env:
            response = await env.post(voice="shimmer")
            assert response.status_code == 400 and response.json()["error"]["param"] == "voice"
    run(scenario)


def riva_answers(status: int, body: bytes = b"",
                 on_call: int = 0) -> Callable[[int, dict[str, object]],
                                               Awaitable[web.StreamResponse | None]]:
    async def reply(index: int, payload: dict[str, object]) -> web.StreamResponse | None:
        if index < on_call:
            return None
        return web.Response(status=status, body=body, content_type="application/json")
    return reply


@pytest.mark.parametrize(("status", "body", "expected", "code"), [
    (500, b'{"error": {"message": "GPU on fire"}}', 502, "riva_error"),
    (400, b'{"message": "invalid SSML"}', 400, "riva_rejected_input"),
    (200, b"", 502, "empty_audio"),
])
def test_riva_failure_before_first_byte_is_an_envelope(status: int, body: bytes,
                                                       expected: int, code: str) -> None:
    async def scenario() -> None:
        async with environment(FakeRiva(before_reply=riva_answers(status, body))) as env:
            response = await env.post()
            assert response.status_code == expected
            assert response.json()["error"]["code"] == code
            assert env.adapter.errors == 1
    run(scenario)


def test_riva_timeout_is_504() -> None:
    async def slow(index: int, payload: dict[str, object]) -> None:
        await asyncio.sleep(0.5)

    async def scenario() -> None:
        async with environment(FakeRiva(before_reply=slow), timeout=0.2) as env:
            response = await env.post()
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "riva_timeout"
    run(scenario)


def test_riva_unreachable_is_502() -> None:
    async def scenario() -> None:
        async with environment() as env:
            await env.riva.stop()
            response = await env.post()
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "riva_unreachable"
    run(scenario)


def test_failure_mid_sse_stream_ends_with_an_error_event() -> None:
    async def scenario() -> None:
        failing = FakeRiva(before_reply=riva_answers(500, b"boom", on_call=3))
        async with environment(failing) as env:
            response = await env.post(input=SENTENCE * 20, stream_format="sse")
            assert response.status_code == 200
            events = sse_events(response.content)
            assert events[0]["type"] == "speech.audio.delta"
            assert events[-1]["type"] == "error"
            assert events[-1]["error"]["code"] == "riva_error"  # type: ignore[index]
    run(scenario)


def test_failure_mid_audio_stream_breaks_the_transfer() -> None:
    async def scenario() -> None:
        failing = FakeRiva(before_reply=riva_answers(500, b"boom", on_call=3))
        async with environment(failing) as env:
            with pytest.raises(httpx.RemoteProtocolError):
                await env.post(input=SENTENCE * 20, response_format="pcm")
    run(scenario)


# -- concurrency


def test_loop_keeps_serving_while_a_long_transcode_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transcoding runs on the adapter's worker threads, never on the event loop: a small
    request is answered in full while a big one's transcode is held mid-call."""
    from bastion_edge.tts.transcoder import ChunkTranscoder

    loop_thread = threading.get_ident()
    held = threading.Event()  # the heavy request is inside a transcode call
    release = threading.Event()
    threads: set[str] = set()
    original = ChunkTranscoder.transcode

    def watched(self: ChunkTranscoder, riva_audio: bytes) -> bytes:
        assert threading.get_ident() != loop_thread, "transcoding on the event loop"
        threads.add(threading.current_thread().name)
        if self._atempo != 1.0 and not held.is_set():  # the heavy, slowed-down request
            held.set()
            release.wait(20)  # blocks this worker only: the loop must keep going
        return original(self, riva_audio)

    monkeypatch.setattr(ChunkTranscoder, "transcode", watched)

    async def scenario() -> None:
        async with environment() as env:
            heavy = asyncio.create_task(env.post(
                input=SENTENCE * 8, voice="onyx", speed=0.25, response_format="mp3"))
            assert await asyncio.to_thread(held.wait, 20)
            light = await env.post(input="Hi.", response_format="pcm")
            assert light.status_code == 200 and light.content  # while heavy is held
            assert not heavy.done()
            release.set()
            heavy_response = await heavy
            assert heavy_response.status_code == 200
            assert decode(heavy_response.content).samples > 0

    try:
        run(scenario)
    finally:
        release.set()
    assert threads and all(name.startswith("bastion-tts") for name in threads), threads


def test_app_hanging_up_mid_stream_stops_the_work() -> None:
    async def scenario() -> None:
        async with environment() as env:
            body = {"model": "tts-1", "input": SENTENCE * 40, "voice": "alloy",
                    "response_format": "pcm"}
            async with env.http.stream("POST", env.url, json=body,
                                       headers=env.headers()) as response:
                async for _ in response.aiter_bytes():
                    break  # hang up after the first bytes
            while not env.adapter.errors:  # run() bounds the whole scenario
                await asyncio.sleep(0.02)
            assert env.adapter.errors == 1
            assert len(env.riva.calls) < 11, "the remaining chunks were never requested"
            assert (await env.post()).status_code == 200  # and the adapter still serves
    run(scenario)


def test_undecodable_riva_audio_is_a_502() -> None:
    bogus_wav = b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x55\x00" + b"\x01" * 14 + \
        b"data\x00\x00\x00\x00" + b"\x00" * 64  # format 0x55: MP3 inside WAV

    async def scenario() -> None:
        riva = FakeRiva(before_reply=riva_answers(200, bogus_wav))
        async with environment(riva) as env:
            response = await env.post()
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "riva_bad_audio"
    run(scenario)


def test_unexpected_failure_is_still_an_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion_edge.tts.transcoder import ChunkTranscoder

    def explode(self: ChunkTranscoder, riva_audio: bytes) -> bytes:
        raise RuntimeError("codec exploded")

    monkeypatch.setattr(ChunkTranscoder, "transcode", explode)

    async def scenario() -> None:
        async with environment() as env:
            response = await env.post()
            assert response.status_code == 500
            assert response.json()["error"] == {
                "message": "Speech synthesis failed: RuntimeError: codec exploded",
                "type": "server_error", "param": None, "code": "tts_internal_error"}
    run(scenario)

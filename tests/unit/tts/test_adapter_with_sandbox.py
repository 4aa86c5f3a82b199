"""The TTS adapter against the project's sandbox Riva: HTTPS, real audio, strict checks."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from tts_fakes import decode

from bastion_edge.config.rules import TtsRules
from bastion_edge.tts.adapter import TOKEN_HEADER, SpeechJob, TtsAdapter
from bastion_edge.tts.chunking import chunk_text, max_chunk_chars
from bastion_edge.tts.riva_contract import DEFAULT_TTS_PATH
from bastion_sandbox import SandboxConfig, speech_seconds, start_sandbox

KEY = "qb-sandbox-test-key"
TEXT = ("Bastion speaks Riva, not OpenAI. The proxy translates every request, "
        "chunks long text & joins the audio; \"quotes\" and <angle brackets> survive. ") * 12


@asynccontextmanager
async def adapter_on_sandbox(tls_dir: Path, riva_audio: str = "wav",
                             key: str = KEY) -> AsyncIterator[tuple[str, httpx.AsyncClient,
                                                                    TtsAdapter, SpeechJob]]:
    sandbox = await start_sandbox(SandboxConfig(port=0, tls_dir=tls_dir,
                                                riva_audio=riva_audio))  # type: ignore[arg-type]
    adapter = TtsAdapter()
    port = await adapter.start()
    try:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sandbox.ca_path),
                              timeout=30) as upstream, \
                httpx.AsyncClient(timeout=30) as app:
            job = SpeechJob(sandbox.origin + DEFAULT_TTS_PATH, key,
                            TtsRules(voices={"fable": "English-GB.Male-1"}), upstream, 10.0)
            yield f"http://127.0.0.1:{port}/v1/audio/speech", app, adapter, job
    finally:
        await adapter.stop()
        await sandbox.stop()


@pytest.mark.parametrize(("riva_audio", "speed", "fmt"), [
    ("wav", 1.0, "mp3"),
    ("wav-placeholder-sizes", 2.0, "wav"),
    ("pcm", 4.0, "aac"),
])
def test_long_text_through_sandbox_riva(tmp_path: Path, riva_audio: str, speed: float,
                                        fmt: str) -> None:
    async def scenario() -> None:
        async with adapter_on_sandbox(tmp_path, riva_audio) as (url, app, adapter, job):
            response = await app.post(url, headers={TOKEN_HEADER: adapter.register(job)}, json={
                "model": "tts-1", "input": TEXT, "voice": "fable", "speed": speed,
                "response_format": fmt})
            assert response.status_code == 200, response.text
            assert adapter.chunks > 1
            rate = min(round(speed * 100), 250)
            chunks = chunk_text(TEXT, max_chunk_chars(None if speed == 1.0 else rate))
            spoken = sum(speech_seconds(c) for c in chunks) / speed  # sandbox's own clock
            assert decode(response.content).seconds == pytest.approx(spoken, rel=0.05)
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_sse_through_sandbox(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with adapter_on_sandbox(tmp_path) as (url, app, adapter, job):
            response = await app.post(url, headers={TOKEN_HEADER: adapter.register(job)}, json={
                "model": "gpt-4o-mini-tts", "input": TEXT, "voice": "alloy",
                "response_format": "opus", "stream_format": "sse"})
            events = [json.loads(line[5:]) for line in response.content.splitlines()
                      if line.startswith(b"data:")]
            assert events[-1]["type"] == "speech.audio.done"
            audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
            assert decode(audio).codec == "opus"
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_rejected_bastion_key_is_a_502_with_the_upstream_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with adapter_on_sandbox(tmp_path, key="sk-openai-key") as (url, app, adapter, job):
            response = await app.post(url, headers={TOKEN_HEADER: adapter.register(job)}, json={
                "model": "tts-1", "input": "Hello.", "voice": "alloy"})
            assert response.status_code == 502
            assert "OpenAI key" in response.json()["error"]["message"]
    asyncio.run(asyncio.wait_for(scenario(), 30))

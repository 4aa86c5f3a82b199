"""Test doubles for the TTS tests: tone PCM, containers made with PyAV, a fake Riva."""

from __future__ import annotations

import array
import asyncio
import io
import math
import re
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import unescape

import av
from aiohttp import web
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream

CHARS_PER_SECOND = 15.0  # the fake Riva speaks at the adapter's own estimate


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    """s16le mono sine; built from one second repeated, so long tones are cheap."""
    one = array.array("h", (int(amplitude * math.sin(2 * math.pi * freq * i / rate))
                            for i in range(rate)))
    if sys.byteorder == "big":
        one.byteswap()
    second = one.tobytes()
    total = int(seconds * rate) * 2
    return (second * (total // len(second) + 1))[:total]


def wav_bytes(pcm: bytes, rate: int, channels: int = 1, placeholder: int | None = None,
              extra_chunk: bool = False) -> bytes:
    data_size = len(pcm) if placeholder is None else placeholder
    riff_size = 36 + len(pcm) if placeholder is None else placeholder
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    extra = b"LIST" + struct.pack("<I", 4) + b"INFO" if extra_chunk else b""
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + extra + b"data" + struct.pack("<I", data_size) + pcm)


def container_bytes(pcm: bytes, rate: int, container: str, codec: str,
                    out_rate: int | None = None) -> bytes:
    """Encode s16 mono PCM with PyAV directly (independent of the code under test)."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as c:
        stream = c.add_stream(codec, rate=out_rate or rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        frame = AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = rate
        frame.pts = 0
        resampler = av.AudioResampler(format=stream.codec_context.format or "s16",
                                      layout="mono", rate=out_rate or rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            c.mux(stream.encode(f))
        c.mux(stream.encode(None))
    return out.getvalue()


@dataclass
class Decoded:
    container: str
    codec: str
    rate: int
    samples: int

    @property
    def seconds(self) -> float:
        return self.samples / self.rate


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data), "r") as c:
        stream = c.streams.audio[0]
        samples, rate = 0, 0
        for frame in c.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
        return Decoded(c.format.name, stream.codec_context.name, rate, samples)


def spoken_text_and_rate(text: str) -> tuple[str, int]:
    """What the fake Riva reads out of `text`: plain text, and the SSML rate (100 if none)."""
    if not text.startswith("<speak>"):
        return text, 100
    match = re.search(r'<prosody rate="(\d+)%">', text)
    rate = int(match.group(1)) if match else 100
    return unescape(re.sub(r"<[^>]+>", "", text)), rate


Reply = Callable[[int, dict[str, object]], Awaitable[web.StreamResponse | None]]


@dataclass
class FakeRiva:
    """An aiohttp Riva `text_to_audio`: a tone as long as the text would take to speak.

    `container`: wav | wav_placeholder | raw | flac | ogg. `before_reply(index, payload)`
    may delay, or return a response to send instead of audio.
    """

    container: str = "wav"
    before_reply: Reply | None = None
    calls: list[dict[str, object]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/tts/text_to_audio"

    async def start(self) -> FakeRiva:
        app = web.Application()
        app.router.add_post("/api/v1/tts/text_to_audio", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        index = len(self.calls)
        self.calls.append(payload)
        self.auth.append(request.headers.get("Authorization"))
        if self.before_reply is not None:
            replaced = await self.before_reply(index, payload)
            if replaced is not None:
                return replaced
        text, rate_percent = spoken_text_and_rate(str(payload["text"]))
        seconds = max(0.2, len(text) / CHARS_PER_SECOND / (rate_percent / 100))
        rate = int(str(payload["sample_rate_hz"]))
        body = await asyncio.to_thread(self.audio, tone(seconds, rate), rate)
        return web.Response(body=body, content_type="application/octet-stream")

    def audio(self, pcm: bytes, rate: int) -> bytes:
        if self.container == "wav":
            return wav_bytes(pcm, rate)
        if self.container == "wav_placeholder":
            return wav_bytes(pcm, rate, placeholder=0xFFFFFFFF)
        if self.container == "flac":
            return container_bytes(pcm, rate, "flac", "flac")
        if self.container == "ogg":
            return container_bytes(pcm, rate, "ogg", "libopus", 48000)
        return pcm

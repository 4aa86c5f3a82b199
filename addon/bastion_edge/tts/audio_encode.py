"""`Pcm` -> the six OpenAI speech formats, incrementally.

`StreamingEncoder` takes PCM chunk by chunk and returns the encoded bytes that are ready
after each chunk, so a reply can be streamed while later chunks are still being
synthesized; `flush()` ends the stream. Containers are written to a non-seekable sink,
so nothing is ever patched after it was sent (FLAC's STREAMINFO leaves the total sample
count unknown, WAV carries placeholder sizes as OpenAI's streamed WAV does).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer

from bastion_edge.tts.audio import Pcm, Resampler, frame_bytes, resample, to_frame
from bastion_edge.tts.speech_request import ResponseFormat

CONTENT_TYPES: dict[ResponseFormat, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

PCM_RATE = 24000  # OpenAI's `pcm` and `wav`: 24 kHz, s16le, mono
OPUS_RATE = 48000
# Small AVIO buffer: encoded bytes reach the reply soon after they are muxed.
_AVIO_BUFFER_BYTES = 4096
_WAV_PLACEHOLDER_SIZE = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class CodecSpec:
    container: str
    codec: str
    rate: int
    bit_rate: int | None = None
    container_options: tuple[tuple[str, str], ...] = ()
    codec_options: tuple[tuple[str, str], ...] = ()


CODECS: dict[ResponseFormat, CodecSpec] = {
    # No Xing/Info frame or ID3 tag: both would need patching after the fact.
    "mp3": CodecSpec("mp3", "libmp3lame", PCM_RATE, 64_000,
                     (("write_xing", "0"), ("id3v2_version", "0"))),
    # Complexity 5 of 10: ~3x faster than the default, no audible loss for speech at 32 kb/s.
    "opus": CodecSpec("ogg", "libopus", OPUS_RATE, 32_000,
                      codec_options=(("compression_level", "5"),)),
    "aac": CodecSpec("adts", "aac", PCM_RATE, 64_000),
    "flac": CodecSpec("flac", "flac", PCM_RATE),
}


def output_rate(fmt: ResponseFormat) -> int:
    spec = CODECS.get(fmt)
    return spec.rate if spec else PCM_RATE


def wav_header(rate: int, data_size: int = _WAV_PLACEHOLDER_SIZE) -> bytes:
    """A 44-byte s16 mono WAV header; the default sizes mean "until the end"."""
    riff_size = _WAV_PLACEHOLDER_SIZE if data_size == _WAV_PLACEHOLDER_SIZE else 36 + data_size
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size))


class _Stage(Protocol):
    def write(self, pcm: Pcm) -> bytes: ...  # `pcm` is already at the output rate
    def close(self) -> bytes: ...


class _Sink:
    """A write-only, non-seekable file for PyAV, drained after every write."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class _RawStage:
    def __init__(self, header: bytes = b"") -> None:
        self._header = header

    def write(self, pcm: Pcm) -> bytes:
        out, self._header = self._header + pcm.data, b""
        return out

    def close(self) -> bytes:
        out, self._header = self._header, b""
        return out


class _CodecStage:
    def __init__(self, spec: CodecSpec) -> None:
        self._sink = _Sink()
        self._container: OutputContainer = av.open(
            self._sink, "w", format=spec.container, buffer_size=_AVIO_BUFFER_BYTES,
            container_options=dict(spec.container_options))
        stream = self._container.add_stream(spec.codec, rate=spec.rate,
                                            options=dict(spec.codec_options))
        if not isinstance(stream, AudioStream):
            raise TypeError(f"{spec.codec} is not an audio codec")
        self._stream = stream
        self._stream.layout = "mono"
        if spec.bit_rate:
            self._stream.bit_rate = spec.bit_rate
        self._pts = 0

    def write(self, pcm: Pcm) -> bytes:
        if pcm.samples:
            frame = to_frame(pcm, self._pts)
            self._pts += pcm.samples
            self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    def close(self) -> bytes:
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return self._sink.take()


class StreamingEncoder:
    """Feed PCM chunk by chunk; get encoded bytes as they are ready; `flush()` at the end.

    Not thread-safe: use one encoder from one thread at a time (calls may move between
    threads). The resampler keeps state across chunks, so chunks join without seams.
    """

    def __init__(self, fmt: ResponseFormat) -> None:
        self.format = fmt
        self.content_type = CONTENT_TYPES[fmt]
        self.rate = output_rate(fmt)
        self._resampler = Resampler(self.rate)
        self._input_rate: int | None = None
        spec = CODECS.get(fmt)
        self._stage: _Stage = (
            _CodecStage(spec) if spec else _RawStage(wav_header(self.rate) if fmt == "wav" else b"")
        )
        self._flushed = False

    def feed(self, pcm: Pcm) -> bytes:
        if self._flushed:
            raise RuntimeError("encoder already flushed")
        if not pcm.samples:
            return b""
        if self._input_rate is None:
            self._input_rate = pcm.rate
        elif pcm.rate != self._input_rate:  # the resampler is configured by its first frame
            pcm = resample(pcm, self._input_rate)
        frames = self._resampler.frames(to_frame(pcm))
        return self._stage.write(Pcm(b"".join(frame_bytes(f) for f in frames), self.rate))

    def flush(self) -> bytes:
        if self._flushed:
            return b""
        self._flushed = True
        tail = b""
        if self._input_rate is not None:
            frames = self._resampler.frames(None)
            tail = self._stage.write(Pcm(b"".join(frame_bytes(f) for f in frames), self.rate))
        return tail + self._stage.close()


def encode(pcm: Pcm, fmt: ResponseFormat) -> bytes:
    """One-shot: the whole of `pcm` in `fmt`."""
    encoder = StreamingEncoder(fmt)
    return encoder.feed(pcm) + encoder.flush()

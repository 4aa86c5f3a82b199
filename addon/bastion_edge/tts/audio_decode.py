"""Riva's reply bytes -> `Pcm`.

Public Riva clients disagree on whether LINEAR_PCM replies carry a RIFF/WAV header, and
some engines write WAV headers with placeholder sizes (0 or 0xFFFFFFFF, as when
streaming). So: sniff the container; parse WAV headers here, trusting only the `fmt `
chunk and taking everything after the `data` chunk header as samples when its size is
a placeholder; decode Ogg/Opus and FLAC with PyAV; anything else is raw s16le mono at
the rate that was asked for.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import av
import av.error
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame

from bastion_edge.tts.audio import SAMPLE_BYTES, Pcm, Resampler

Container = Literal["wav", "ogg", "flac", "raw"]

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_FLOAT = 3
_WAVE_FORMAT_ALAW = 6
_WAVE_FORMAT_MULAW = 7
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)
_LAYOUTS = {1: "mono", 2: "stereo"}


class AudioDecodeError(ValueError):
    """The reply claims a container it is not (a truncated or corrupt file)."""


@dataclass(frozen=True, slots=True)
class WavFormat:
    audio_format: int
    channels: int
    rate: int
    bits: int

    @property
    def codec(self) -> str:
        fmt, bits = self.audio_format, self.bits
        if fmt == _WAVE_FORMAT_PCM and bits in (8, 16, 24, 32):
            return "pcm_u8" if bits == 8 else f"pcm_s{bits}le"
        if fmt == _WAVE_FORMAT_FLOAT and bits in (32, 64):
            return f"pcm_f{bits}le"
        if fmt == _WAVE_FORMAT_ALAW:
            return "pcm_alaw"
        if fmt == _WAVE_FORMAT_MULAW:
            return "pcm_mulaw"
        raise AudioDecodeError(f"unsupported WAV sample format {fmt} with {bits} bits")

    @property
    def block_align(self) -> int:
        return max(1, self.channels * max(8, self.bits) // 8)


def sniff(data: bytes) -> Container:
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    return "raw"


def decode_riva_audio(data: bytes, requested_rate: int) -> Pcm:
    """Mono s16 PCM at the reply's own rate (raw replies: `requested_rate`)."""
    kind = sniff(data)
    if kind == "wav":
        wav_format, payload = parse_wav(data)
        return decode_wav_payload(wav_format, payload)
    if kind in ("ogg", "flac"):
        return decode_container(data)
    usable = len(data) - len(data) % SAMPLE_BYTES
    return Pcm(data[:usable], requested_rate)


def parse_wav(data: bytes) -> tuple[WavFormat, bytes]:
    """The `fmt ` chunk and the sample bytes, tolerating placeholder sizes."""
    offset = 12
    wav_format: WavFormat | None = None
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body = offset + 8
        if chunk_id == b"data":
            if wav_format is None:
                raise AudioDecodeError("WAV data chunk before its fmt chunk")
            end = len(data) if size in _PLACEHOLDER_SIZES else min(body + size, len(data))
            return wav_format, data[body:end]
        if chunk_id == b"fmt ":
            wav_format = _parse_fmt(data[body : body + size])
        offset = body + size + (size & 1)
    if wav_format is None:
        raise AudioDecodeError("WAV without a fmt chunk")
    return wav_format, b""


def _parse_fmt(chunk: bytes) -> WavFormat:
    if len(chunk) < 16:
        raise AudioDecodeError("WAV fmt chunk too short")
    audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
    if audio_format == _WAVE_FORMAT_EXTENSIBLE and len(chunk) >= 26:
        (audio_format,) = struct.unpack_from("<H", chunk, 24)  # the SubFormat GUID's head
    if channels < 1 or rate < 1:
        raise AudioDecodeError(f"WAV fmt chunk with {channels} channels at {rate} Hz")
    return WavFormat(audio_format, channels, rate, bits)


def decode_wav_payload(wav_format: WavFormat, payload: bytes) -> Pcm:
    usable = len(payload) - len(payload) % wav_format.block_align
    payload = payload[:usable]
    if wav_format.codec == "pcm_s16le" and wav_format.channels == 1:
        return Pcm(payload, wav_format.rate)
    if not payload:
        return Pcm(b"", wav_format.rate)
    try:
        context = av.CodecContext.create(wav_format.codec, "r")
        if not isinstance(context, AudioCodecContext):
            raise AudioDecodeError(f"{wav_format.codec} is not an audio codec")
        context.sample_rate = wav_format.rate
        context.layout = _LAYOUTS.get(wav_format.channels, f"{wav_format.channels}c")
        frames = [*context.decode(av.Packet(payload)), *context.decode(None)]
        return Resampler(wav_format.rate).pcm([*_audio(frames), None])
    except av.error.FFmpegError as e:
        raise AudioDecodeError(f"undecodable WAV samples: {e}") from e


def decode_container(data: bytes) -> Pcm:
    """Ogg/Opus, FLAC (or anything FFmpeg reads) -> mono s16 at the stream's rate."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("no audio stream in the reply")
            stream = container.streams.audio[0]
            resampler = Resampler(stream.codec_context.sample_rate or 48000)
            return resampler.pcm([*_audio(list(container.decode(stream))), None])
    except av.error.FFmpegError as e:
        raise AudioDecodeError(f"undecodable audio: {e}") from e


def _audio(frames: Sequence[object]) -> list[AudioFrame | None]:
    return [f for f in frames if isinstance(f, AudioFrame)]

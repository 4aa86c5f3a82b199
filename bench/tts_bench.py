"""TTS transcoding throughput, in multiples of real time (higher is faster).

`transcode_speed()` pushes `seconds` of Riva-like audio (22.05 kHz s16 WAV, in ~16 s
chunks as the adapter receives them) through the adapter's own per-chunk path
(decode, edge fades, optional atempo, streaming encode) for each response format, and
reports audio seconds / wall seconds. Extra keys: `atempo_1.6` (mp3 at speed 4.0 on an
SSML voice: the part beyond Riva's 250%) and `atempo_0.25` (mp3 at 0.25 on a voice
without SSML: the worst case).
"""

from __future__ import annotations

import array
import math
import struct
import sys
import time

from bastion_edge.tts.speech_request import RESPONSE_FORMATS, ResponseFormat
from bastion_edge.tts.transcoder import ChunkTranscoder

RIVA_RATE = 22050
CHUNK_SECONDS = 16.0


def _speech_like_wav(seconds: float, rate: int = RIVA_RATE) -> bytes:
    """A WAV of a pitch-gliding, amplitude-modulated tone: harder to encode than a sine."""
    n = int(seconds * rate)
    samples = array.array("h", (
        int(9000 * (0.6 + 0.4 * math.sin(2 * math.pi * 3 * i / rate))
            * math.sin(2 * math.pi * (180 + 60 * math.sin(2 * math.pi * 0.5 * i / rate))
                       * i / rate))
        for i in range(n)))
    if sys.byteorder == "big":
        samples.byteswap()
    pcm = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm)


def _run(fmt: ResponseFormat, atempo: float, chunks: list[bytes], seconds: float) -> float:
    transcoder = ChunkTranscoder(fmt, atempo, RIVA_RATE)
    started = time.perf_counter()
    for chunk in chunks:
        transcoder.transcode(chunk)
    transcoder.finish()
    return seconds / (time.perf_counter() - started)


def transcode_speed(seconds: float = 60.0) -> dict[str, float]:
    count = max(1, math.ceil(seconds / CHUNK_SECONDS))
    chunk = _speech_like_wav(seconds / count)
    chunks = [chunk] * count
    results: dict[str, float] = {fmt: _run(fmt, 1.0, chunks, seconds)
                                 for fmt in RESPONSE_FORMATS}
    results["atempo_1.6"] = _run("mp3", 1.6, chunks, seconds)
    results["atempo_0.25"] = _run("mp3", 0.25, chunks, seconds)
    return {name: round(speed, 1) for name, speed in results.items()}


if __name__ == "__main__":
    for name, speed in transcode_speed().items():
        print(f"{name:12s} {speed:8.1f}x real time")

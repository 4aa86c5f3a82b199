"""The sandbox voice: a tone whose pitch depends on the voice, one burst per word.

Each word gets a share of its run's time proportional to its length, sounds for 80% of
it at a loudness that depends on the word, then falls silent, so the audio is neither
silence nor a constant tone. Output is s16le mono; `wav_header` frames it.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from functools import lru_cache

from bastion_sandbox.ssml import Utterance

_LEVELS = (0.30, 0.45, 0.60, 0.75)
_VOICED = 0.8
WAV_HEADER_BYTES = 44
PLACEHOLDER_SIZE = 0xFFFFFFFF


@lru_cache(maxsize=64)
def _tone_second(frequency: int, sample_rate: int, level: float) -> bytes:
    """One second of a sine at an integer frequency: whole cycles, so it repeats cleanly."""
    step = 2 * math.pi * frequency / sample_rate
    peak = level * 32767
    samples = array("h", (int(peak * math.sin(step * n)) for n in range(sample_rate)))
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def _tone(frequency: int, sample_rate: int, level: float, count: int) -> bytes:
    second = _tone_second(frequency, sample_rate, level)
    if count <= sample_rate:
        return second[: 2 * count]
    return (second * (count // sample_rate + 1))[: 2 * count]


def synthesize(utterance: Utterance, frequency: int, sample_rate: int) -> bytes:
    """s16le mono PCM lasting `utterance.seconds` (to the nearest sample)."""
    out = bytearray()
    elapsed = 0.0
    written = 0
    for segment in utterance.segments:
        words = segment.text.split(" ") if segment.text else []
        speech = segment.seconds - segment.pause_seconds
        weights = [len(word) + 1 for word in words]
        total = sum(weights) or 1
        done = 0
        for word, weight in zip(words, weights, strict=True):
            done += weight
            end = round((elapsed + speech * done / total) * sample_rate)
            count = max(0, end - written)
            voiced = int(count * _VOICED)
            level = _LEVELS[len(word) % len(_LEVELS)]
            out += _tone(frequency, sample_rate, level, voiced)
            out += bytes(2 * (count - voiced))
            written += count
        elapsed += segment.seconds
        end = round(elapsed * sample_rate)
        if end > written:
            out += bytes(2 * (end - written))
            written = end
    return bytes(out)


def wav_header(pcm_bytes: int, sample_rate: int, placeholder_sizes: bool = False) -> bytes:
    """A 44-byte RIFF/WAVE header for s16le mono. With `placeholder_sizes` the RIFF size
    is 0xFFFFFFFF and the data size 0, as engines that stream before knowing the length
    write them."""
    riff_size = PLACEHOLDER_SIZE if placeholder_sizes else 36 + pcm_bytes
    data_size = 0 if placeholder_sizes else pcm_bytes
    return (
        struct.pack("<4sI4s", b"RIFF", riff_size, b"WAVE")
        + struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + struct.pack("<4sI", b"data", data_size)
    )

"""Mono 16-bit PCM and the PyAV operations on it: frames, resampling, time-stretching.

All audio between Riva's reply and the encoder is `Pcm`: signed 16-bit little-endian
mono samples at a known rate. These functions are CPU-bound; the adapter runs them off
the event loop.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import av.filter
from av.audio.frame import AudioFrame

SAMPLE_BYTES = 2
# FFmpeg's atempo is cleanest within 0.5..2.0 per stage; larger factors chain stages.
ATEMPO_STAGE_MIN = 0.5
ATEMPO_STAGE_MAX = 2.0
# Fade at chunk edges so joined chunks never click (a step at a boundary is audible).
EDGE_FADE_SECONDS = 0.004


@dataclass(frozen=True, slots=True)
class Pcm:
    """s16le mono samples."""

    data: bytes
    rate: int

    @property
    def samples(self) -> int:
        return len(self.data) // SAMPLE_BYTES

    @property
    def seconds(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    @staticmethod
    def join(parts: list[Pcm]) -> Pcm:
        """Concatenate, resampling every part to the first part's rate."""
        if not parts:
            raise ValueError("nothing to join")
        rate = parts[0].rate
        return Pcm(b"".join(resample(p, rate).data for p in parts), rate)


def to_frame(pcm: Pcm, pts: int | None = None) -> AudioFrame:
    frame = AudioFrame(format="s16", layout="mono", samples=pcm.samples)
    if pcm.samples:
        frame.planes[0].update(pcm.data[: pcm.samples * SAMPLE_BYTES])
    frame.sample_rate = pcm.rate
    frame.time_base = Fraction(1, pcm.rate)
    frame.pts = pts
    return frame


def frame_bytes(frame: AudioFrame) -> bytes:
    """The samples of an s16 mono frame (planes may carry padding)."""
    return bytes(frame.planes[0])[: frame.samples * SAMPLE_BYTES]


def frames_to_pcm(frames: list[AudioFrame], rate: int) -> Pcm:
    return Pcm(b"".join(frame_bytes(f) for f in frames), rate)


class Resampler:
    """Any frame in, s16 mono at `rate` out; stateful, so consecutive calls join cleanly."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def frames(self, frame: AudioFrame | None) -> list[AudioFrame]:
        return self._resampler.resample(frame)

    def pcm(self, frames: list[AudioFrame | None]) -> Pcm:
        out: list[AudioFrame] = []
        for frame in frames:
            out.extend(self.frames(frame))
        return frames_to_pcm(out, self.rate)


def resample(pcm: Pcm, rate: int) -> Pcm:
    if not pcm.samples:
        return Pcm(b"", rate)
    if pcm.rate == rate:
        return pcm
    return Resampler(rate).pcm([to_frame(pcm, 0), None])


def atempo_stages(factor: float) -> list[float]:
    """Split a tempo factor into stages each within 0.5..2.0 (their product is `factor`)."""
    if factor <= 0:
        raise ValueError(f"tempo factor must be positive, got {factor}")
    stages: list[float] = []
    while factor > ATEMPO_STAGE_MAX:
        stages.append(ATEMPO_STAGE_MAX)
        factor /= ATEMPO_STAGE_MAX
    while factor < ATEMPO_STAGE_MIN:
        stages.append(ATEMPO_STAGE_MIN)
        factor /= ATEMPO_STAGE_MIN
    stages.append(factor)
    return stages


def time_stretch(pcm: Pcm, factor: float) -> Pcm:
    """Play `factor` times faster (0.5: twice as long), pitch preserved, via atempo."""
    if factor == 1.0 or not pcm.samples:
        return pcm
    graph = av.filter.Graph()
    nodes = [graph.add_abuffer(sample_rate=pcm.rate, format="s16", layout="mono",
                               time_base=Fraction(1, pcm.rate))]
    nodes += [graph.add("atempo", f"{stage:.6f}") for stage in atempo_stages(factor)]
    nodes.append(graph.add("aformat", "sample_fmts=s16:channel_layouts=mono"))
    nodes.append(graph.add("abuffersink"))
    graph.link_nodes(*nodes).configure()
    graph.push(to_frame(pcm, 0))
    graph.push(None)
    frames: list[AudioFrame] = []
    while True:
        try:
            frame = graph.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            break
        if isinstance(frame, AudioFrame):
            frames.append(frame)
    return frames_to_pcm(frames, pcm.rate)


def fade_edges(pcm: Pcm, seconds: float = EDGE_FADE_SECONDS) -> Pcm:
    """Short linear fade-in and fade-out, so chunks joined end to start never click."""
    n = min(int(pcm.rate * seconds), pcm.samples // 2)
    if n <= 0:
        return pcm
    samples = array.array("h")
    samples.frombytes(pcm.data[: pcm.samples * SAMPLE_BYTES])
    if sys.byteorder == "big":
        samples.byteswap()
    last = len(samples) - 1
    for i in range(n):
        gain = i / n
        samples[i] = int(samples[i] * gain)
        samples[last - i] = int(samples[last - i] * gain)
    if sys.byteorder == "big":
        samples.byteswap()
    return Pcm(samples.tobytes(), pcm.rate)

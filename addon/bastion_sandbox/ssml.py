"""What the sandbox's Riva voice will say, and for how long.

Plain text, or SSML with a `<speak>` root: `<prosody rate="N%">` (or x-slow..x-fast)
sets the speaking rate of the text inside it, `<break time="500ms"/>` adds a pause,
other tags just contain text. Speech lasts `characters / (CHARS_PER_SECOND * rate)`
per run of text, where characters are counted after collapsing whitespace. A rate
outside 25%-250% is not an error: Riva then returns no audio (`rate_out_of_range`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

RATE_MIN_PERCENT, RATE_MAX_PERCENT = 25, 250  # the contract: outside, Riva returns no audio
CHARS_PER_SECOND = 15.0  # at 100% rate
_RATE_WORDS = {
    "x-slow": 50.0,
    "slow": 75.0,
    "medium": 100.0,
    "default": 100.0,
    "fast": 150.0,
    "x-fast": 200.0,
}
_BREAK_STRENGTHS = {
    "none": 0.0,
    "x-weak": 0.1,
    "weak": 0.25,
    "medium": 0.5,
    "strong": 0.75,
    "x-strong": 1.0,
}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


class SpeechTextError(ValueError):
    """Text Riva would refuse (malformed SSML, an unreadable attribute, nothing to say)."""


@dataclass(frozen=True, slots=True)
class Segment:
    text: str = ""  # whitespace collapsed
    rate_percent: float = 100.0
    pause_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        speech = len(self.text) / (CHARS_PER_SECOND * self.rate_percent / 100.0)
        return speech + self.pause_seconds


@dataclass(frozen=True, slots=True)
class Utterance:
    segments: tuple[Segment, ...]
    rate_out_of_range: bool = False

    @property
    def seconds(self) -> float:
        return sum(segment.seconds for segment in self.segments)


def is_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")


def parse_utterance(text: str) -> Utterance:
    if not is_ssml(text):
        utterance = Utterance((Segment(" ".join(text.split())),))
    else:
        try:
            root = ET.fromstring(text.strip())
        except ET.ParseError as exc:
            raise SpeechTextError(f"invalid SSML: {exc}") from None
        if _local(root.tag) != "speak":
            raise SpeechTextError("SSML must have a <speak> root element")
        collector = _Collector()
        collector.walk(root, 100.0)
        utterance = Utterance(tuple(collector.segments), collector.out_of_range)
    if not any(s.text for s in utterance.segments):
        raise SpeechTextError("text is empty: there is nothing to synthesize")
    return utterance


def speech_seconds(text: str) -> float:
    """How long the sandbox's audio for `text` lasts (0 when Riva would return none)."""
    utterance = parse_utterance(text)
    return 0.0 if utterance.rate_out_of_range else utterance.seconds


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


class _Collector:
    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.out_of_range = False

    def add_text(self, text: str | None, rate: float) -> None:
        collapsed = " ".join((text or "").split())
        if collapsed:
            self.segments.append(Segment(collapsed, rate))

    def walk(self, element: ET.Element, rate: float) -> None:
        tag = _local(element.tag)
        if tag == "prosody" and element.get("rate") is not None:
            rate = self.parse_rate(element.get("rate", ""))
        elif tag == "break":
            self.segments.append(Segment(pause_seconds=_break_seconds(element)))
        self.add_text(element.text, rate)
        for child in element:
            self.walk(child, rate)
            self.add_text(child.tail, rate)

    def parse_rate(self, value: str) -> float:
        match = _PERCENT.match(value)
        if match:
            rate = float(match.group(1))
        elif value.strip() in _RATE_WORDS:
            rate = _RATE_WORDS[value.strip()]
        else:
            raise SpeechTextError(f"invalid prosody rate {value!r}")
        if not RATE_MIN_PERCENT <= rate <= RATE_MAX_PERCENT:
            self.out_of_range = True
        return rate if rate > 0 else 100.0


def _break_seconds(element: ET.Element) -> float:
    time = element.get("time")
    if time is not None:
        match = _DURATION.match(time)
        if not match:
            raise SpeechTextError(f"invalid break time {time!r}")
        value = float(match.group(1))
        return value / 1000 if match.group(2) == "ms" else value
    strength = element.get("strength", "medium")
    if strength not in _BREAK_STRENGTHS:
        raise SpeechTextError(f"invalid break strength {strength!r}")
    return _BREAK_STRENGTHS[strength]

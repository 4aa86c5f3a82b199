"""SSML for Riva, and how a requested speed splits between SSML prosody and time-stretching.

Riva's `<prosody rate>` only accepts 25%..250% (outside it returns no audio) and some
voices take no SSML at all; the rest of the speed change is done afterwards by FFmpeg's
`atempo` (pitch preserved).
"""

from __future__ import annotations

from typing import NamedTuple
from xml.sax.saxutils import escape

from bastion_edge.tts.riva_contract import SSML_RATE_MAX_PERCENT, SSML_RATE_MIN_PERCENT

# A stretch this close to 1 is inaudible; skip the filter.
ATEMPO_TOLERANCE = 0.005


class SpeedPlan(NamedTuple):
    ssml_rate_percent: int | None  # None: plain text, Riva's natural rate
    atempo: float  # 1.0: no time-stretching


def plan_speed(speed: float, ssml_supported: bool) -> SpeedPlan:
    if abs(speed - 1.0) < 1e-9:
        return SpeedPlan(None, 1.0)
    if not ssml_supported:
        return SpeedPlan(None, speed)
    rate = min(max(round(speed * 100), SSML_RATE_MIN_PERCENT), SSML_RATE_MAX_PERCENT)
    remainder = speed * 100 / rate
    return SpeedPlan(rate, 1.0 if abs(remainder - 1.0) < ATEMPO_TOLERANCE else remainder)


def to_ssml(text: str, rate_percent: int | None) -> str:
    """`text` XML-escaped inside `<speak>`, in a `<prosody rate>` when a rate is given."""
    body = escape(text, {'"': "&quot;", "'": "&apos;"})
    if rate_percent is not None:
        body = f'<prosody rate="{rate_percent}%">{body}</prosody>'
    return f"<speak>{body}</speak>"


def riva_text(text: str, rate_percent: int | None, ssml_supported: bool) -> str:
    """What to send Riva as `text` for one chunk.

    Plain text at the natural rate, except that text which itself looks like markup is
    escaped into SSML (for voices that parse SSML), so `<speak>` typed by a user is read
    out rather than interpreted, as OpenAI would.
    """
    if not ssml_supported:
        return text
    if rate_percent is None and not text.lstrip().startswith("<"):
        return text
    return to_ssml(text, rate_percent)

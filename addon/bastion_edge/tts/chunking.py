"""Split text into chunks short enough for one Riva request each.

Riva caps one offline request at `MAX_AUDIO_SECONDS_PER_REQUEST` of audio. The audio
length is estimated from the character count at the SSML rate Riva will speak at, and
chunks are kept under a fraction of the cap. Text is cut at sentence ends first, then
at clause marks, then between words; only a single "word" longer than a chunk (a URL,
a hash) is cut inside. Chunks are slices of the input: joined with the whitespace
between them they give back the input.
"""

from __future__ import annotations

import itertools
import re

from bastion_edge.tts.riva_contract import MAX_AUDIO_SECONDS_PER_REQUEST

# Speech runs at roughly 15 characters a second at Riva's natural (100%) rate.
CHARS_PER_SECOND_AT_NATURAL_RATE = 15.0
# Aim below the cap: the estimate is rough and the cap is hard.
CHUNK_BUDGET_FRACTION = 0.8

# Closing quotes/brackets may follow the end mark: " ' ) ] and their typographic forms.
_CLOSERS = "\"')\\]\u2019\u201d\u300d\u300f\uff09"
# Full stops, also CJK ones (no space follows those), and line breaks.
_SENTENCE_END = re.compile(
    rf"[.!?\u2026]+[{_CLOSERS}]*(?=\s)|[\u3002\uff01\uff1f]+[{_CLOSERS}]*|\n\s*\n|\n")
# Commas, semicolons, colons, spaced dashes (en/em), and CJK commas/colons.
_CLAUSE_END = re.compile(r"[,;:]+(?=\s)|\s[-\u2013\u2014]+(?=\s)|[\u3001\uff0c\uff1b\uff1a]")
_WORD_GAP = re.compile(r"\s+")
_LEVELS = (_SENTENCE_END, _CLAUSE_END, _WORD_GAP)

Span = tuple[int, int]


def estimated_seconds(text: str, rate_percent: int | None) -> float:
    rate = (rate_percent or 100) / 100
    return len(text) / (CHARS_PER_SECOND_AT_NATURAL_RATE * rate)


def max_chunk_chars(rate_percent: int | None) -> int:
    rate = (rate_percent or 100) / 100
    budget = MAX_AUDIO_SECONDS_PER_REQUEST * CHUNK_BUDGET_FRACTION
    return max(1, int(budget * CHARS_PER_SECOND_AT_NATURAL_RATE * rate))


def chunk_text(text: str, max_chars: int) -> list[str]:
    pieces = _pieces(text, _strip(text, (0, len(text))), max_chars, 0)
    return [text[start:end] for start, end in _pack(pieces, max_chars)]


def _pieces(text: str, span: Span | None, max_chars: int, level: int) -> list[Span]:
    """Spans no longer than `max_chars`, cut at the coarsest boundaries that suffice."""
    if span is None:
        return []
    start, end = span
    if end - start <= max_chars:
        return [span]
    if level == len(_LEVELS):
        return [(i, min(i + max_chars, end)) for i in range(start, end, max_chars)]
    cuts = [m.end() for m in _LEVELS[level].finditer(text, start, end) if m.end() < end]
    bounds = [start, *cuts, end]
    out: list[Span] = []
    for a, b in itertools.pairwise(bounds):
        out.extend(_pieces(text, _strip(text, (a, b)), max_chars, level + 1))
    return out


def _strip(text: str, span: Span) -> Span | None:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _pack(pieces: list[Span], max_chars: int) -> list[Span]:
    """Greedily merge neighbouring pieces while the merged slice still fits."""
    packed: list[Span] = []
    for start, end in pieces:
        if packed and end - packed[-1][0] <= max_chars:
            packed[-1] = (packed[-1][0], end)
        else:
            packed.append((start, end))
    return packed

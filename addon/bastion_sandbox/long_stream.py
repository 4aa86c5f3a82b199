"""Long streams on demand: `x-sandbox-stream-events: N` makes a streamed chat reply
carry exactly N content deltas (the reply text repeated as needed), so benchmarks and
rehearsals can hold many long-lived streams. Pace them with `x-sandbox-token-delay-ms`.
"""

from __future__ import annotations

from aiohttp import web

from bastion_sandbox.errors import invalid_request

STREAM_EVENTS_HEADER = "x-sandbox-stream-events"
MAX_STREAM_EVENTS = 100_000


def wanted_events(value: str | None) -> int | None:
    """The header's event count; None when absent. ValueError names what is wrong."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_STREAM_EVENTS:
        raise ValueError(f"{STREAM_EVENTS_HEADER}: 1..{MAX_STREAM_EVENTS}, got {value!r}")
    return int(text)


def stretch(pieces: list[str], count: int) -> list[str]:
    """`count` pieces: the given ones cycled (or cut)."""
    return [pieces[i % len(pieces)] for i in range(count)]


def long_stream_pieces(request: web.Request, pieces: list[str]) -> list[str]:
    try:
        count = wanted_events(request.headers.get(STREAM_EVENTS_HEADER))
    except ValueError as e:
        raise invalid_request(str(e), "invalid_value", STREAM_EVENTS_HEADER) from e
    return pieces if count is None else stretch(pieces or [""], count)

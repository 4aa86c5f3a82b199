"""Small helpers that read and edit mitmproxy flows for the hooks.

They are the only code besides `hooks.py` that touches flow objects, so the hook
methods stay short and the mitmproxy-specific details live in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mitmproxy import http

from .exchange import METADATA_KEY, Exchange
from .reply_model import restore_model


class ByteCounter:
    """A pass-through `response.stream` that counts bytes for the access log."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def __call__(self, chunk: bytes) -> bytes:
        self._exchange.bytes_out += len(chunk)
        return chunk


# Bodies up to this size are buffered (as mitmproxy does by default: cheapest per
# request); larger or unknown-length ones stream through.
BUFFER_RESPONSES_UP_TO = 1024 * 1024


def worth_streaming(response: http.Response) -> bool:
    length = response.headers.get("content-length", "")
    return not length.isdigit() or int(length) > BUFFER_RESPONSES_UP_TO


def point_at(request: http.Request, scheme: str, host: str, port: int, host_header: str) -> None:
    """Set the destination and the Host header once (the public setters of scheme, host
    and port each rewrite the Host header: measurable on the per-request path)."""
    request.data.scheme = scheme.encode()
    request.data.host = host
    request.data.port = port
    request.host_header = host_header


def lower_headers(request: http.Request) -> dict[str, str]:
    """All request headers, names lower-cased, in one pass over the raw fields."""
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers.fields}


def exchange_of(flow: http.HTTPFlow) -> Exchange | None:
    found = flow.metadata.get(METADATA_KEY)
    return found if isinstance(found, Exchange) else None


def requested_model(flow: http.HTTPFlow) -> str | None:
    """The `model` the app asked for, for the log of a refused request (error path only)."""
    try:
        body = json.loads(flow.request.get_content() or b"")
    except ValueError:
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def restore_json_model(response: http.Response, original: str) -> None:
    try:
        body = json.loads(response.get_content() or b"")
    except ValueError:
        return
    if isinstance(body, dict) and restore_model(body, original):
        response.content = json.dumps(body, separators=(",", ":")).encode()


def annotate(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """What was changed, shown as the flow's comment and marker in mitmweb."""
    parts: Sequence[str] = exchange.rewrites
    summary = ", ".join(parts) or "observed"
    if exchange.original_model and exchange.upstream_model:
        summary += f"; model {exchange.original_model} -> {exchange.upstream_model}"
    if exchange.error:
        summary += f"; refused: {exchange.error.code}"
    if exchange.decision not in ("rewrite", "passthrough"):
        summary += f"; {exchange.decision} -> {exchange.destination}"
    summary += "".join(f"; {note}" for note in exchange.notes)
    flow.comment = f"bastion-edge: {summary}"
    flow.marked = ":arrows_counterclockwise:" if exchange.rewrites else ":eye:"

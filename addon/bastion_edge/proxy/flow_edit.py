"""Small helpers that read and edit mitmproxy flows for the hooks.

They are the only code besides `hooks.py` that touches flow objects, so the hook
methods stay short and the mitmproxy-specific details live in one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mitmproxy import http

from bastion_edge.core.limits import header_value
from bastion_edge.core.reply_model import restore_model
from bastion_edge.core.usage import Usage, usage_in_json, usage_of
from bastion_edge.proxy.exchange import METADATA_KEY, Exchange


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


def worth_streaming(headers: Mapping[str, str]) -> bool:
    """For a response's lower-cased headers: stream it rather than buffer it?"""
    length = headers.get("content-length", "")
    return not length.isdigit() or int(length) > BUFFER_RESPONSES_UP_TO


# Header access on the per-request path goes through one pass over the raw fields:
# each of mitmproxy's `headers[name]` gets and sets scans and lower-cases every field,
# and a dozen of them per request were a measurable share of the proxy's CPU time.

def lower_headers(message: http.Message) -> dict[str, str]:
    """All headers, names lower-cased (the last value wins), in one pass. Values are
    decoded as mitmproxy decodes them, so `set_headers` writes back the same bytes."""
    return {name.decode("latin-1").lower(): value.decode("utf-8", "surrogateescape")
            for name, value in message.headers.fields}


def set_headers(
    headers: http.Headers, put: Mapping[str, str], drop: Iterable[str] = ()
) -> None:
    """Set each header of `put` (in the place of its first occurrence, like
    `headers[name] = value`) and remove the `drop` names, in one pass."""
    pending = {name.lower().encode(): _header_bytes(value) for name, value in put.items()}
    removed = {name.lower().encode() for name in drop} | pending.keys()
    fields = []
    for name, value in headers.fields:
        low = name.lower()
        if low in pending:
            fields.append((name, pending.pop(low)))
        elif low not in removed:
            fields.append((name, value))
    fields.extend(pending.items())
    headers.fields = tuple(fields)


def _header_bytes(value: str) -> bytes:
    # Every value the proxy puts into a header: control characters percent-encoded (an
    # app-chosen model id must never start a header line), then as mitmproxy encodes.
    return header_value(value).encode("utf-8", "surrogateescape")


def point_at(
    request: http.Request, scheme: str, host: str, port: int, host_header: str,
    put: Mapping[str, str] | None = None, drop: Iterable[str] = (),
) -> None:
    """Set the destination, the Host header and the other header edits at once (the
    public setters of scheme, host and port each rewrite the Host header)."""
    request.data.scheme = scheme.encode()
    request.data.host = host
    request.data.port = port
    edits = dict(put or {})
    if request.is_http2 or request.is_http3:
        request.host_header = host_header  # :authority, and Host only if present
    else:
        edits["host"] = host_header
    set_headers(request.headers, edits, drop)


def replace_body(message: http.Message, body: bytes, headers: Mapping[str, str]) -> None:
    """`message.content = body` given its lower-cased headers, with one header pass when
    the body is not content-encoded (mitmproxy's setter looks headers up three times)."""
    if "content-encoding" in headers:
        message.content = body  # encoded again as the header says
        return
    message.raw_content = body
    if "transfer-encoding" not in headers:
        set_headers(message.headers, {"content-length": str(len(body))})


_AUTHORITY = re.compile(r"(?P<host>[^:]+|\[.+\])(?::\d+)?")


def request_host(request: http.Request, headers: Mapping[str, str]) -> str:
    """`request.pretty_host` from already lower-cased headers: the Host header's host
    (HTTP/1), else the destination. Validity is not checked: only exact matches with
    the configured hosts count."""
    if request.is_http2 or request.is_http3:
        return request.pretty_host
    authority = headers.get("host")
    if not authority:
        return request.host
    found = _AUTHORITY.fullmatch(authority)
    if found is None:
        return authority
    return found["host"].removeprefix("[").removesuffix("]")


def exchange_of(flow: http.HTTPFlow) -> Exchange | None:
    found = flow.metadata.get(METADATA_KEY)
    return found if isinstance(found, Exchange) else None


class ReplyJson:
    """A buffered reply's JSON, parsed on first use and never again."""

    __slots__ = ("_parsed", "_response")

    _UNPARSED: object = object()

    def __init__(self, response: http.Response) -> None:
        self._response = response
        self._parsed: object = ReplyJson._UNPARSED

    def value(self) -> object:
        """The parsed JSON value; None when streamed or not JSON."""
        if self._parsed is ReplyJson._UNPARSED:
            self._parsed = None
            if not self._response.stream and self._response.raw_content is not None:
                try:
                    self._parsed = json.loads(self._response.get_content() or b"")
                except ValueError:
                    self._parsed = None
        return self._parsed

    @property
    def parsed(self) -> bool:
        """Whether the body was parsed already (then `value()` costs nothing)."""
        return self._parsed is not ReplyJson._UNPARSED

    def object(self) -> dict[str, Any] | None:
        value = self.value()
        return value if isinstance(value, dict) else None

    def restore_model(self, original: str) -> None:
        """Put the app's own model id back where the reply names the model."""
        body = self.object()
        if body is not None and restore_model(body, original):
            self._response.content = json.dumps(body, separators=(",", ":")).encode()


def buffered_usage(response: http.Response, reply: ReplyJson, encoded: bool) -> Usage | None:
    """The usage a buffered reply reports: from its parsed JSON when something parsed it
    already, else read from its bytes (without parsing the whole body). `encoded`: the
    reply has a content-encoding (as its headers said at `responseheaders`)."""
    if reply.parsed:
        return usage_of(reply.value())
    raw = response.raw_content
    if not raw:
        return None
    if encoded:
        raw = response.get_content() or b""
    return usage_in_json(raw)


def annotate(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """What was changed, shown as the flow's comment and marker in mitmweb."""
    parts: Sequence[str] = exchange.rewrites
    summary = ", ".join(parts) or "observed"
    if exchange.original_model and exchange.upstream_model:
        summary += f"; model {exchange.original_model} -> {exchange.upstream_model}"
    if exchange.plan.refusal is not None:
        summary += f"; refused: {exchange.plan.refusal.code} (answered by the proxy, nothing sent)"
    if exchange.plan.decision not in ("rewrite", "passthrough"):
        summary += f"; {exchange.decision} -> {exchange.destination}"
    summary += "".join(f"; {note}" for note in exchange.notes)
    if exchange.plan.refusal is None:
        summary += f"; {tokens_phrase(exchange.usage, exchange.tts_characters)}"
    flow.comment = f"bastion-edge: {summary}"
    flow.marked = flow_marker(exchange)


def flow_marker(exchange: Exchange) -> str:
    """mitmweb's marker: refused by the proxy, rewritten, or only observed."""
    if exchange.plan.refusal is not None:
        return ":no_entry:"
    return ":arrows_counterclockwise:" if exchange.rewrites else ":eye:"


def with_comment_column(columns: Sequence[str]) -> list[str] | None:
    """mitmweb's flow-list columns with the comment (our annotation) shown; None if it is."""
    return None if "comment" in columns else [*columns, "comment"]


def tokens_phrase(usage: Usage | None, tts_characters: int | None = None) -> str:
    """The tokens as the flow comment shows them: `tokens in 12 / out 5 (cached 0)`."""
    if tts_characters is not None:
        return f"tts {tts_characters} characters"
    if usage is None:
        return "tokens not reported"
    parts = [f"{label} {value}" for label, value in
             (("in", usage.input), ("out", usage.output)) if value is not None]
    extra = [f"{label} {value}" for label, value in
             (("cached", usage.cached_input), ("reasoning", usage.reasoning)) if value]
    return "tokens " + " / ".join(parts) + (f" ({', '.join(extra)})" if extra else "")

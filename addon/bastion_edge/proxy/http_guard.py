"""The places mitmproxy 12 itself must enforce a limit; kept here, small and alone.

What the guard does; `mitmproxy_seams.py` wires it into mitmproxy (checked, once).

- A buffered request body is checked against the flow's own limit on every chunk
  mitmproxy buffers (`HttpStream.check_body_size`): over it, the body is dropped and the
  client gets the 413 envelope, so at most limit + one chunk is ever held. The addon
  sets the limit per flow (`BODY_LIMIT_KEY`) for the bodies it buffers; mitmproxy's
  global `body_size_limit` would also kill large streamed uploads and replies.
- Every buffered request body (ours or not) reserves its bytes in one process-wide
  `BodyBudget` as they arrive (`limits.max_buffered_body_bytes_total`); a chunk that does
  not fit refuses the body with 503 and `retry-after`. `BodyBudgetRelease` (an addon)
  gives a flow's bytes back when it ends, and a client's when it disconnects.
- A chunked request with trailers makes mitmproxy's HTTP/1 reader raise
  NotImplementedError, which left the client without an answer and the flow unfinished.
  It now gets a 400 envelope and the flow ends through the `error` hook.
- An unfinished request head larger than limits.max_header_bytes gets a 431 envelope.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import flow as mflow
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import ErrorCode, ResponseProtocolError
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.core.body_budget import BodyBudget
from bastion_edge.core.limits import (
    LIMIT_HEADER_BYTES,
    LIMIT_TRAILERS,
    LimitError,
    bodies_over_budget,
    body_too_large,
)
from bastion_edge.proxy import gateway_errors

BODY_LIMIT_KEY = "bastion_edge.body_limit"  # flow.metadata: LimitsRules for a buffered body
LIMIT_ERROR_KEY = "bastion_edge.limit_error"  # flow.metadata: the LimitError that ended it
TRAILERS_ERROR = LimitError(
    LIMIT_TRAILERS, 400, "bastion-edge does not accept HTTP/1.1 request trailers; send the "
    "body without them.", "unsupported_trailers")
TRAILERS_MESSAGE = "bastion-edge: request trailers refused"
HEADERS_TOO_LARGE = LimitError(
    LIMIT_HEADER_BYTES, 431, "The request headers are larger than bastion-edge accepts "
    "(limits.max_header_bytes).", "request_header_fields_too_large")

REQUEST_LINE_SLACK = 8192  # the request line, on top of limits.max_header_bytes


def guard_headers(server: Any, limits: LimitsRules,
                  counted: Callable[[str], None]) -> Generator[Any, Any, None]:
    """After mitmproxy's `Http1Server.read_headers`: mitmproxy buffers an unfinished
    request head without bound ("FIXME: protect against header size DoS"); past the
    limit, answer 431 and drop the buffer."""
    cap = limits.max_header_bytes + REQUEST_LINE_SLACK
    if server.state == server.read_headers and len(server.buf) > cap:
        server.buf = type(server.buf)()
        counted(HEADERS_TOO_LARGE.limit)
        yield commands.SendData(server.conn, gateway_errors.render(HEADERS_TOO_LARGE))
        yield commands.CloseConnection(server.conn)
        server.state = server.done


BUDGET = BodyBudget()  # this process's buffered request bodies


def guard_body(stream: Any, request: bool, limits: LimitsRules) -> Generator[Any, Any, bool]:
    """Before mitmproxy's `HttpStream.check_body_size` (called on every buffered chunk):
    True when the flow's own limit or the process's body budget refused the buffered
    request body (mitmproxy's check is then skipped)."""
    if not request or stream.flow is None or not stream.request_body_buf:
        return False
    size = len(stream.request_body_buf)
    own = stream.flow.metadata.get(BODY_LIMIT_KEY)
    error = body_too_large(size, own) if isinstance(own, LimitsRules) else None
    if error is None and not BUDGET.reserve(
            holder_of(stream.flow), size, limits.max_buffered_body_bytes_total):
        error = bodies_over_budget(limits)
    if error is None:
        return False
    BUDGET.release(holder_of(stream.flow))
    return (yield from _refuse_body(stream, error))


def holder_of(flow: mflow.Flow) -> tuple[str, str]:
    return flow.client_conn.id, flow.id


class BodyBudgetRelease:
    """A flow's reserved body bytes go back to the budget when it ends (its body is
    held on the flow until then), a client's when it disconnects (whatever ended)."""

    def response(self, flow: mflow.Flow) -> None:
        BUDGET.release(holder_of(flow))

    def error(self, flow: mflow.Flow) -> None:
        BUDGET.release(holder_of(flow))

    def client_disconnected(self, client: Any) -> None:
        BUDGET.release_client(client.id)


def refuse_trailers(connection: Any) -> Generator[Any, Any, None]:
    """mitmproxy's HTTP/1 `read_body` raised NotImplementedError (request trailers)."""
    if isinstance(connection, _http1.Http1Server):
        yield commands.SendData(connection.conn, gateway_errors.render(TRAILERS_ERROR))
    yield commands.CloseConnection(connection.conn)
    connection.state = connection.done
    yield ReceiveHttp(connection.ReceiveProtocolError(
        connection.stream_id, TRAILERS_MESSAGE, code=ErrorCode.GENERIC_CLIENT_ERROR))


def _refuse_body(stream: Any, error: LimitError) -> Generator[Any, Any, bool]:
    """As mitmproxy's own body_size_limit kill, with the envelope and the buffer freed."""
    message = f"bastion-edge: {error.message}"
    stream.request_body_buf.clear()
    stream.flow.metadata[LIMIT_ERROR_KEY] = error
    stream.flow.error = mflow.Error(message)
    gateway_errors.register(message, error)
    yield HttpErrorHook(stream.flow)
    yield http_layer.SendHttp(
        ResponseProtocolError(
            stream.stream_id, message, ErrorCode.REQUEST_TOO_LARGE),
        stream.context.client)
    stream.client_state = stream.state_errored
    stream.flow.live = False
    return True


def limit_error_of(flow: mflow.Flow) -> LimitError | None:
    """The limit that ended this flow (body size, trailers), if one did."""
    found = flow.metadata.get(LIMIT_ERROR_KEY)
    if isinstance(found, LimitError):
        return found
    if flow.error is not None and flow.error.msg == TRAILERS_MESSAGE:
        return TRAILERS_ERROR
    return None


def never_empty(stream: Callable[[bytes], bytes]) -> Callable[[bytes], list[bytes]]:
    """A body stream callable whose empty output sends nothing.

    mitmproxy frames each returned chunk on a chunked HTTP/1 body as `len\\r\\ndata\\r\\n`,
    so a b"" mid-stream (a rewriter holding back a partial line or a delimiter prefix)
    goes out as `0\\r\\n\\r\\n`: the end of the body, truncating the upload or the reply.
    """

    def feed(chunk: bytes) -> list[bytes]:
        out = stream(chunk)
        return [out] if out else []

    return feed

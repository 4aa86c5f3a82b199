"""OpenAI envelopes for the gateway errors mitmproxy itself answers.

When the upstream cannot be reached, fails TLS, resets or times out, mitmproxy runs
the `error` hook and then writes its own HTML error page (the hook cannot replace
it: `flow.response` is ignored at that point). The addon's error hook classifies the
error with full knowledge of the flow and registers an envelope for that exact error
message object; mitmproxy's HTTP/1 error-page builder, wrapped here, consumes it.
Errors of flows that are not ours keep mitmproxy's page.

HTTP/2 clients (rare for API SDKs) still get mitmproxy's page; see docs/operate/known-limits.md.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from mitmproxy import http
from mitmproxy.net.http import http1

from bastion_edge.errors import ApiError, bad_gateway, gateway_timeout

_MAX_PENDING = 1024
# id(message) -> (message, error). Holding the message keeps its id from being reused.
_pending: OrderedDict[int, tuple[str, ApiError]] = OrderedDict()


def classify(
    message: str, *, where: str, timed_out: bool, timeout_seconds: float,
    connection_opened: bool, killed: bool,
) -> ApiError | None:
    """The envelope for an upstream failure; None when the client went away (no reply)."""
    if timed_out:
        return gateway_timeout(
            f"bastion-edge: {where} did not answer within {timeout_seconds:g} s.")
    if killed or "client disconnected" in message.lower():
        return None
    # mitmproxy never assigns a connection that failed to open to the flow.
    if not connection_opened:
        if any(word in message.lower() for word in ("tls", "ssl", "certificate")):
            return bad_gateway(f"bastion-edge: TLS with {where} failed: {message}",
                               "upstream_tls_error")
        return bad_gateway(f"bastion-edge: cannot reach {where}: {message}",
                           "upstream_unreachable")
    return bad_gateway(f"bastion-edge: connection to {where} failed: {message}",
                       "upstream_connection_error")


def register(message: str, error: ApiError) -> None:
    """Answer the gateway error carrying this very message object with `error`."""
    _pending[id(message)] = (message, error)
    while len(_pending) > _MAX_PENDING:
        _pending.popitem(last=False)


def render(error: ApiError) -> bytes:
    response = http.Response.make(
        error.status,
        json.dumps(error.envelope()).encode(),
        {"Content-Type": "application/json", "Connection": "close",
         "X-Bastion-Edge-Error": error.code, **dict(getattr(error, "headers", ()))},
    )
    return http1.assemble_response(response)


def take(message: str) -> bytes | None:
    """The envelope registered for this very message object (once), else None."""
    entry = _pending.pop(id(message), None)
    if entry is not None and entry[0] is message:
        return render(entry[1])
    return None

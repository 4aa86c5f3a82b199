"""Whose authority a request names: an absolute-form request line inside a tunnel.

Inside a TLS tunnel (or on a transparent listener) the destination is the tunnel's,
but an HTTP/1 request line may still be absolute-form (`POST https://evil.example/...`,
RFC 9112 §3.2.2), and a server routes such a line by ITS authority. mitmproxy keeps
that authority and writes it upstream. bastion-edge therefore decides:

- the request line names the tunnel's own host and port (any case, a trailing dot, the
  scheme's default port spelled or not): the request is sent in origin form;
- it names anything else: 400 `foreign_authority`, in OpenAI's error envelope, and
  the request goes nowhere (never Bastion's key next to a foreign authority).

Pure: no mitmproxy here (the hook is in proxy/gate.py).
"""

from __future__ import annotations

from bastion_edge.errors import INVALID_REQUEST, ApiError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_authority(authority: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of `host[:port]` or `[v6][:port]`, lower-case, no trailing dot; None
    if it is not an authority (userinfo, a bad port)."""
    if "@" in authority:
        return None
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (
            authority, "", "")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS.get(scheme.lower(), 443)
    host = host.lower().rstrip(".")
    return (host, port) if host else None


def foreign_authority(authority: str, scheme: str, host: str, port: int) -> bool:
    """Does an absolute-form request line name another place than the tunnel's?"""
    named = split_authority(authority, scheme)
    return named is None or named != (host.lower().rstrip(".").strip("[]"), port)


def foreign_authority_refused(authority: str) -> ApiError:
    shown = authority if len(authority) <= 200 else authority[:200] + "…"
    return ApiError(
        400,
        f"bastion-edge: the request line names {shown!r}, not the host this connection "
        "was opened to; send requests in origin form (`POST /v1/...`).",
        "foreign_authority", INVALID_REQUEST)

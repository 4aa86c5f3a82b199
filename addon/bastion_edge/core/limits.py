"""Pure checks of what a client sent against the proxy's limits (`limits:` in the rules).

Each returns the envelope to answer, or None when the input is acceptable:
  head_violation   header count / size / control bytes (431, 400)
  path_violation   dot segments, encoded separators, paths outside the API (400)
  body_too_large   a buffered body over `max_json_body_bytes` (413)
  bodies_over_budget  all buffered bodies over `max_buffered_body_bytes_total` (503)
and `header_value` makes any text safe to put into a response or request header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.errors import SERVER_ERROR, ApiError

# Which limit a rejection hit: the `limit` label of bastion_edge_limit_rejections_total.
LIMIT_BODY = "max_json_body_bytes"
LIMIT_HEADER_BYTES = "max_header_bytes"
LIMIT_HEADER_COUNT = "max_header_count"
LIMIT_HEADER_BYTES_INVALID = "header_characters"
LIMIT_PATH = "path"
LIMIT_CONNECTIONS = "max_client_connections"
LIMIT_HEADER_TIMEOUT = "header_timeout_seconds"
LIMIT_IDLE_TIMEOUT = "idle_timeout_seconds"
LIMIT_JSON = "json_structure"
LIMIT_TRAILERS = "trailers"
LIMIT_BUFFERED_TOTAL = "max_buffered_body_bytes_total"
LIMIT_NAMES = (LIMIT_BODY, LIMIT_HEADER_BYTES, LIMIT_HEADER_COUNT, LIMIT_HEADER_BYTES_INVALID,
               LIMIT_PATH, LIMIT_CONNECTIONS, LIMIT_HEADER_TIMEOUT, LIMIT_IDLE_TIMEOUT,
               LIMIT_JSON, LIMIT_TRAILERS, LIMIT_BUFFERED_TOTAL)

# A client refused for lack of body budget is told to retry after this long: bodies in
# flight are usually done within seconds (and the OpenAI SDKs retry a 503 by themselves).
BUDGET_RETRY_SECONDS = 1

# Nesting deeper than this is refused (400 invalid_json): the rewrite code and the
# encoder recurse, and no API request needs it (OpenAI's structured outputs allow 10).
MAX_JSON_DEPTH = 128

_BAD_HEADER_BYTES = re.compile(rb"[\x00\r\n]")
_UNSAFE_HEADER_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class LimitError(ApiError):
    """An envelope error that also names the limit it enforces (a metric label)."""

    def __init__(self, limit: str, status: int, message: str, code: str, *,
                 type: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if type is None:
            super().__init__(status, message, code)
        else:
            super().__init__(status, message, code, type)
        self.limit = limit
        self.headers = headers  # extra response headers (retry-after)


def header_value(text: str) -> str:
    """`text` made safe for a header: control characters (CR, LF, NUL...) percent-encoded,
    so an app-chosen model id can never start a new header line. Other text is kept
    (sent as UTF-8, as mitmproxy encodes header values)."""
    if not _UNSAFE_HEADER_TEXT.search(text):
        return text
    return _UNSAFE_HEADER_TEXT.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")),
        text)


def head_violation(fields: Iterable[tuple[bytes, bytes]], limits: LimitsRules) -> LimitError | None:
    """Too many header fields, too many header bytes (431), or NUL/CR/LF in one (400)."""
    count = size = 0
    for name, value in fields:
        count += 1
        size += len(name) + len(value) + 4  # "name: value\r\n"
        if _BAD_HEADER_BYTES.search(name) or _BAD_HEADER_BYTES.search(value):
            return LimitError(LIMIT_HEADER_BYTES_INVALID, 400,
                              "A request header holds a NUL, CR or LF byte.",
                              "invalid_header")
    if count > limits.max_header_count:
        return LimitError(LIMIT_HEADER_COUNT, 431,
                          f"The request has {count} header fields; bastion-edge accepts at "
                          f"most {limits.max_header_count}.", "request_header_fields_too_large")
    if size > limits.max_header_bytes:
        return LimitError(LIMIT_HEADER_BYTES, 431,
                          f"The request headers are {size} bytes; bastion-edge accepts at "
                          f"most {limits.max_header_bytes}.", "request_header_fields_too_large")
    return None


def path_violation(path: str, *, api_only: bool = True) -> LimitError | None:
    """A path that could leave the API once decoded or normalised upstream.

    Refused: anything not starting with `/v1/` (or exactly `/v1`), dot segments (`.`,
    `..`, also percent-encoded), encoded `/` or `\\`, backslashes, control characters.
    Only paths that pass get the Bastion key; see docs/operate/limits.md.
    """
    bare = path.split("?", 1)[0]
    if api_only and bare != "/v1" and not bare.startswith("/v1/"):
        return _bad_path(path, "only the OpenAI API paths under /v1/ are forwarded")
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in path):
        return _bad_path(path, "it holds a control character or a backslash")
    lowered = bare.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered:
        return _bad_path(path, "it holds an encoded '/', '\\' or NUL")
    for segment in bare.split("/"):
        if unquote(segment) in (".", ".."):
            return _bad_path(path, "it holds a '.' or '..' segment")
    return None


def _bad_path(path: str, why: str) -> LimitError:
    shown = header_value(path[:200])
    return LimitError(LIMIT_PATH, 400, f"bastion-edge refuses the path {shown!r}: {why}.",
                      "invalid_path")


def body_too_large(size: int, limits: LimitsRules) -> LimitError | None:
    if size <= limits.max_json_body_bytes:
        return None
    return LimitError(LIMIT_BODY, 413,
                      f"The request body is larger than bastion-edge's limit of "
                      f"{limits.max_json_body_bytes} bytes (limits.max_json_body_bytes).",
                      "request_too_large")


def bodies_over_budget(limits: LimitsRules) -> LimitError:
    """The buffered bodies of all clients together would pass the process's budget."""
    return LimitError(
        LIMIT_BUFFERED_TOTAL, 503,
        f"bastion-edge is holding as many request bodies as it may "
        f"({limits.max_buffered_body_bytes_total} bytes, "
        f"limits.max_buffered_body_bytes_total); retry shortly.",
        "server_overloaded", type=SERVER_ERROR,
        headers=(("retry-after", str(BUDGET_RETRY_SECONDS)),))


def json_structure_error(value: Any) -> LimitError | None:
    """Nesting deeper than MAX_JSON_DEPTH, or a string with a lone UTF-16 surrogate
    (`"\\ud800"`: valid JSON escape, but no Unicode text; it cannot be re-encoded)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return LimitError(LIMIT_JSON, 400, "The JSON request body holds a lone "
                                  "UTF-16 surrogate (such as \\ud800), which is not text.",
                                  "invalid_json")
            continue
        if isinstance(item, dict):
            children: Iterable[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return too_deep()
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, str | dict | list))
    return None


def too_deep() -> LimitError:
    return LimitError(LIMIT_JSON, 400, f"The JSON request body is nested deeper than "
                      f"{MAX_JSON_DEPTH} levels.", "invalid_json")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False

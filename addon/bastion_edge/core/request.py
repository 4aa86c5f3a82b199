"""What the planner is given: a request's head, and its body parsed at most once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from bastion_edge.core.limits import json_structure_error, too_deep
from bastion_edge.errors import ApiError, bad_request


class RequestHead(NamedTuple):
    """A request before its body: plain values taken from the flow once."""

    scheme: str  # as the app sent it: "http" is upgraded
    host: str  # as the app addressed it (Host header, else the destination)
    method: str
    path: str  # with the query string
    headers: Mapping[str, str]  # lower-case names; holds credentials: never in repr
    client: str | None = None  # the client's address
    http_version: str = "HTTP/1.1"
    app: str | None = None  # the app its proxy credentials named (clients.apps)
    header_fields: tuple[tuple[bytes, bytes], ...] = ()  # as received: limits checks

    def __repr__(self) -> str:
        return f"RequestHead({self.method} {self.scheme}://{self.host}{self.path})"

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.partition("?")[2]


class ParsedBody:
    """A request body whose JSON is parsed on first use and never again.

    `json_object()` raises the proxy's 400 envelope for what is not a JSON object; the
    object it returns is shared, so callers copy before they change it.
    """

    __slots__ = ("_error", "_parsed", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._parsed: dict[str, Any] | None = None
        self._error: ApiError | None = None

    def json_object(self) -> dict[str, Any]:
        if self._parsed is not None:
            return self._parsed
        if self._error is not None:
            raise self._error
        try:
            self._parsed = parse_json_object(self.raw)
        except ApiError as e:
            self._error = e
            raise
        return self._parsed

    def json_or_none(self) -> dict[str, Any] | None:
        try:
            return self.json_object()
        except ApiError:
            return None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else None
    except ValueError as e:
        raise bad_request(
            f"bastion-edge could not parse the JSON request body: {e}", "invalid_json"
        ) from e
    except RecursionError:  # nested deeper than the parser's stack
        raise too_deep() from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    error = json_structure_error(body)
    if error is not None:
        raise error
    return body


def requested_model_of(body: ParsedBody) -> str | None:
    """The `model` the app asked for, if its body says (for the log of a refusal)."""
    parsed = body.json_or_none()
    model = parsed.get("model") if parsed is not None else None
    return model if isinstance(model, str) else None

"""Streaming rewrite of Server-Sent Events, line by line, with no added latency.

Complete lines are emitted as soon as their newline arrives; only a partial
trailing line is held back. `data:` payloads that are JSON objects go through a
rewrite function; everything else (comments, `event:` lines, `[DONE]`) passes as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

JsonRewrite = Callable[[dict[str, Any]], bool]  # mutates in place, True if changed


class SseRewriter:
    """A `flow.response.stream` callable: bytes in, bytes out, `b""` flushes."""

    def __init__(self, rewrite: JsonRewrite) -> None:
        self._rewrite = rewrite
        self._partial = b""
        self.events_seen = 0

    def __call__(self, chunk: bytes) -> bytes:
        if chunk == b"":
            tail, self._partial = self._partial, b""
            return self._line(tail) if tail else b""
        data = self._partial + chunk if self._partial else chunk
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._partial = data
            return b""
        self._partial = data[last_newline + 1 :]
        complete = data[: last_newline + 1]
        if b"data:" not in complete:
            return complete
        return b"".join(self._line(line) for line in complete.splitlines(keepends=True))

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        self.events_seen += 1
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return line
        try:
            obj = json.loads(payload)
        except ValueError:
            return line
        if not isinstance(obj, dict) or not self._rewrite(obj):
            return line
        ending = line[len(line.rstrip(b"\r\n")) :]
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + ending

"""Server-Sent Events, incrementally: one line splitter and event assembler for every
consumer (the model-restoring rewriter, the Responses capture), with no added latency.

Lines end in CRLF, LF or a lone CR, as the WHATWG event-stream format says; an event is
its `data:` lines joined with LF, dispatched at a blank line. Complete lines are
released as soon as their terminator arrives; only a partial trailing line is held.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

JsonRewrite = Callable[[dict[str, Any]], bool]  # mutates in place, True if changed
# On an event's raw JSON: the bytes to send, or None to let the JsonRewrite decide.
BytesRewrite = Callable[[bytes], "bytes | None"]


class SseLines:
    """Splits a byte stream into complete lines (terminators kept), as they arrive."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines now available, as one block (b"" if none)."""
        data = self._partial + chunk if self._partial else chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if cut == len(data) and data.endswith(b"\r"):
            # A CR at the very end may be the first half of a CRLF: wait for the next byte.
            cut = max(data.rfind(b"\n", 0, cut - 1), data.rfind(b"\r", 0, cut - 1)) + 1
        self._partial = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """What is left at the end of the stream (a last line without terminator)."""
        tail, self._partial = self._partial, b""
        return tail


def line_body(line: bytes) -> bytes:
    """A line without its terminator."""
    return line.rstrip(b"\r\n")


def field_value(line: bytes, name: bytes) -> bytes | None:
    """The value of a `name:` line (one leading space removed), else None."""
    body = line_body(line)
    if not body.startswith(name) or body[len(name):len(name) + 1] != b":":
        return None
    value = body[len(name) + 1:]
    return value[1:] if value.startswith(b" ") else value


class SseEvents:
    """Assembles events from lines: `feed(lines)` returns the data of each event that a
    blank line completed; `finish()` dispatches a last event the stream did not end."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[bytes] = []

    def feed(self, block: bytes) -> list[bytes]:
        events = []
        for line in block.splitlines():
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif (value := field_value(line, b"data")) is not None:
                self._data.append(value)
        return events

    def finish(self) -> list[bytes]:
        if not self._data:
            return []
        event, self._data = b"\n".join(self._data), []
        return [event]


class SseRewriter:
    """A `flow.response.stream` callable: bytes in, bytes out, `b""` flushes.

    A `data:` line holding a JSON object goes through the rewrite function. An object
    spread over several `data:` lines is held until its event ends, then rewritten as
    one line; everything else (comments, `event:` lines, `[DONE]`) passes as it came.
    """

    def __init__(self, rewrite: JsonRewrite, fast: BytesRewrite | None = None) -> None:
        self._rewrite = rewrite
        self._fast = fast  # exact byte-level shortcut: no JSON parse, no re-serialising
        self._lines = SseLines()
        self._held: list[bytes] = []  # data lines of an object not yet complete
        self.events_seen = 0

    def __call__(self, chunk: bytes) -> bytes:
        if chunk == b"":
            tail = self._lines.flush()
            out = self._block(tail) if tail else b""
            return out + self._release_held()
        complete = self._lines.feed(chunk)
        if not complete or (b"data:" not in complete and not self._held):
            return complete
        return self._block(complete)

    def _block(self, block: bytes) -> bytes:
        return b"".join(self._line(line) for line in block.splitlines(keepends=True))

    def _line(self, line: bytes) -> bytes:
        if self._held:
            if line_body(line) == b"":  # the event ends: rewrite what was held
                return self._release_held(line)
            if field_value(line, b"data") is not None:
                self._held.append(line)
                return b""
            return line  # other fields of the same event pass
        value = field_value(line, b"data")
        if value is None:
            return line
        self.events_seen += 1
        if not value.startswith(b"{"):
            return line
        if self._fast is not None and (done := self._fast(value)) is not None:
            return line if done is value else b"data: " + done + line[len(line_body(line)):]
        try:
            obj = json.loads(value)
        except ValueError:
            self._held.append(line)  # maybe continued on the next data line
            return b""
        if not isinstance(obj, dict) or not self._rewrite(obj):
            return line
        ending = line[len(line_body(line)):]
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + ending

    def _release_held(self, blank: bytes = b"") -> bytes:
        if not self._held:
            return blank
        held, self._held = self._held, []
        payload = b"\n".join(field_value(line, b"data") or b"" for line in held)
        try:
            obj = json.loads(payload)
        except ValueError:
            return b"".join(held) + blank
        if not isinstance(obj, dict) or not self._rewrite(obj):
            return b"".join(held) + blank
        ending = held[-1][len(line_body(held[-1])):] or b"\n"
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + ending + blank

"""`response.stream` filters for token usage: bytes in, bytes out, `b""` flushes.

- `UsageTap` watches a server-sent event stream for the upstream's `usage` and passes
  every byte on at once, untouched (it reads the same incremental `SseLines`/`SseEvents`
  as every other consumer; only events that name a usage object are parsed).
- `UsageChunkStrip` undoes what asking for `stream_options.include_usage` changed in a
  chat or completions stream the app did not ask usage for: the `"usage":null` member
  of each chunk and the final usage-only chunk (`"choices":[]`). Complete lines pass as
  soon as they are complete; the app sees the stream it would have had.
- `Chain` composes two filters.

`UsageTap` is the outermost filter of a reply: it never hands mitmproxy an empty chunk
in the middle of a stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from bastion_edge.core.usage import Usage, may_hold_usage, model_of, usage_of
from bastion_edge.streams.sse import SseEvents, SseLines, field_value, line_body

StreamFilter = Callable[[bytes], bytes]
NOTHING: tuple[bytes, ...] = ()


class UsageTap:
    """Passes the stream through; calls `found(usage, model)` for each usage it reports
    (`model`: the one the same event names)."""

    __slots__ = ("_events", "_found", "_lines", "_next")

    def __init__(self, found: Callable[[Usage, str | None], None],
                 then: StreamFilter | None = None) -> None:
        self._found = found
        self._next = then
        self._lines = SseLines()
        self._events = SseEvents()

    def __call__(self, chunk: bytes) -> bytes | tuple[bytes, ...]:
        if chunk:
            block = self._lines.feed(chunk)
            if block:
                self._look(self._events.feed(block))
        else:
            tail = self._lines.flush()
            self._look([*(self._events.feed(tail + b"\n") if tail else []),
                        *self._events.finish()])
        out = self._next(chunk) if self._next is not None else chunk
        # Nothing to send yet (a filter holds a partial line): no chunk at all, for an
        # empty one would end a chunked reply (mitmproxy sends it as the last chunk).
        return out if out or not chunk else NOTHING

    def _look(self, events: list[bytes]) -> None:
        for data in events:
            if not may_hold_usage(data):
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                continue
            usage = usage_of(obj)
            if usage is not None:
                self._found(usage, model_of(obj))


# `"usage":null` as a member of a chunk object, with the comma that joins it.
_NULL_USAGE_AFTER = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])')
_NULL_USAGE_BEFORE = re.compile(rb'"usage"\s*:\s*null\s*,\s*')


class UsageChunkStrip:
    """Removes what `stream_options.include_usage` added to a chat/completions stream."""

    __slots__ = ("_drop_blank", "_lines")

    def __init__(self) -> None:
        self._lines = SseLines()
        self._drop_blank = False  # the usage chunk was dropped: so is its blank line

    def __call__(self, chunk: bytes) -> bytes:
        block = self._lines.feed(chunk) if chunk else self._lines.flush()
        if not block:
            return b""
        if b'"usage"' not in block and not self._drop_blank:
            return block
        return b"".join(self._line(line) for line in block.splitlines(keepends=True))

    def _line(self, line: bytes) -> bytes:
        if self._drop_blank:
            self._drop_blank = False
            if line_body(line) == b"":
                return b""
        value = field_value(line, b"data")
        if value is None or b'"usage"' not in value:
            return line
        stripped, n = _NULL_USAGE_AFTER.subn(b"", line, count=1)
        if n == 0:
            stripped, n = _NULL_USAGE_BEFORE.subn(b"", line, count=1)
        if n:
            return stripped
        try:
            obj = json.loads(value)
        except ValueError:
            return line
        if isinstance(obj, dict) and obj.get("choices") == [] \
                and isinstance(obj.get("usage"), dict):
            self._drop_blank = True
            return b""
        return line


class Chain:
    """`second(first(chunk))`, keeping the end-of-stream flush (`b""`) for both."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: StreamFilter, second: StreamFilter) -> None:
        self._first = first
        self._second = second

    def __call__(self, chunk: bytes) -> bytes:
        out = self._first(chunk)
        passed = self._second(out) if out else b""
        return passed if chunk else passed + self._second(b"")

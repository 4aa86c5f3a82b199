"""The `response.stream` filter for token usage: bytes in, bytes out, `b""` flushes.

`UsageTap` watches a server-sent event stream for the upstream's `usage` with the same
incremental line splitter as every other consumer (`SseLines`, then `SseEvents` for the
few lines that name a usage object) and hands the stream on:

- as it came, chunk by chunk, untouched (the default);
- or, with `strip=True`, as the app would have had it had the proxy not asked for
  `stream_options.include_usage`: the `"usage":null` member of each chunk and the final
  usage-only chunk (`"choices":[]`) removed. Complete lines pass as soon as they are
  complete (a partial line waits for its end, as in every SSE consumer here).

It is the outermost filter of a reply and never hands mitmproxy an empty chunk in the
middle of a stream (that would end a chunked reply). `JsonUsageTail` reads the usage
at the end of a JSON reply too large to buffer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from bastion_edge.core.usage import Usage, may_hold_usage, model_of, usage_in_json, usage_of
from bastion_edge.streams.sse import SseEvents, SseLines, field_value, line_body

StreamFilter = Callable[[bytes], bytes]
NOTHING: tuple[bytes, ...] = ()

# `"usage":null` as a member of a chunk object, with the comma that joins it (before it,
# or after it when it is the first member).
_NULL_USAGE = re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null(?=[ \t]*[,}])'
                         rb'|"usage"[ \t]*:[ \t]*null[ \t]*,[ \t]*')


class UsageTap:
    """Calls `found(usage, model)` for each usage the stream reports (`model`: the one
    the same event names), and passes the stream on to `then` (or returns it).

    Per chunk the cost is the line splitter and a byte search; only lines that name a
    usage object are decoded. (An event's data is read from the lines that arrived with
    its usage: OpenAI-compatible servers send each event as one `data:` line.)"""

    __slots__ = ("_drop_blank", "_found", "_lines", "_next", "_strip")

    def __init__(self, found: Callable[[Usage, str | None], None],
                 then: StreamFilter | None = None, *, strip: bool = False) -> None:
        self._found = found
        self._next = then
        self._strip = strip
        self._lines = SseLines()
        self._drop_blank = False  # a usage chunk was dropped: so is its blank line

    def __call__(self, chunk: bytes) -> bytes | tuple[bytes, ...]:
        block = self._lines.feed(chunk) if chunk else self._lines.flush()
        if self._strip:
            block = self._stripped(block) if block else block
            out = self._pass(block) if block else b""
            if not chunk:
                out += self._pass(b"")
        else:
            if block and may_hold_usage(block):
                self._look(block)
            out = self._pass(chunk)
        return out if out or not chunk else NOTHING

    def _pass(self, data: bytes) -> bytes:
        return self._next(data) if self._next is not None else data

    def _look(self, block: bytes) -> None:
        events = SseEvents()
        for data in [*events.feed(block), *events.finish()]:
            if may_hold_usage(data):
                self._report(data)

    def _report(self, data: bytes) -> object:
        """The event's object, its usage reported; None if it is not JSON."""
        try:
            obj = json.loads(data)
        except ValueError:
            return None
        usage = usage_of(obj)
        if usage is not None:
            self._found(usage, model_of(obj))
        return obj

    def _stripped(self, block: bytes) -> bytes:
        if self._drop_blank:
            self._drop_blank = False
            first = block.splitlines(keepends=True)[0]
            if line_body(first) == b"":
                block = block[len(first):]
        if b'"usage"' not in block:
            return block
        block = _NULL_USAGE.sub(b"", block)
        if not may_hold_usage(block):
            return block
        return b"".join(self._strip_line(line) for line in block.splitlines(keepends=True))

    def _strip_line(self, line: bytes) -> bytes:
        if self._drop_blank:
            self._drop_blank = False
            if line_body(line) == b"":
                return b""
        value = field_value(line, b"data")
        if value is None or not may_hold_usage(value):
            return line
        obj = self._report(value)
        if isinstance(obj, dict) and obj.get("choices") == [] \
                and isinstance(obj.get("usage"), dict):
            self._drop_blank = True
            return b""
        return line


class JsonUsageTail:
    """A JSON reply too large to buffer, passed on chunk by chunk: its last bytes are
    kept and its usage (which OpenAI's shapes put last) read when it ends."""

    __slots__ = ("_found", "_next", "_tail")

    KEEP = 4096

    def __init__(self, found: Callable[[Usage, str | None], None],
                 then: StreamFilter) -> None:
        self._found = found
        self._next = then
        self._tail = b""

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self._tail = (self._tail + chunk)[-self.KEEP:]
        else:
            usage = usage_in_json(self._tail)
            if usage is not None:
                self._found(usage, None)
        return self._next(chunk)

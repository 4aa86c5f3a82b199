"""Replace one form field of a multipart/form-data body at byte level, streaming.

mitmproxy's `multipart_form` re-encodes parts lossily, so this never parses the file
part: it forwards every byte it does not own unchanged and holds back only what a
delimiter could still start with (len(delimiter) - 1 bytes), the headers of the
part being looked at, and the value of the field it replaces. Memory is O(window),
whatever the body size and wherever the field sits.

    rewriter = FormFieldRewriter(boundary, b"model", replace_model)
    out = rewriter.feed(chunk)      # for each chunk
    out = rewriter.feed(b"")        # at the end: flushes what was held back
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

MAX_PART_HEADERS = 16 * 1024
MAX_FIELD_VALUE = 64 * 1024

_DISPOSITION = re.compile(rb"(?im)^content-disposition:([^\r\n]*)")
# One `;`-separated parameter: a token, `=`, then a quoted string (with \-escapes) or a token.
_PARAM = re.compile(rb';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))')
_CONTINUATION = re.compile(rb"name\*(\d+)(\*?)")
_BOUNDARY = re.compile(r'(?i)boundary="?([^";]+)"?')


def boundary_from_content_type(content_type: str) -> bytes | None:
    """The multipart boundary of a Content-Type header, or None if not multipart."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    found = _BOUNDARY.search(content_type)
    return found.group(1).strip().encode() if found else None


def part_names(headers: bytes) -> set[bytes]:
    """Every `name` parameter of a part's Content-Disposition headers, quoted or not
    (`name=model` and `name="model"` are one field to a server), also in RFC 2231/5987
    form (`name*=UTF-8''model`, `name*0=mo; name*1=del`, as aiohttp reads them).
    Parameters are read in order, quotes respected, so a `filename="; name=model"`
    names nothing."""
    names = set()
    for disposition in _DISPOSITION.finditer(headers):
        pieces: dict[int, bytes] = {}
        for param in _PARAM.finditer(disposition.group(1)):
            key = param.group(1).lower()
            quoted = param.group(2)
            value = re.sub(rb"\\(.)", rb"\1", quoted) if quoted is not None else param.group(3)
            if key == b"name":
                names.add(value)
            elif key == b"name*":
                names.add(_extended(value))
            elif (split := _CONTINUATION.fullmatch(key)) is not None:
                number, extended = split.groups()
                pieces[int(number)] = _extended(value) if extended else value
        if pieces:
            names.add(b"".join(pieces[n] for n in sorted(pieces)))
    return names


def _extended(value: bytes) -> bytes:
    """An RFC 5987 ext-value (`charset'lang'percent-encoded`) as bytes."""
    encoded = value.split(b"'", 2)[-1]
    return urllib.parse.unquote_to_bytes(encoded)


class FormFieldRewriter:
    """Feeds chunks through, replacing the value of every part named `field`.

    `replace(old_value) -> new_value` is called for the first such part, when it is
    complete; every later part named `field` gets that same new value, so a second
    `model` field can neither slip through unmapped nor disagree with the first (a
    streamed upload is past the point where a 400 could answer it; the buffered path
    refuses duplicates, see form_checks). `found` holds the first original value
    afterwards (None if the field never came), `count` how many came;
    `overflowed` is True when a part's headers or the field's value were too large to
    hold: that part passes unchanged, later parts are still looked at.
    """

    def __init__(self, boundary: bytes, field: bytes, replace: Callable[[bytes], bytes]) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._field = field
        self._replace = replace
        # A virtual CRLF in front makes the first boundary look like every other one.
        self._buf = bytearray(b"\r\n")
        self._virtual_left = 2
        self._state = self._scan
        self.found: bytes | None = None
        self._new: bytes = b""
        self.count = 0
        self.overflowed = False
        self.done = False  # the field was replaced (or can no longer be): pure passthrough

    def feed(self, chunk: bytes) -> bytes:
        if self.done and not self._virtual_left:
            return chunk
        self._buf += chunk
        out = bytearray()
        while not self.done and self._state(out, chunk == b""):
            pass
        if self.done or chunk == b"":
            out += self._buf
            self._buf.clear()
        if self._virtual_left:
            strip = min(self._virtual_left, len(out))
            del out[:strip]
            self._virtual_left -= strip
        return bytes(out)

    # Each state consumes from self._buf into out; returns True to run again.

    def _scan(self, out: bytearray, end: bool) -> bool:
        at = self._buf.find(self._delimiter)
        if at < 0:
            keep = 0 if end else len(self._delimiter) - 1
            cut = max(0, len(self._buf) - keep)
            out += self._buf[:cut]
            del self._buf[:cut]
            return False
        cut = at + len(self._delimiter)
        out += self._buf[:cut]
        del self._buf[:cut]
        self._state = self._headers
        return True

    def _headers(self, out: bytearray, end: bool) -> bool:
        if self._buf[:2] == b"--":  # closing delimiter: nothing more to find
            self._finish()
            return False
        stop = self._buf.find(b"\r\n\r\n")
        if stop < 0:
            if end:
                self._finish()
            elif len(self._buf) > MAX_PART_HEADERS:
                return self._give_up_on_part()
            return False
        stop += 4
        headers = bytes(self._buf[:stop])
        out += headers
        del self._buf[:stop]
        self._state = self._value if self._field in part_names(headers) else self._scan
        return True

    def _value(self, out: bytearray, end: bool) -> bool:
        at = self._buf.find(self._delimiter)
        if at < 0:
            if end:
                self._finish()
            elif len(self._buf) > MAX_FIELD_VALUE:
                return self._give_up_on_part()
            return False
        value = bytes(self._buf[:at])
        if self.found is None:
            self.found = value
            self._new = self._replace(value)
        self.count += 1
        out += self._new
        del self._buf[:at]
        self._state = self._scan  # a later part may carry the field again
        return True

    def _give_up_on_part(self) -> bool:
        """This part is too large to hold: it passes as it is, and the next one is
        looked at (a `model` part after it is still replaced)."""
        self.overflowed = True
        self._state = self._scan
        return True

    def _finish(self) -> None:
        self.done = True
        self._state = self._scan


def replace_form_field(
    body: bytes, boundary: bytes, field: bytes, replace: Callable[[bytes], bytes]
) -> tuple[bytes, bytes | None]:
    """Whole-body form of the rewriter: (new body, original value or None)."""
    rewriter = FormFieldRewriter(boundary, field, replace)
    out = rewriter.feed(body) + rewriter.feed(b"")
    return out, rewriter.found

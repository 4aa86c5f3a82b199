"""File bytes on disk, next to the batch database: one file per stored File object.

Large files do not belong in a database row (or in Redis memory): bytes are written
as they arrive and read back in chunks, so neither an upload nor a download holds a
file in memory. Encrypted at rest (same Fernet keys as Responses state) the file is a
sequence of `<4-byte big-endian length><Fernet token>` records of up to CHUNK plain bytes.
Blobs are created 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bastion_edge.state.crypto import BodyCipher

CHUNK = 256 * 1024
# A line is a request body: one longer than the shipped body limit (limits:
# max_json_body_bytes) is refused at validation and never held whole.
MAX_LINE_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class LineTooLong(bytes):
    """Stands for a line longer than the limit: empty, its length in `size`. The line
    itself is never held (only up to the limit, then dropped)."""

    size: int

    def __new__(cls, size: int) -> LineTooLong:
        line = super().__new__(cls, b"")
        line.size = size
        return line


def split_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Chunks of bytes, line by line (without the newline), in linear time; a line over
    `max_line` bytes comes out as a LineTooLong after its end was skipped over."""
    held = bytearray()
    skipped = -1  # bytes of the overlong line being skipped, -1: not skipping
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = memoryview(chunk)[start:] if end < 0 else memoryview(chunk)[start:end]
            if skipped >= 0:
                skipped += len(piece)
            elif len(held) + len(piece) > max_line:
                skipped = len(held) + len(piece)
                held = bytearray()  # give the memory back, not just its contents
            else:
                held += piece
            if end < 0:
                break
            yield LineTooLong(skipped) if skipped >= 0 else bytes(held)
            held.clear()
            skipped = -1
            start = end + 1
    if skipped >= 0:
        yield LineTooLong(skipped)
    elif held:
        yield bytes(held)


class BlobDir:
    def __init__(self, path: Path, cipher: BodyCipher) -> None:
        self.path = path
        self.cipher = cipher
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad blob name {name!r}")
        return self.path / name

    def writer(self, name: str) -> BlobWriter:
        return BlobWriter(self.file(name), self.cipher)

    def read(self, name: str, sealed: bool) -> Iterator[bytes]:
        """The plain bytes, in chunks."""
        with open(self.file(name), "rb") as f:
            if not sealed:
                while chunk := f.read(CHUNK):
                    yield chunk
                return
            while header := f.read(_LENGTH.size):
                (size,) = _LENGTH.unpack(header)
                yield self.cipher.open(f.read(size))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file(name).unlink()


class BlobWriter:
    """Appends plain bytes; `close()` keeps the blob, `discard()` removes it."""

    def __init__(self, path: Path, cipher: BodyCipher) -> None:
        self.path = path
        self.cipher = cipher
        self.size = 0  # plain bytes written
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._pending = bytearray()

    @property
    def sealed(self) -> bool:
        return self.cipher.encrypts

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if not self.sealed:
            self._file.write(data)
            return
        self._pending += data
        while len(self._pending) >= CHUNK:
            self._seal(bytes(self._pending[:CHUNK]))
            del self._pending[:CHUNK]

    def _seal(self, plain: bytes) -> None:
        token = self.cipher.seal(plain)
        self._file.write(_LENGTH.pack(len(token)) + token)

    def close(self) -> None:
        if self._pending:
            self._seal(bytes(self._pending))
            self._pending.clear()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

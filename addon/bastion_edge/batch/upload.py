"""`POST /v1/files`: the multipart upload streamed to a blob, never held in memory.

aiohttp's MultipartReader reads the body part by part and a part chunk by chunk; the
file part's chunks go to disk on a worker thread as they arrive. Memory is one chunk
whatever the file size; an upload over the size limit is dropped as soon as it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from bastion_edge.batch.batch_shapes import FILE_PURPOSES
from bastion_edge.batch.batch_store import Blobs, BlobWriting
from bastion_edge.errors import ApiError, bad_request

READ_CHUNK = 1024 * 1024
MAX_FIELD = 1024


@dataclass(frozen=True, slots=True)
class Uploaded:
    filename: str
    purpose: str
    size: int
    sealed: bool


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"File exceeds the maximum size of {limit} bytes "
                    "(rules: batches.max_file_bytes).", "file_too_large", param="file")


async def receive_upload(request: web.Request, blobs: Blobs, file_id: str,
                         max_bytes: int) -> Uploaded:
    """Reads the form; the file part lands in blob `file_id`. Raises ApiError (400/413)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise bad_request("Expected a multipart/form-data body with 'file' and 'purpose'.",
                          "invalid_request", "file")
    reader = await request.multipart()
    purpose: str | None = None
    stored: tuple[str, BlobWriting] | None = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file" and stored is None:
                writer = blobs.writer(file_id)
                stored = (part.filename or "upload", writer)
                await _copy(part, writer, max_bytes)
            elif part.name == "purpose":
                purpose = await _small_field(part)
            else:
                await part.release()
        if stored is None:
            raise bad_request("Missing required parameter: 'file'.",
                              "missing_required_parameter", "file")
        if purpose not in FILE_PURPOSES:
            raise bad_request(f"Invalid 'purpose': expected one of {', '.join(FILE_PURPOSES)}.",
                              "invalid_value", "purpose")
        filename, writer = stored
        await asyncio.to_thread(writer.close)
        return Uploaded(filename, purpose, writer.size, writer.sealed)
    except BaseException:
        if stored is not None:
            stored[1].discard()
        raise


async def _small_field(part: BodyPartReader) -> str:
    """A short text part (`purpose`), refused with OpenAI's envelope past MAX_FIELD bytes.

    Not `part.read()`: past the app's client_max_size that raises aiohttp's
    HTTPRequestEntityTooLarge, a plain-text 413 no OpenAI SDK can read."""
    data = bytearray()
    while chunk := await part.read_chunk(MAX_FIELD + 1):
        data += chunk
        if len(data) > MAX_FIELD:
            raise bad_request(f"'{part.name}' is longer than {MAX_FIELD} bytes.",
                              "invalid_value", part.name)
    return bytes(part.decode(bytes(data))).decode("utf-8", "replace")


async def _copy(part: BodyPartReader, writer: BlobWriting, max_bytes: int) -> None:
    while chunk := await part.read_chunk(READ_CHUNK):
        if writer.size + len(chunk) > max_bytes:
            raise too_large(max_bytes)
        await asyncio.to_thread(writer.write, chunk)

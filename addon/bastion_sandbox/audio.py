"""`POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart/form-data).

The file part is streamed through sha256 in 64 KiB pieces, never held whole. The reply
text names the received file's length and sha256, and so do the response headers
`x-sandbox-file-bytes` / `x-sandbox-file-sha256`, so tests can prove byte-exact delivery.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import BodyPartReader, web

from bastion_sandbox.errors import invalid_request
from bastion_sandbox.models import ModelKind, require_model
from bastion_sandbox.replies import json_response
from bastion_sandbox.state import state_of

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
TRANSLATIONS_PATH = "/v1/audio/translations"
FILE_BYTES_HEADER = "x-sandbox-file-bytes"
FILE_SHA256_HEADER = "x-sandbox-file-sha256"
READ_CHUNK = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise invalid_request(f"Form field '{part.name}' is too large.", "invalid_value",
                                  part.name)
    return data.decode("utf-8", "replace")


async def _read_form(request: web.Request) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Form fields and the file part's facts (filename, content_type, bytes, sha256)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise invalid_request(
            "This endpoint expects multipart/form-data with a 'file' part.",
            "invalid_content_type",
        )
    fields: dict[str, str] = {}
    file: dict[str, Any] | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise invalid_request("Nested multipart bodies are not supported.", "invalid_value")
            if part.name == "file":
                digest = hashlib.sha256()
                size = 0
                while chunk := await part.read_chunk(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                file = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "bytes": size,
                    "sha256": digest.hexdigest(),
                }
            elif part.name:
                fields[part.name] = await _read_field(part)
            else:
                await part.release()
    except ValueError as exc:
        raise invalid_request(f"Malformed multipart body: {exc}", "invalid_multipart") from None
    return fields, file


async def _audio_task(request: web.Request, task: str, path: str) -> web.Response:
    fields, file = await _read_form(request)
    entry = state_of(request).entry
    if entry is not None:
        entry.form, entry.file = fields, file
    model = require_model(fields.get("model"), ModelKind.TRANSCRIPTION, path)
    if file is None:
        raise invalid_request("A 'file' part is required.", "missing_required_parameter", "file")
    response_format = fields.get("response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise invalid_request(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}.",
            "invalid_value",
            "response_format",
        )
    noun = "transcript" if task == "transcribe" else "translation"
    text = f"sandbox {noun} by {model.id}: {file['bytes']} bytes, sha256 {file['sha256']}"
    headers = {FILE_BYTES_HEADER: str(file["bytes"]), FILE_SHA256_HEADER: file["sha256"]}
    if response_format == "json":
        return json_response({"text": text}, headers=headers)
    if response_format == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": 1.0, "text": text}
        return json_response(
            {
                "task": task,
                "language": fields.get("language", "english"),
                "duration": 1.0,
                "text": text,
                "segments": [segment],
            },
            headers=headers,
        )
    if response_format == "srt":
        body = f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n"
    elif response_format == "vtt":
        body = f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n"
    else:
        body = f"{text}\n"
    return web.Response(text=body, content_type="text/plain", headers=headers)


async def transcriptions(request: web.Request) -> web.Response:
    return await _audio_task(request, "transcribe", TRANSCRIPTIONS_PATH)


async def translations(request: web.Request) -> web.Response:
    return await _audio_task(request, "translate", TRANSLATIONS_PATH)

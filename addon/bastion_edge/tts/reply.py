"""The adapter's streamed answer: raw audio bytes, or OpenAI's speech SSE events.

The response starts (status and headers go out) only with the first encoded bytes, so
any failure before that is still answered as a proper error envelope. After it, an
audio stream is cut off (the connection is aborted, so the app sees a broken transfer,
not a short file) and an SSE stream ends with an `error` event.
"""

from __future__ import annotations

import base64
import json

from aiohttp import web

from bastion_edge.errors import ApiError

SSE_CONTENT_TYPE = "text/event-stream"
TTS_HEADER = "x-bastion-edge-tts"
NOTE_HEADER = "x-bastion-edge-note"
# One SSE delta carries at most this much audio (before base64).
MAX_DELTA_BYTES = 32 * 1024


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=error.status, body=error.body(),
                        content_type="application/json", headers=headers)


def sse_event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def delta_events(audio: bytes) -> bytes:
    return b"".join(
        sse_event({"type": "speech.audio.delta",
                   "audio": base64.b64encode(audio[i : i + MAX_DELTA_BYTES]).decode()})
        for i in range(0, len(audio), MAX_DELTA_BYTES))


def done_event(input_tokens: int) -> bytes:
    return sse_event({"type": "speech.audio.done",
                      "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                                "total_tokens": input_tokens}})


def error_event(error: ApiError) -> bytes:
    return sse_event({"type": "error", **error.envelope()})


class SpeechReply:
    def __init__(self, request: web.Request, sse: bool, content_type: str,
                 headers: dict[str, str]) -> None:
        self._request = request
        self._sse = sse
        self.response = web.StreamResponse(headers=headers)
        self.response.content_type = SSE_CONTENT_TYPE if sse else content_type
        if sse:
            self.response.headers["Cache-Control"] = "no-cache"
        self.bytes_sent = 0

    @property
    def started(self) -> bool:
        return self.response.prepared

    async def send(self, audio: bytes) -> None:
        if not audio:
            return
        await self._start()
        await self.response.write(delta_events(audio) if self._sse else audio)
        self.bytes_sent += len(audio)

    async def finish(self, input_tokens: int) -> None:
        await self._start()
        if self._sse:
            await self.response.write(done_event(input_tokens))
        await self.response.write_eof()

    async def fail(self, error: ApiError) -> None:
        """End a stream that already started, so the app can tell it is incomplete."""
        if self._sse:
            await self.response.write(error_event(error))
            await self.response.write_eof()
        elif self._request.transport is not None:
            self._request.transport.abort()

    async def _start(self) -> None:
        if not self.response.prepared:
            self.response.enable_chunked_encoding()
            await self.response.prepare(self._request)

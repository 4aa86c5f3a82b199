"""Server-sent events with the sandbox's pacing faults (token delay, stall after headers)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bastion_sandbox.replies import dumps, new_id
from bastion_sandbox.state import state_of

DONE = b"data: [DONE]\n\n"


def data_event(payload: Any) -> bytes:
    """`data: {json}` as chat/completions streams send it."""
    return b"data: " + dumps(payload) + b"\n\n"


def named_event(name: str, payload: Any) -> bytes:
    """`event: name` + `data: {json}` as Responses streams send it."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


class SseStream:
    """One streamed reply. A client that goes away ends the stream quietly."""

    def __init__(self, request: web.Request) -> None:
        plan = state_of(request).plan
        self._request = request
        self._stall = plan.stall_after_headers_ms / 1000 if plan else 0.0
        self._pace = plan.token_delay_ms / 1000 if plan else 0.0
        self._sent = 0
        self._gone = False
        self.response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": new_id("req_"),
            }
        )

    async def open(self) -> None:
        await self.response.prepare(self._request)

    async def send(self, event: bytes) -> None:
        if self._gone:
            return
        if self._sent and self._pace:
            await asyncio.sleep(self._pace)
        try:
            await self.response.write(event)
        except ConnectionError:
            self._gone = True
            return
        self._sent += 1
        if self._sent == 1 and self._stall:
            await asyncio.sleep(self._stall)

    async def finish(self) -> web.StreamResponse:
        if not self._gone:
            try:
                await self.response.write_eof()
            except ConnectionError:
                self._gone = True
        return self.response

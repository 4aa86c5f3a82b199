"""Turning a create request and its reply into a record. Pure, no I/O.

`turn_from_request` takes what the request contributes (the app's own input items,
before any expansion); `record_from_response` adds the response object. Replies are
observed, never changed: `SseObserver` and `JsonObserver` are pass-through
`response.stream` callables that keep a copy only of what they need (the current SSE
event; the JSON body up to a limit) and report the final response object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from bastion_edge.core.responses_request import Item, TurnRequest, valid_response_id
from bastion_edge.state.records import StoredResponse
from bastion_edge.streams.sse import SseEvents, SseLines

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
_FINAL_MARKERS = tuple(f'"{kind}"'.encode() for kind in FINAL_EVENTS)
JSON_CAPTURE_LIMIT = 32 * 1024 * 1024

OnFinal = Callable[[Item], None]


def record_from_response(turn: TurnRequest, response: Mapping[str, Any],
                         now: float) -> StoredResponse | None:
    """The record for a response object, or None if it is not one."""
    response_id = response.get("id")
    if response.get("object") != "response" or not valid_response_id(response_id):
        return None
    assert isinstance(response_id, str)
    stored = dict(response)
    # What the app asked for, where the upstream (stateless) could not say it.
    stored["store"] = True
    stored["previous_response_id"] = turn.previous_response_id
    if stored.get("instructions") is None and turn.instructions is not None:
        stored["instructions"] = turn.instructions
    if not stored.get("metadata") and turn.metadata:
        stored["metadata"] = turn.metadata
    created = response.get("created_at")
    return StoredResponse(
        id=response_id, partition=turn.partition,
        created_at=float(created) if isinstance(created, int | float) else now,
        previous_response_id=turn.previous_response_id, ancestors=turn.ancestors,
        input_items=turn.input_items, input_item_ids=turn.input_item_ids, response=stored)


def response_from_json(raw: bytes) -> Item | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _PassThrough:
    """A `response.stream` callable that observes: every chunk is returned unchanged,
    `b""` ends the stream."""

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.feed(chunk)
        else:
            self.finish()
        return chunk

    def feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class SseObserver(_PassThrough):
    """Reassembles SSE events as they pass; keeps the final `response` object.

    As a stream callable it returns every chunk unchanged; `b""` ends the stream.
    """

    def __init__(self, on_final: OnFinal | None = None) -> None:
        self._on_final = on_final
        self._lines = SseLines()
        self._events = SseEvents()
        self.final: Item | None = None

    def feed(self, chunk: bytes) -> None:
        complete = self._lines.feed(chunk)
        if complete:
            for payload in self._events.feed(complete):
                self._dispatch(payload)

    def finish(self) -> None:
        tail = self._lines.flush()  # a last line without its terminator
        payloads = self._events.feed(tail + b"\n") if tail else []
        for payload in [*payloads, *self._events.finish()]:
            self._dispatch(payload)

    def _dispatch(self, payload: bytes) -> None:
        if not any(marker in payload for marker in _FINAL_MARKERS):
            return
        event = response_from_json(payload)
        if event is None or event.get("type") not in FINAL_EVENTS:
            return
        response = event.get("response")
        if isinstance(response, dict):
            self.final = response
            if self._on_final is not None:
                self._on_final(response)


class JsonObserver(_PassThrough):
    """Keeps a copy of a JSON reply (up to `limit` bytes) as it streams through.

    As a stream callable it returns every chunk unchanged; `b""` ends the stream.
    """

    def __init__(self, on_final: OnFinal | None = None, limit: int = JSON_CAPTURE_LIMIT,
                 decode: Callable[[bytes], bytes] | None = None) -> None:
        self._on_final = on_final
        self._limit = limit
        self._decode = decode  # for a Content-Encoding: the bytes pass through still encoded
        self._body: bytearray | None = bytearray()
        self.final: Item | None = None
        self.too_large = False

    def feed(self, chunk: bytes) -> None:
        if self._body is None:
            return
        if len(self._body) + len(chunk) > self._limit:
            self._body = None  # too large to keep: not stored
            self.too_large = True
            return
        self._body += chunk

    def finish(self) -> None:
        if self._body is None:
            return
        raw, self._body = bytes(self._body), None
        try:
            self.final = response_from_json(self._decode(raw) if self._decode else raw)
        except ValueError:  # undecodable: not stored
            return
        if self.final is not None and self._on_final is not None:
            self._on_final(self.final)

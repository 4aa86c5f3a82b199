"""The request journal: the last N requests as the sandbox received them.

Served at `GET /sandbox/journal` (oldest first; `?since=SEQ` for newer ones only) and
cleared by `DELETE /sandbox/journal`, without auth. Tests use it to prove which key,
model and store flag reached the upstream, and that an OpenAI key never did. Recording
is an O(1) append of references; JSON is built only when the journal is read.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy

from bastion_sandbox.errors import BastionError
from bastion_sandbox.replies import error_response, json_response
from bastion_sandbox.state import is_sandbox_path, state_of

JOURNAL_PATH = "/sandbox/journal"
_JSON_FIELDS = ("model", "store", "stream")


@dataclass(slots=True)
class JournalEntry:
    seq: int
    time: float
    scheme: str
    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body_bytes: int = 0
    body_sha256: str | None = None
    body: bytes | None = None  # kept only up to the journal's body limit
    fields: dict[str, Any] | None = None  # model/store/stream of a JSON body
    form: dict[str, str] | None = None  # multipart fields other than files
    file: dict[str, Any] | None = None  # multipart file: name, content_type, bytes, sha256
    status: int | None = None  # None: no response was sent (reset fault, crash)

    def to_json(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        out: dict[str, Any] = {
            "seq": self.seq,
            "time": self.time,
            "scheme": self.scheme,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body_bytes": self.body_bytes,
            "body_sha256": self.body_sha256,
            "body": None if self.body is None else self.body.decode("utf-8", "replace"),
            "status": self.status,
        }
        source: dict[str, Any] = self.fields or self.form or {}
        for name in _JSON_FIELDS:
            out[name] = source.get(name)
        if self.form is not None:
            out["form"] = self.form
        if self.file is not None:
            out["file"] = self.file
        return out


@dataclass(slots=True)
class Journal:
    size: int = 1000
    body_limit: int = 16_384
    _entries: deque[JournalEntry] = field(init=False)
    _seq: itertools.count[int] = field(init=False, default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self._entries = deque(maxlen=self.size)

    def begin(self, request: web.Request, scheme: str) -> JournalEntry:
        entry = JournalEntry(
            seq=next(self._seq),
            time=time.time(),
            scheme=scheme,
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=request.headers,
        )
        self._entries.append(entry)
        return entry

    def record_body(self, entry: JournalEntry, raw: bytes) -> None:
        entry.body_bytes = len(raw)
        entry.body_sha256 = hashlib.sha256(raw).hexdigest()
        if len(raw) <= self.body_limit:
            entry.body = raw

    def entries(self) -> list[JournalEntry]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def middleware(self, scheme: str, *, read_bodies: bool = True) -> Middleware:
        """Records every request (except /sandbox/ paths) reaching an app of `scheme`."""
        return _journal_middleware(self, scheme, read_bodies)


def _journal_middleware(journal: Journal, scheme: str, read_bodies: bool) -> Middleware:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_sandbox_path(request.path) or journal.size == 0:
            return await handler(request)
        entry = journal.begin(request, scheme)
        state = state_of(request)
        state.entry = entry
        multipart = request.content_type.startswith("multipart/")
        try:
            if read_bodies and request.body_exists and not multipart:
                try:
                    journal.record_body(entry, await request.read())
                except web.HTTPRequestEntityTooLarge as exc:
                    err = BastionError(413, exc.text or "Request body too large", "body_too_large")
                    entry.status = err.status
                    return error_response(err)
            response = await handler(request)
            if not state.aborted:
                entry.status = response.status
            return response
        finally:
            if multipart or not read_bodies:
                entry.body_bytes = request.content.total_bytes
            if state.body is not None:
                entry.fields = {name: state.body.get(name) for name in _JSON_FIELDS}

    return record


async def get_journal(request: web.Request) -> web.Response:
    journal: Journal = request.app[JOURNAL_KEY]
    since = request.query.get("since", "0")
    floor = int(since) if since.isdigit() else 0
    return json_response([e.to_json() for e in journal.entries() if e.seq > floor])


async def clear_journal(request: web.Request) -> web.Response:
    request.app[JOURNAL_KEY].clear()
    return json_response({"cleared": True})


JOURNAL_KEY = web.AppKey("bastion_sandbox.journal", Journal)

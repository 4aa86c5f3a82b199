"""The in-process server that answers /v1/files and /v1/batches for the addon.

Like the TTS adapter, it listens on 127.0.0.1 and serves only requests the addon
forwarded with a one-shot token, which carries the plan's decision (the action, the
resource id, the app's partition). Being an HTTP server lets mitmproxy stream an
upload into it and a download out of it: no file is ever buffered in the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import web

from bastion_edge.batch import batch_shapes as shapes
from bastion_edge.batch.batch_metrics import BatchMetrics
from bastion_edge.batch.batch_shapes import Json
from bastion_edge.batch.batch_store import BatchStore, BatchStoreError, Creator
from bastion_edge.batch.upload import receive_upload
from bastion_edge.config.batch_rules import BatchRules
from bastion_edge.core.plan import BatchAction
from bastion_edge.errors import AUTHENTICATION, SERVER_ERROR, ApiError, bad_request
from bastion_edge.local_app import start_local_app
from bastion_edge.one_shot_tokens import TokenRegistry

log = logging.getLogger("bastion_edge")

TOKEN_HEADER = "x-bastion-edge-batch-token"
MAX_JSON_BODY = 64 * 1024
STORE_DOWN = ApiError(503, "bastion-edge: the batch store is unavailable; try again.",
                      "batch_store_unavailable", SERVER_ERROR)


@dataclass(frozen=True, slots=True)
class Call:
    """What the plan decided for one Files/Batch API request."""

    action: BatchAction
    resource_id: str | None
    creator: Creator
    rules: BatchRules


class BatchApiServer:
    def __init__(self, store: Callable[[], BatchStore | None], metrics: BatchMetrics,
                 wake_runner: Callable[[], None], host: str = "127.0.0.1") -> None:
        self._store = store
        self._metrics = metrics
        self._wake = wake_runner
        self._host = host
        self._tokens: TokenRegistry[Call] = TokenRegistry(60.0)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application(client_max_size=MAX_JSON_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await start_local_app(app, self._host)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def register(self, call: Call) -> str:
        return self._tokens.issue(call)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = self._tokens.take(request.headers.get(TOKEN_HEADER))
        if call is None:
            return _error(ApiError(403, "This endpoint only serves requests forwarded by "
                                   "bastion-edge.", "invalid_batch_token", AUTHENTICATION))
        store = self._store()
        try:
            if store is None:
                raise STORE_DOWN
            return await self._answer(request, call, store)
        except ApiError as e:
            self._metrics.api.labels(call.action.value, str(e.status)).inc()
            return _error(e)
        except BatchStoreError as e:
            log.error("bastion-edge: batch store failed: %s", e)
            self._metrics.api.labels(call.action.value, "503").inc()
            return _error(STORE_DOWN)

    async def _answer(self, request: web.Request, call: Call,
                      store: BatchStore) -> web.StreamResponse:
        query = dict(parse_qsl(request.query_string))
        partition, rid = call.creator.partition, call.resource_id or ""
        action = call.action
        if action is BatchAction.FILE_CONTENT:
            found = await store.get_file(partition, rid)
            if found is None:
                raise shapes.file_not_found(rid)
            self._metrics.api.labels(action.value, "200").inc()
            return await _stream_file(request, store, rid, found.sealed, found.body["bytes"])
        body: Json
        if action is BatchAction.FILE_CREATE:
            body = await self._upload(request, call, store)
        elif action is BatchAction.FILE_LIST:
            limit = shapes.list_limit(query, 10_000)
            order = query.get("order", "desc")
            if order not in ("asc", "desc"):
                raise bad_request("Invalid 'order': expected asc or desc.", "invalid_value",
                                  "order")
            body = shapes.list_page(await store.list_files(
                partition, query.get("purpose"), query.get("after"), limit, order == "asc"),
                limit)
        elif action is BatchAction.FILE_RETRIEVE:
            found = await store.get_file(partition, rid)
            if found is None:
                raise shapes.file_not_found(rid)
            body = found.body
        elif action is BatchAction.FILE_DELETE:
            if not await store.delete_file(partition, rid):
                raise shapes.file_not_found(rid)
            body = {"id": rid, "object": "file", "deleted": True}
        elif action is BatchAction.BATCH_CREATE:
            body = await self._create_batch(request, call, store)
        elif action is BatchAction.BATCH_LIST:
            limit = shapes.list_limit(query, 20)
            body = shapes.list_page(await store.list_batches(partition, query.get("after"),
                                                             limit), limit)
        elif action is BatchAction.BATCH_RETRIEVE:
            found_batch = await store.get_batch(partition, rid)
            if found_batch is None:
                raise shapes.batch_not_found(rid)
            body = found_batch
        else:  # BATCH_CANCEL
            cancelled = await store.request_cancel(partition, rid, int(time.time()))
            if cancelled is None:
                raise shapes.batch_not_found(rid)
            if cancelled["status"] not in ("cancelling", "cancelled"):
                raise ApiError(409, f"Cannot cancel a batch with status "
                               f"'{cancelled['status']}'.", "batch_not_cancellable")
            self._wake()
            body = cancelled
        self._metrics.api.labels(action.value, "200").inc()
        return web.json_response(body)

    async def _upload(self, request: web.Request, call: Call, store: BatchStore) -> Json:
        file_id = shapes.new_id("file-")
        uploaded = await receive_upload(request, store.blobs, file_id,
                                        call.rules.max_file_bytes)
        body = shapes.file_object(file_id, uploaded.size, int(time.time()),
                                  uploaded.filename, uploaded.purpose)
        try:
            await store.add_file(call.creator.partition, body, uploaded.sealed)
        except BaseException:
            store.blobs.delete(file_id)
            raise
        self._metrics.file_bytes.inc(uploaded.size)
        return body

    async def _create_batch(self, request: web.Request, call: Call, store: BatchStore) -> Json:
        try:
            raw = await request.read()
            parsed = json.loads(raw)
        except web.HTTPRequestEntityTooLarge as e:
            raise bad_request("The request body is too large.", "request_too_large") from e
        except ValueError as e:
            raise bad_request(f"The request body is not valid JSON: {e}", "invalid_json") from e
        if not isinstance(parsed, dict):
            raise bad_request("The request body must be a JSON object.", "invalid_json")
        file_id, endpoint, window, metadata = shapes.batch_create_params(parsed)
        input_file = await store.get_file(call.creator.partition, file_id)
        if input_file is None:
            raise shapes.file_not_found(file_id)
        if input_file.body["purpose"] != "batch":
            raise bad_request(f"File {file_id} has purpose "
                              f"'{input_file.body['purpose']}', expected 'batch'.",
                              "invalid_file_purpose", "input_file_id")
        body = shapes.new_batch(shapes.new_id("batch_"), file_id, endpoint, window, metadata,
                                int(time.time()))
        await store.add_batch(call.creator, body)
        self._wake()
        return body


async def _stream_file(request: web.Request, store: BatchStore, file_id: str, sealed: bool,
                       size: int) -> web.StreamResponse:
    reply = web.StreamResponse(headers={"content-type": "application/octet-stream"})
    reply.content_length = size
    await reply.prepare(request)
    chunks: Iterator[bytes] = store.blobs.read(file_id, sealed)
    try:
        while chunk := await asyncio.to_thread(next, chunks, b""):
            await reply.write(chunk)
    finally:
        with contextlib.suppress(Exception):
            chunks.close()  # type: ignore[attr-defined]
    await reply.write_eof()
    return reply


def _error(error: ApiError) -> web.Response:
    return web.Response(status=error.status, body=error.body(),
                        content_type="application/json",
                        headers={"x-bastion-edge-error": error.code})

"""Runs batches: each line through the planner, to Bastion with the proxy's own client.

    loop:  claim the active batches whose lease is free (or ours), renewing ours
    batch: validating -> in_progress (lines) -> finalizing -> completed
           (or failed at validation; cancelling -> cancelled; past the window -> expired)
    line:  plan_line (the live decision path) -> POST -> result stored once

Lines of all batches share one concurrency bound and one rate (rules `batches`), and a
line backs off on Bastion's 429/5xx (honouring Retry-After) before its result counts as
failed. A result is inserted once per (batch, line): after a restart, or when another
proxy sharing the store takes over an expired lease, stored lines are skipped; a line
that was in flight when a proxy stopped runs again (its result was never stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bastion_edge.batch import batch_shapes as shapes
from bastion_edge.batch.access import line_record
from bastion_edge.batch.batch_metrics import BatchMetrics
from bastion_edge.batch.batch_shapes import BatchLine, Json
from bastion_edge.batch.batch_store import BatchStore, BatchStoreError, Creator, blob_lines
from bastion_edge.batch.lines import plan_line
from bastion_edge.batch.pacing import MONOTONIC, PaceClock, RateLimit, backoff_seconds
from bastion_edge.batch.validate import check_input
from bastion_edge.config.batch_rules import BatchRules
from bastion_edge.core.keys import KeyFileReader
from bastion_edge.core.plan import Plan
from bastion_edge.core.planner import Policy
from bastion_edge.core.reply_model import restore_model
from bastion_edge.errors import ApiError
from bastion_edge.state.crypto import CipherError
from bastion_edge.telemetry.access_log import AccessRecord

log = logging.getLogger("bastion_edge")

LEASE_SECONDS = 30.0
NEW_BATCHES_PER_POLL = 1  # replicas polling one store each take a batch at a time
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 10.0  # at shutdown: lines in flight may finish and be stored
ATTEMPTS = 5
COUNTS_EVERY_SECONDS = 1.0
EXPIRED = {"code": "batch_expired", "message": "This request could not be executed "
           "before the completion window expired."}
RETRIED = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a line needs from the proxy right now (rules are hot-reloaded)."""

    policy: Policy
    environ: Any
    key_files: KeyFileReader | None
    client: httpx.AsyncClient
    quota: LineQuota | None = None  # the creating app's quota (proxy/quotas.py)


class LineQuota(Protocol):
    """Lines draw from their creator's quota at its pace (waiting for room), and are
    debited by what the upstream reported; an error is the line's result."""

    async def admit_line(self, app: str | None, plan: Plan, body: bytes,
                         give_up_at: float) -> tuple[ApiError | None, Any]: ...

    def settle_line(self, app: str | None, verdict: Any, reply: object,
                    status: int | None) -> None: ...


class BatchRunner:
    def __init__(self, store: Callable[[], BatchStore | None], metrics: BatchMetrics,
                 context: Callable[[], RunContext], rules: Callable[[], BatchRules],
                 access_log: Callable[[AccessRecord], None],
                 clock: Callable[[], float] = time.time,
                 pace: PaceClock = MONOTONIC) -> None:
        self._store = store
        self._metrics = metrics
        self._context = context
        self._rules = rules
        self._log = access_log
        self._clock = clock  # batch timestamps and the completion window
        self._pace = pace  # the rate limit and the retry back-off
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, int] = {}  # batch id -> lines not finished
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._slots_size = 0
        self._rate = RateLimit(pace)
        self._stopping = False

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._forever())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Start no more lines; give those in flight STOP_GRACE_SECONDS to finish and be
        stored (a line cut off then is not stored and runs again where the batch
        resumes); release the leases for the next runner."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
        tasks = [*self._running.values(), *([self._loop_task] if self._loop_task else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        store = self._store()
        if store is not None:
            with contextlib.suppress(BatchStoreError):
                await store.release(self.owner)

    async def _forever(self) -> None:
        while True:
            try:
                await self._tick()
            except BatchStoreError as e:
                log.error("bastion-edge: batch store failed: %s", e)
            except Exception:
                log.exception("bastion-edge: batch runner failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def _tick(self) -> None:
        store = self._store()
        if store is None:
            return
        for batch_id in await store.claim(self.owner, LEASE_SECONDS, NEW_BATCHES_PER_POLL):
            if batch_id not in self._running:
                task = asyncio.get_running_loop().create_task(self._run_batch(store, batch_id))
                self._running[batch_id] = task
                task.add_done_callback(self._finisher(batch_id))
        for status, count in (await store.count_by_status()).items():
            self._metrics.batches.labels(status).set(count)
        self._metrics.queue_depth.set(sum(self._pending.values()))

    def _finisher(self, batch_id: str) -> Callable[[asyncio.Task[None]], None]:
        def finished(_task: asyncio.Task[None]) -> None:
            self._running.pop(batch_id, None)
            self._pending.pop(batch_id, None)
        return finished

    def _slots_for(self, concurrency: int) -> asyncio.Semaphore:
        if self._slots is None or self._slots_size != concurrency:
            self._slots, self._slots_size = asyncio.Semaphore(concurrency), concurrency
        return self._slots

    # ------------------------------------------------------------------ one batch

    async def _run_batch(self, store: BatchStore, batch_id: str) -> None:
        found = await store.batch_for_runner(batch_id)
        if found is None:
            return
        batch, creator = found
        try:
            if batch["status"] == "validating":
                batch = await self._validate(store, batch)
            if batch["status"] == "in_progress":
                batch = await self._run_lines(store, batch, creator)
        except (OSError, CipherError) as e:  # the input deleted, or not decryptable now
            log.error("bastion-edge: batch %s cannot read its input file: %s", batch_id, e)
            batch = await self._unreadable(store, batch_id)
        if batch["status"] in ("finalizing", "cancelling") and not self._stopping:
            await self._finalize(store, batch)

    async def _unreadable(self, store: BatchStore, batch_id: str) -> Json:
        """The batch fails: its input can no longer be read."""
        found = await store.batch_for_runner(batch_id)
        assert found is not None
        batch = found[0]
        if batch["status"] not in ("validating", "in_progress"):
            return batch
        before, now = batch["status"], int(self._clock())
        batch.update(status="failed", failed_at=now, errors=shapes.batch_errors([{
            "code": "input_file_unreadable", "message": "The input file was deleted or "
            "cannot be decrypted with the configured keys.", "param": "input_file_id",
            "line": None}]))
        await store.save_batch(batch, only_if_status=before)
        return batch

    async def _validate(self, store: BatchStore, batch: Json) -> Json:
        input_file = await store.get_file_any(batch["input_file_id"])
        max_lines = self._rules().max_lines
        if input_file is None:
            errors = [{"code": "file_not_found", "message": "The input file was deleted.",
                       "param": "input_file_id", "line": None}]
            total = 0
        else:
            total, errors = await asyncio.to_thread(
                check_input, store.blobs, batch["input_file_id"], input_file.sealed,
                batch["endpoint"], max_lines)
        now = int(self._clock())
        if errors:
            batch = {**batch, "status": "failed", "failed_at": now,
                     "errors": shapes.batch_errors(errors)}
        else:
            batch = {**batch, "status": "in_progress", "in_progress_at": now,
                     "request_counts": shapes.counts(total, 0, 0)}
        if not await store.save_batch(batch, only_if_status="validating"):
            again = await store.batch_for_runner(batch["id"])
            return again[0] if again else batch  # cancelled meanwhile
        return batch

    async def _run_lines(self, store: BatchStore, batch: Json, creator: Creator) -> Json:
        batch_id = batch["id"]
        done = await store.done_lines(batch_id)
        completed, failed = await store.result_counts(batch_id)
        total = batch["request_counts"]["total"]
        self._pending[batch_id] = total - len(done)
        sealed_file = await store.get_file_any(batch["input_file_id"])
        stop = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(
            self._watch(store, batch, stop, lambda: self._counts(store, batch_id)))
        in_flight: set[asyncio.Task[None]] = set()
        try:
            lines = _lines(store, batch["input_file_id"],
                           sealed_file.sealed if sealed_file else False)
            while not stop.is_set() and not self._stopping \
                    and self._clock() <= batch["expires_at"]:
                raw = await asyncio.to_thread(next, lines, None)
                if raw is None:
                    break
                number, text = raw
                if number in done or not text.strip():
                    continue
                rules = self._rules()
                slots = self._slots_for(rules.concurrency)
                await slots.acquire()
                if stop.is_set() or self._stopping:
                    slots.release()
                    break
                await self._rate.wait(rules.requests_per_minute)
                if self._stopping:
                    slots.release()
                    break
                line = shapes.parse_line(text, number, batch["endpoint"])
                task = asyncio.get_running_loop().create_task(
                    self._run_line(store, batch, creator, line))
                in_flight.add(task)
                task.add_done_callback(_releaser(in_flight, slots))
            if in_flight:
                await asyncio.wait(in_flight)
        finally:
            watcher.cancel()
        completed, failed = await store.result_counts(batch_id)
        status = await store.status_of(batch_id)
        fresh = await store.batch_for_runner(batch_id)
        batch = fresh[0] if fresh else batch
        batch["request_counts"] = shapes.counts(total, completed, failed)
        if status == "in_progress" and not self._stopping \
                and await store.holds(self.owner, batch_id):
            expired = self._clock() > batch["expires_at"]
            if completed + failed < total and not expired:
                return batch  # lease lost mid-way or stopped: another pass resumes
            now = int(self._clock())
            batch.update(status="finalizing", finalizing_at=now,
                         expired_at=now if expired else None)
            await store.save_batch(batch, only_if_status="in_progress")
        return batch

    async def _counts(self, store: BatchStore, batch_id: str) -> Json:
        completed, failed = await store.result_counts(batch_id)
        return {"completed": completed, "failed": failed}

    async def _watch(self, store: BatchStore, batch: Json, stop: asyncio.Event,
                     counts: Callable[[], Any]) -> None:
        """Every second: cancelled? lease lost (renewed otherwise)? window over? and the
        batch's request_counts brought up to date."""
        while True:
            await asyncio.sleep(COUNTS_EVERY_SECONDS)
            status = await store.status_of(batch["id"])
            held = await store.holds(self.owner, batch["id"])
            if status != "in_progress" or not held or self._clock() > batch["expires_at"]:
                stop.set()
                return
            fresh = await store.batch_for_runner(batch["id"])
            if fresh is not None:
                body = fresh[0]
                body["request_counts"] = {**body["request_counts"], **await counts()}
                await store.save_batch(body, only_if_status="in_progress")

    async def _finalize(self, store: BatchStore, batch: Json) -> None:
        batch_id = batch["id"]
        if batch["status"] == "finalizing" and batch.get("expired_at"):
            await self._expire_rest(store, batch)
        outputs: dict[str, str | None] = {}
        for ok, field in ((True, "output_file_id"), (False, "error_file_id")):
            file_id = shapes.new_id("file-")
            size = await store.write_results(batch_id, ok, file_id)
            if size:
                name = f"{batch_id}_{'output' if ok else 'error'}.jsonl"
                await store.add_file_for_batch(
                    batch_id, shapes.file_object(file_id, size, int(self._clock()), name,
                                                 "batch_output"), store.blobs.cipher.encrypts)
            outputs[field] = file_id if size else None
        completed, failed = await store.result_counts(batch_id)
        now = int(self._clock())
        fresh = await store.batch_for_runner(batch_id)
        body = fresh[0] if fresh else batch
        before = str(body["status"])
        final = {"cancelling": ("cancelled", "cancelled_at"),
                 "finalizing": ("expired", "expired_at") if body.get("expired_at")
                 else ("completed", "completed_at")}[before]
        body.update(outputs)
        body["request_counts"] = {**body["request_counts"], "completed": completed,
                                  "failed": failed}
        body["status"], body[final[1]] = final[0], now
        if final[0] == "cancelled" and not body.get("cancelling_at"):
            body["cancelling_at"] = now
        if await store.save_batch(body, only_if_status=before):
            await store.drop_results(batch_id)
            log.info("bastion-edge: batch %s %s (%d completed, %d failed)", batch_id,
                     final[0], completed, failed)
        else:  # a cancel arrived while finalizing: drop these files, finalize again
            for made in outputs.values():
                if made:
                    await store.delete_file_any(made)

    async def _expire_rest(self, store: BatchStore, batch: Json) -> None:
        """Lines not run within the window land in the error file as `batch_expired`."""
        done = await store.done_lines(batch["id"])
        found = await store.get_file_any(batch["input_file_id"])
        lines = _lines(store, batch["input_file_id"], found.sealed if found else False)
        while (raw := await asyncio.to_thread(next, lines, None)) is not None:
            number, text = raw
            if number in done or not text.strip():
                continue
            custom_id = shapes.parse_line(text, number, batch["endpoint"]).custom_id
            await store.save_result(batch["id"], number, False, shapes.result_line(
                custom_id, shapes.new_id("req_"), None, None, EXPIRED))

    # ------------------------------------------------------------------ one line

    async def _run_line(self, store: BatchStore, batch: Json, creator: Creator,
                        line: BatchLine) -> None:
        started = time.time()
        context = self._context()
        plan, body = plan_line(line, batch["endpoint"], creator, context.policy,
                               context.environ, context.key_files)
        request_id = shapes.new_id("batch_req_")
        status: int | None
        if plan is None:
            status, reply, error = None, None, {"code": "not_intercepted",
                                                "message": "no OpenAI host in the rules"}
        elif plan.refusal is not None:
            status, reply, error = plan.refusal.status, plan.refusal.envelope(), None
        else:
            quota = context.quota
            refusal, verdict = (None, None) if quota is None else \
                await quota.admit_line(creator.app, plan, body, batch["expires_at"])
            if refusal is not None:
                status, reply, error = refusal.status, refusal.envelope(), None
            else:
                status, reply, error = await self._send(context, plan, body)
            if quota is not None:
                quota.settle_line(creator.app, verdict, reply, status)
            if isinstance(reply, dict) and context.policy.rules.reply_model == "original" \
                    and plan.resolution is not None and plan.resolution.changed \
                    and plan.original_model:
                restore_model(reply, plan.original_model)
        ok = shapes.is_success(status)
        result = shapes.result_line(line.custom_id, request_id, status, reply, error)
        if await store.save_result(batch["id"], line.number, ok, result):
            self._metrics.lines.labels("completed" if ok else "failed").inc()
            self._pending[batch["id"]] = self._pending.get(batch["id"], 1) - 1
        if plan is not None:
            self._log(line_record(plan, batch["id"], line, request_id, status, started,
                                     len(body), error))

    async def _send(self, context: RunContext, plan: Plan,
                    body: bytes) -> tuple[int | None, Any, Json | None]:
        target = plan.route.target
        headers = {"content-type": "application/json", **plan.route.put_headers}
        for attempt in range(ATTEMPTS):
            try:
                reply = await context.client.post(target.url, content=body, headers=headers)
            except httpx.HTTPError as e:
                if attempt == ATTEMPTS - 1:
                    return None, None, {"code": "upstream_unreachable",
                                        "message": f"Bastion did not answer: {type(e).__name__}"}
                self._metrics.retries.inc()
                await self._pace.sleep(backoff_seconds(attempt, None))
                continue
            if reply.status_code in RETRIED and attempt < ATTEMPTS - 1:
                self._metrics.retries.inc()
                await self._pace.sleep(backoff_seconds(attempt, reply.headers.get("retry-after")))
                continue
            try:
                parsed: Any = reply.json()
            except ValueError:
                parsed = reply.text
            return reply.status_code, parsed, None
        raise AssertionError("unreachable")


def _releaser(in_flight: set[asyncio.Task[None]],
              slots: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
    def release(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        slots.release()
    return release


def _lines(store: BatchStore, file_id: str, sealed: bool) -> Iterator[tuple[int, bytes]]:
    yield from enumerate(blob_lines(store.blobs, file_id, sealed), start=1)

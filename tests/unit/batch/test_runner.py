"""The runner's lifecycle over a real SQLite store and an upstream answered by httpx's
MockTransport (the test seam httpx ships): validating -> in_progress -> finalizing ->
completed, and a batch past its completion window -> expired. Time is a fake clock, and
so is the pacer's: no test here sleeps through a rate limit or a back-off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from bastion_edge.batch import batch_shapes as shapes
from bastion_edge.batch.batch_metrics import BatchMetrics
from bastion_edge.batch.batch_sqlite import SqliteBatchStore
from bastion_edge.batch.batch_store import Creator
from bastion_edge.batch.blobs import BlobDir
from bastion_edge.batch.pacing import BACKOFF_BASE_SECONDS
from bastion_edge.batch.runner import BatchRunner, LineQuota, RunContext
from bastion_edge.config.rules import parse_rules
from bastion_edge.core.plan import Plan
from bastion_edge.core.planner import Policy
from bastion_edge.errors import ApiError
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.telemetry.access_log import AccessRecord

CHAT = "/v1/chat/completions"
POLICY = Policy.of(parse_rules("models:\n  gpt-4o: gpt-oss-120b\n"))
ENV = {"QUBITTRON_API_KEY": "bk-runner"}
PACED = Policy.of(parse_rules("models:\n  gpt-4o: gpt-oss-120b\n"
                              "batches:\n  concurrency: 1\n  requests_per_minute: 30\n"))
CREATOR = Creator("app:a", "a", "10.0.0.1", None)


class ManualClock:
    """The pacer's clock, moved only by sleeping on it: each sleep is recorded and
    advances `now` at once (after a yield to the loop, as a real sleep would)."""

    def __init__(self) -> None:
        self.time = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += seconds
        await asyncio.sleep(0)


BUSY_ONCE: set[str] = set()  # texts already answered 429 once


def answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    text = body["messages"][0]["content"]
    if text.startswith("busy-once") and text not in BUSY_ONCE:
        BUSY_ONCE.add(text)
        return httpx.Response(429, json={"error": {"code": "rate_limit", "message": "wait"}})
    if text == "fail":
        return httpx.Response(400, json={"error": {"code": "bad", "message": "no"}})
    return httpx.Response(200, json={"object": "chat.completion", "model": body["model"],
                                     "echo": text})


async def run(tmp: Path, lines: list[dict[str, Any]], now: float, clock_at: float,
              delete_input: bool = False, policy: Policy = POLICY,
              pace: ManualClock | None = None, quota: LineQuota | None = None,
              ) -> tuple[dict[str, Any], SqliteBatchStore, list[AccessRecord]]:
    store = SqliteBatchStore(tmp / "b.sqlite3", BlobDir(tmp / "files", BodyCipher()))
    writer = store.blobs.writer("file-in")
    writer.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    writer.close()
    await store.add_file("app:a", shapes.file_object("file-in", writer.size, int(now),
                                                     "in.jsonl", "batch"), False)
    batch = shapes.new_batch("batch_t", "file-in", CHAT, "24h", None, int(now))
    await store.add_batch(CREATOR, batch)
    if delete_input:
        store.blobs.delete("file-in")  # the bytes gone, the metadata still there
    records: list[AccessRecord] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        runner = BatchRunner(lambda: store, BatchMetrics(CollectorRegistry()),
                             lambda: RunContext(policy, ENV, None, client, quota),
                             lambda: policy.rules.batches, records.append,
                             clock=lambda: clock_at, pace=pace or ManualClock())
        assert await store.claim(runner.owner, 30, 1) == ["batch_t"]
        await runner._run_batch(store, "batch_t")
    done = await store.get_batch("app:a", "batch_t")
    assert done is not None
    return done, store, records


def line(custom_id: str, text: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}}


def content(store: SqliteBatchStore, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in b"".join(store.blobs.read(file_id, False)).splitlines()]


def test_a_batch_runs_to_completed_with_output_and_error_files(tmp_path: Path) -> None:
    async def scenario() -> None:
        lines = [line(f"id-{i}", f"text {i}") for i in range(5)] + [line("bad", "fail")]
        done, store, records = await run(tmp_path, lines, 1000.0, 1000.0)
        assert done["status"] == "completed"
        assert done["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
        assert done["in_progress_at"] == done["finalizing_at"] == done["completed_at"] == 1000
        output = content(store, done["output_file_id"])
        assert [r["custom_id"] for r in output] == [f"id-{i}" for i in range(5)]  # in order
        assert output[3]["response"]["body"] == {"object": "chat.completion",
                                                 "model": "gpt-oss-120b", "echo": "text 3"}
        (error,) = content(store, done["error_file_id"])
        assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
        assert len(records) == 6 and all("batch line: batch_t" in r.notes[-1] for r in records)
        assert {r.key_env for r in records} == {"QUBITTRON_API_KEY"}
        assert await store.done_lines("batch_t") == set()  # results dropped once written
        await store.close()

    asyncio.run(scenario())


def test_a_batch_past_its_window_expires_without_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        lines = [line("late", "too late"), line("later", "also late")]
        done, store, records = await run(tmp_path, lines, 1000.0, 1000.0 + 25 * 3600)
        assert done["status"] == "expired" and done["expired_at"] == 1000 + 25 * 3600
        assert done["output_file_id"] is None and records == []  # nothing was sent
        assert done["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
        errors = content(store, done["error_file_id"])
        assert [(e["custom_id"], e["error"]["code"], e["response"]) for e in errors] == [
            ("late", "batch_expired", None), ("later", "batch_expired", None)]
        await store.close()

    asyncio.run(scenario())


def test_a_batch_whose_input_vanished_fails_instead_of_retrying_forever(
    tmp_path: Path
) -> None:
    async def scenario() -> None:
        done, store, records = await run(tmp_path, [line("a", "x")], 1000.0, 1000.0,
                                         delete_input=True)
        assert done["status"] == "failed" and done["failed_at"] == 1000
        assert done["errors"]["data"][0]["code"] == "input_file_unreadable"
        assert records == []
        await store.close()

    asyncio.run(scenario())


def test_lines_are_paced_on_the_injected_clock_not_in_real_time(tmp_path: Path) -> None:
    """30 a minute is a line every 2 s: four lines wait 2 s three times, on the fake
    clock; the test takes no such time."""
    async def scenario() -> None:
        pace = ManualClock()
        lines = [line(f"p-{i}", f"paced {i}") for i in range(4)]
        done, store, _ = await run(tmp_path, lines, 1000.0, 1000.0, policy=PACED, pace=pace)
        assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
        assert pace.slept == [2.0, 2.0, 2.0] and pace.time == 6.0
        await store.close()

    asyncio.run(scenario())


def test_a_throttled_line_backs_off_on_the_injected_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        pace = ManualClock()
        done, store, _ = await run(tmp_path, [line("b", "busy-once b")], 1000.0, 1000.0,
                                   pace=pace)
        assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
        (backoff,) = pace.slept  # one 429 without retry-after: jittered, first step
        assert BACKOFF_BASE_SECONDS / 2 <= backoff <= BACKOFF_BASE_SECONDS
        await store.close()

    asyncio.run(scenario())


class CreatorQuota:
    """A LineQuota that refuses lines saying "too big" and records what it settles."""

    def __init__(self) -> None:
        self.admitted: list[tuple[str | None, float]] = []
        self.settled: list[tuple[str | None, object, int | None]] = []

    async def admit_line(self, app: str | None, plan: Plan, body: bytes,
                         give_up_at: float) -> tuple[ApiError | None, Any]:
        self.admitted.append((app, give_up_at))
        if b"too big" in body:
            return ApiError(429, "Request too large", "rate_limit_exceeded", "tokens"), None
        return None, "verdict"

    def settle_line(self, app: str | None, verdict: Any, reply: object,
                    status: int | None) -> None:
        self.settled.append((app, verdict, status))


def test_lines_draw_from_the_creators_quota_and_a_refusal_is_the_lines_result(
    tmp_path: Path
) -> None:
    async def scenario() -> None:
        quota = CreatorQuota()
        lines = [line("fits", "small"), line("never", "too big")]
        done, store, _ = await run(tmp_path, lines, 1000.0, 1000.0, quota=quota)
        assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        assert {app for app, _ in quota.admitted} == {"a"}  # the creating app
        assert {until for _, until in quota.admitted} == {done["expires_at"]}
        (error,) = content(store, done["error_file_id"])
        assert error["custom_id"] == "never"
        assert error["response"]["status_code"] == 429
        assert error["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
        assert sorted(quota.settled, key=str) == [("a", "verdict", 200), ("a", None, 429)]
        await store.close()

    asyncio.run(scenario())

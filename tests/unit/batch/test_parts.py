"""The batch runner's pure parts and its SQLite store: shapes, validation, rate and
backoff timing on a fake clock, blobs (plain and encrypted), leases, results once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bastion_edge.batch import batch_shapes as shapes
from bastion_edge.batch.batch_shapes import LineInvalid, parse_line
from bastion_edge.batch.batch_sqlite import SqliteBatchStore
from bastion_edge.batch.batch_store import BatchStore, Creator, blob_lines
from bastion_edge.batch.blobs import CHUNK, BlobDir, LineTooLong, split_lines
from bastion_edge.batch.pacing import BACKOFF_MAX_SECONDS, RateLimit, backoff_seconds
from bastion_edge.batch.validate import check_input
from bastion_edge.errors import ApiError
from bastion_edge.state.crypto import BodyCipher

CHAT = "/v1/chat/completions"


def raw(**line: object) -> bytes:
    return json.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": {}, **line}
                      ).encode()


def test_a_valid_line_keeps_custom_id_and_body() -> None:
    line = parse_line(raw(custom_id="x-1", body={"model": "m"}), 3, CHAT)
    assert (line.number, line.custom_id, line.body) == (3, "x-1", {"model": "m"})


@pytest.mark.parametrize(("text", "code"), [
    (b"{not json", "invalid_json_line"),
    (b"[1]", "invalid_json_line"),
    (raw(custom_id=""), "missing_required_parameter"),
    (raw(method="GET"), "invalid_value"),
    (raw(url="/v1/embeddings"), "mismatched_endpoint"),
    (raw(body="x"), "invalid_value"),
])
def test_invalid_lines_say_why_and_where(text: bytes, code: str) -> None:
    with pytest.raises(LineInvalid) as info:
        parse_line(text, 7, CHAT)
    assert info.value.error()["code"] == code and info.value.error()["line"] == 7


def test_an_input_file_is_validated_whole(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path, BodyCipher())

    def check(text: bytes, max_lines: int = 10) -> tuple[int, list[str]]:
        writer = blobs.writer("file-in")
        writer.write(text)
        writer.close()
        total, errors = check_input(blobs, "file-in", False, CHAT, max_lines)
        return total, [e["code"] for e in errors]

    good = raw(custom_id="a") + b"\n\n" + raw(custom_id="b")  # blank lines are skipped
    assert check(good) == (2, [])
    assert check(good + b"\n" + raw(custom_id="a")) == (3, ["duplicate_custom_id"])
    assert check(good, max_lines=1) == (2, ["too_many_lines"])
    assert check(b"\n") == (0, ["empty_file"])
    assert check(raw(url="/v1/embeddings")) == (1, ["mismatched_endpoint"])


def test_an_overlong_line_is_never_held_and_reading_stops_past_max_lines(
    tmp_path: Path
) -> None:
    blobs = BlobDir(tmp_path, BodyCipher())
    writer = blobs.writer("file-in")
    writer.write(raw(custom_id="a") + b"\n" + b"x" * 5000 + b"\n" + raw(custom_id="b"))
    writer.close()
    total, errors = check_input(blobs, "file-in", False, CHAT, 10, max_line_bytes=1000)
    assert total == 3 and [(e["code"], e["line"]) for e in errors] == [("line_too_large", 2)]
    read: list[int] = []

    def counted() -> Iterator[bytes]:
        for i in range(1_000_000):
            read.append(i)
            yield raw(custom_id=str(i)) + b"\n"

    class Endless(BlobDir):
        def read(self, name: str, sealed: bool) -> Iterator[bytes]:
            return counted()

    total, errors = check_input(Endless(tmp_path, BodyCipher()), "x", False, CHAT, 5)
    assert (total, [e["code"] for e in errors]) == (6, ["too_many_lines"])
    assert len(read) == 6  # up to the first line past the limit, no further


def test_split_lines_in_chunks_of_any_size() -> None:
    data = b"ab\nc" + b"d" * 20 + b"\n\nxyz"
    for size in (1, 2, 3, 7, 100):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        lines = list(split_lines(chunks, 10))
        assert lines == [b"ab", b"", b"", b"xyz"]
        assert isinstance(lines[1], LineTooLong) and lines[1].size == 21
        assert list(split_lines(chunks, 100)) == data.split(b"\n")


def test_create_params_are_checked() -> None:
    ok = {"input_file_id": "file-1", "endpoint": CHAT, "completion_window": "24h"}
    assert shapes.batch_create_params(ok) == ("file-1", CHAT, "24h", None)
    for change in ({"endpoint": "/v1/images/generations"}, {"completion_window": "1h"},
                   {"input_file_id": None}, {"metadata": {"k": 1}}):
        with pytest.raises(ApiError) as info:
            shapes.batch_create_params({**ok, **change})
        assert info.value.status == 400


def test_a_new_batch_has_openais_shape() -> None:
    batch = shapes.new_batch("batch_1", "file-1", CHAT, "24h", {"k": "v"}, 1000)
    assert batch["status"] == "validating" and batch["expires_at"] == 1000 + 24 * 3600
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    for field in ("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                  "expired_at", "cancelling_at", "cancelled_at", "output_file_id",
                  "error_file_id"):
        assert batch[field] is None


def test_result_lines_in_openais_jsonl_format() -> None:
    ok = shapes.result_line("c", "req_1", 200, {"x": 1})
    assert ok["id"].startswith("batch_req_") and ok["custom_id"] == "c"
    assert ok["response"] == {"status_code": 200, "request_id": "req_1", "body": {"x": 1}}
    assert ok["error"] is None
    failed = shapes.result_line("c", "req_2", None, None, {"code": "x", "message": "y"})
    assert failed["response"] is None and failed["error"]["code"] == "x"
    assert shapes.is_success(204) and not shapes.is_success(429)
    assert not shapes.is_success(None)


def test_list_page_has_cursor_fields() -> None:
    page = shapes.list_page([{"id": "a"}, {"id": "b"}, {"id": "c"}], 2)
    assert page["data"] == [{"id": "a"}, {"id": "b"}] and page["has_more"]
    assert (page["first_id"], page["last_id"]) == ("a", "b")
    with pytest.raises(ApiError):
        shapes.list_limit({"limit": "0"}, 20)


def test_rate_limit_spaces_starts_evenly() -> None:
    class Frozen:
        at = 100.0

        def now(self) -> float:
            return self.at

        async def sleep(self, seconds: float) -> None:
            raise AssertionError("delay() only books; it never sleeps")

    clock = Frozen()
    rate = RateLimit(clock)
    assert [rate.delay(60) for _ in range(3)] == [0.0, 1.0, 2.0]
    clock.at = 110.0  # idle for a while: no burst credit beyond "now"
    assert rate.delay(60) == 0.0
    assert rate.delay(None) == 0.0


def test_backoff_honours_retry_after_and_grows_capped() -> None:
    assert backoff_seconds(0, "3") == 3.0
    assert backoff_seconds(0, "9999") == BACKOFF_MAX_SECONDS
    assert 0.25 <= backoff_seconds(0, None) <= 0.5
    assert 2.0 <= backoff_seconds(3, "soon") <= 4.0
    assert backoff_seconds(20, None) <= BACKOFF_MAX_SECONDS


@pytest.mark.parametrize("encrypted", [False, True])
def test_blobs_round_trip_in_chunks(tmp_path: Path, encrypted: bool) -> None:
    cipher = BodyCipher((Fernet.generate_key(),)) if encrypted else BodyCipher()
    blobs = BlobDir(tmp_path / "blobs", cipher)
    data = b"".join(b'{"line": %d}\n' % i for i in range(60_000))
    assert len(data) > 2 * CHUNK
    writer = blobs.writer("file-1")
    for start in range(0, len(data), 10_000):
        writer.write(data[start:start + 10_000])
    writer.close()
    on_disk = (tmp_path / "blobs" / "file-1").read_bytes()
    assert (b'{"line": 5}' in on_disk) is not encrypted
    assert (tmp_path / "blobs" / "file-1").stat().st_mode & 0o777 == 0o600
    assert b"".join(blobs.read("file-1", encrypted)) == data
    lines = list(blob_lines(blobs, "file-1", encrypted))
    assert len(lines) == 60_000 and lines[-1] == b'{"line": 59999}'


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from redis_server import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def test_sqlite_lease_expires_to_another_runner(tmp_path: Path) -> None:
    async def scenario() -> None:
        now = [1000.0]
        blobs = BlobDir(tmp_path / "batch-files", BodyCipher())
        one = SqliteBatchStore(tmp_path / "b.sqlite3", blobs, clock=lambda: now[0])
        two = SqliteBatchStore(tmp_path / "b.sqlite3", blobs, clock=lambda: now[0])
        await one.add_batch(Creator("app:a", "a", None, None),
                            shapes.new_batch("batch_1", "file-1", CHAT, "24h", None, 1))
        assert await one.claim("one", 30, 1) == ["batch_1"]
        assert await two.claim("two", 30, 1) == []
        now[0] += 31
        assert await two.claim("two", 30, 1) == ["batch_1"]  # one's lease expired
        assert not await one.holds("one", "batch_1") and await two.holds("two", "batch_1")
        await one.close()
        await two.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_line_results_are_encrypted_at_rest_too(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    cipher = BodyCipher((Fernet.generate_key(),))

    async def scenario() -> None:
        store: BatchStore
        if kind == "sqlite":
            store = SqliteBatchStore(tmp_path / "b.sqlite3",
                                     BlobDir(tmp_path / "batch-files", cipher))
        else:
            from bastion_edge.batch.batch_redis import RedisBatchStore

            store = RedisBatchStore(request.getfixturevalue("redis_url"), cipher,
                                    prefix=f"test-{uuid.uuid4().hex}:")
        await store.add_batch(Creator("p", None, None, None),
                              shapes.new_batch("batch_e", "file-1", CHAT, "24h", None, 1))
        assert await store.save_result("batch_e", 1, True, {"secret": "zanzibar"})
        if kind == "sqlite":
            import sqlite3

            with sqlite3.connect(tmp_path / "b.sqlite3") as db:
                (raw_body,) = db.execute("SELECT body FROM results").fetchone()
            assert "zanzibar" not in raw_body
        assert await store.write_results("batch_e", True, "file-out") > 0
        assert b"".join(store.blobs.read("file-out", True)) == b'{"secret":"zanzibar"}\n'
        await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_store_leases_are_exclusive_and_results_stored_once(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    async def scenario() -> None:
        stores: list[BatchStore] = []
        prefix = f"test-{uuid.uuid4().hex}:"  # both "replicas" on one keyspace
        for _ in range(2):
            if kind == "sqlite":
                stores.append(SqliteBatchStore(
                    tmp_path / "b.sqlite3", BlobDir(tmp_path / "batch-files", BodyCipher())))
            else:
                from bastion_edge.batch.batch_redis import RedisBatchStore

                stores.append(RedisBatchStore(request.getfixturevalue("redis_url"),
                                              BodyCipher(), prefix=prefix))
        one, two = stores
        creator = Creator("app:a", "a", None, None)
        for n in (1, 2, 3):
            await one.add_batch(creator, shapes.new_batch(f"batch_{n}", "file-1", CHAT,
                                                          "24h", None, n))
        assert await one.claim("one", 30, 1) == ["batch_1"]
        assert await two.claim("two", 30, 1) == ["batch_2"]  # replicas share the work
        assert sorted(await one.claim("one", 30, 1)) == ["batch_1", "batch_3"]  # own + new
        assert await two.claim("two", 30, 1) == ["batch_2"]  # nothing free left
        assert await one.holds("one", "batch_1") and not await one.holds("one", "batch_2")
        await two.release("two")
        assert not await two.holds("two", "batch_2")
        assert await one.save_result("batch_1", 1, True, {"n": 1})
        assert not await two.save_result("batch_1", 1, False, {"n": 2})  # once
        assert await one.save_result("batch_1", 2, False, {"n": 3})
        assert await one.done_lines("batch_1") == {1, 2}
        assert await one.result_counts("batch_1") == (1, 1)
        assert await one.get_batch("app:other", "batch_1") is None  # partitioned
        cancelled = await two.request_cancel("app:a", "batch_1", 5)
        assert cancelled is not None and cancelled["status"] == "cancelling"
        assert await one.status_of("batch_1") == "cancelling"
        assert await one.write_results("batch_1", True, "file-out") > 0
        assert b"".join(one.blobs.read("file-out", False)) == b'{"n":1}\n'
        assert await one.count_by_status() == {"cancelling": 1, "validating": 2}
        body = shapes.file_object("file-9", 3, 10, "a.jsonl", "batch")
        await one.add_file("app:a", body, False)
        assert (await two.get_file("app:a", "file-9")) is not None
        assert await two.get_file("app:b", "file-9") is None
        assert [f["id"] for f in await two.list_files("app:a", "batch", None, 10, False)] \
            == ["file-9"]
        assert not await two.delete_file("app:b", "file-9")
        assert await two.delete_file("app:a", "file-9")
        for store in (one, two):
            await store.close()

    asyncio.run(scenario())


def test_a_line_backs_off_on_429_and_5xx_then_succeeds_or_gives_up() -> None:
    import httpx
    from prometheus_client import CollectorRegistry

    from bastion_edge.batch.batch_metrics import BatchMetrics
    from bastion_edge.batch.batch_shapes import BatchLine
    from bastion_edge.batch.lines import plan_line
    from bastion_edge.batch.runner import ATTEMPTS, BatchRunner, RunContext
    from bastion_edge.config.rules import parse_rules
    from bastion_edge.core.planner import Policy

    policy = Policy.of(parse_rules("models:\n  gpt-4o: gpt-oss-120b\n"))
    env = {"QUBITTRON_API_KEY": "bk"}
    plan, body = plan_line(BatchLine(1, "c", {"model": "gpt-4o", "messages": []}),
                           CHAT, Creator("p", None, None, None), policy, env)
    assert plan is not None
    metrics = BatchMetrics(CollectorRegistry())

    async def send(statuses: list[int]) -> tuple[int | None, object, list[str]]:
        seen: list[str] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers["authorization"])
            status = statuses.pop(0) if statuses else 200
            return httpx.Response(status, json={"n": len(seen)},
                                  headers={"retry-after": "0"})

        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            context = RunContext(policy, env, None, client)
            runner = BatchRunner(lambda: None, metrics, lambda: context,
                                 lambda: policy.rules.batches, lambda _r: None)
            status, reply, _ = await runner._send(context, plan, body)
        return status, reply, seen

    status, reply, seen = asyncio.run(send([429, 503, 502]))
    assert (status, reply) == (200, {"n": 4}) and seen == ["Bearer bk"] * 4
    status, reply, seen = asyncio.run(send([503] * ATTEMPTS))
    assert status == 503 and len(seen) == ATTEMPTS  # gives up: the line fails with it
    status, _, seen = asyncio.run(send([400]))
    assert status == 400 and len(seen) == 1  # a client error is not retried
    retried = metrics.retries._value.get()
    assert retried == 3 + ATTEMPTS - 1

"""Files and Batch APIs answered by the proxy, run against the sandbox (which, like
Bastion, has neither): the real openai SDK through `bastion-edge run`."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import make_client
from harness import Proxy, Sandbox, proxy_env, start_proxy, wait_until

OTHER_APP_KEY = "sk-other-app-key-batches-0000"
MODELS = ("models:\n  gpt-4o-mini: gpt-oss-20b\n  text-embedding-3-small: bge-m3\n"
          "unmapped_models: reject\n")


def rules_file(tmp: Path, batches: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    rules = tmp / "rules.yaml"
    rules.write_text(MODELS + (f"batches:\n{batches}" if batches else ""))
    return rules


def chat_line(custom_id: str, text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def by_custom_id(content: bytes) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in content.splitlines() if line.strip()]
    out = {row["custom_id"]: row for row in rows}
    assert len(out) == len(rows), "a custom_id appears twice"
    return out


def finished(client: openai.OpenAI, batch_id: str, timeout: float = 60) -> Any:
    seen: list[Any] = []

    def done() -> bool:
        seen.append(client.batches.retrieve(batch_id))
        return seen[-1].status in ("completed", "failed", "cancelled", "expired")

    wait_until(done, timeout=timeout, what=f"batch {batch_id} to finish")
    return seen[-1]


def run_batch(client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str) -> Any:
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))),
                                   purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=endpoint,  # type: ignore[arg-type]
                                  completion_window="24h")
    assert batch.status == "validating"
    return finished(client, batch.id)


@pytest.fixture
def batch_proxy(sandbox: Sandbox, tmp_path: Path) -> Iterator[Proxy]:
    running = start_proxy(tmp_path, proxy_env(sandbox), rules=rules_file(tmp_path))
    yield running
    assert running.process.stop() == 0, running.process.log()


def test_chat_batch_upload_create_poll_download(
    batch_proxy: Proxy, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(monkeypatch, batch_proxy)
    sandbox.clear_journal()
    lines = [chat_line(f"req-{i}", f"say {i}") for i in range(5)]
    lines.append(chat_line("bad-model", "x", model="no-such-model"))
    batch = run_batch(client, lines, "/v1/chat/completions")
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 6
    assert batch.request_counts.completed == 5 and batch.request_counts.failed == 1
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.output_file_id and batch.error_file_id
    output = by_custom_id(client.files.content(batch.output_file_id).content)
    assert set(output) == {f"req-{i}" for i in range(5)}
    for custom_id, row in output.items():
        assert row["response"]["status_code"] == 200 and row["error"] is None
        assert row["id"].startswith("batch_req_")
        body = row["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "gpt-oss-20b"
        assert custom_id.removeprefix("req-") in json.dumps(
            [e for e in sandbox.journal() if e["path"] == "/v1/chat/completions"])
    errors = by_custom_id(client.files.content(batch.error_file_id).content)
    assert list(errors) == ["bad-model"]
    assert errors["bad-model"]["response"]["status_code"] == 400
    assert errors["bad-model"]["response"]["body"]["error"]["code"]
    # the lines went through the planner: Bastion's key and model, never the app's key
    sent = [e for e in sandbox.journal() if e["path"] == "/v1/chat/completions"]
    assert len(sent) == 5
    assert all("sk-app" not in json.dumps(e) for e in sent)
    paths = {e["path"] for e in sandbox.journal()}
    assert not any(p.startswith(("/v1/files", "/v1/batches")) for p in paths), paths
    # retrieve, list, delete
    meta = client.files.retrieve(batch.output_file_id)
    assert meta.purpose == "batch_output" and meta.bytes > 0
    assert batch.id in [b.id for b in client.batches.list()]
    assert batch.input_file_id in [f.id for f in client.files.list(purpose="batch")]
    with pytest.raises(openai.ConflictError):  # finished: nothing to cancel
        client.batches.cancel(batch.id)
    assert client.files.delete(batch.input_file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.input_file_id)
    log = [json.loads(line) for line in batch_proxy.access_log.read_text().splitlines()]
    marked = [r for r in log if any("batch line: " + batch.id in n for n in r["notes"])]
    assert len(marked) == 6 and {r["status"] for r in marked} == {200, 400}
    (upload,) = [r for r in log if r["path"] == "/v1/files" and r["method"] == "POST"]
    assert upload["destination"] == "proxy" and upload["status"] == 200
    assert upload["bytes_in"] > 0 and upload["endpoint"] == "files"
    metrics = batch_proxy.metrics()
    assert 'bastion_edge_batch_lines_total{outcome="completed"} 5.0' in metrics
    assert 'bastion_edge_batch_lines_total{outcome="failed"} 1.0' in metrics
    assert "bastion_edge_batch_queue_depth" in metrics


def test_embeddings_batch(batch_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(monkeypatch, batch_proxy)
    lines = [{"custom_id": f"emb-{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
             for i in range(3)]
    batch = run_batch(client, lines, "/v1/embeddings")
    assert batch.status == "completed" and batch.request_counts.completed == 3
    assert batch.error_file_id is None
    output = by_custom_id(client.files.content(batch.output_file_id).content)
    assert sorted(output) == ["emb-0", "emb-1", "emb-2"]
    assert all(row["response"]["body"]["data"][0]["embedding"] for row in output.values())


def test_invalid_input_fails_validation(batch_proxy: Proxy,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(monkeypatch, batch_proxy)
    lines = [chat_line("same", "a"), chat_line("same", "b")]
    batch = run_batch(client, lines, "/v1/chat/completions")
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors and batch.errors.data[0].code == "duplicate_custom_id"
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/images",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")


def test_sandbox_rejects_files_and_batches_as_bastion_does(sandbox: Sandbox) -> None:
    """The proxy, not the sandbox, answers these: Bastion has neither API."""
    from harness import BASTION_KEY

    auth = {"authorization": f"Bearer {BASTION_KEY}"}
    with sandbox.client() as c:
        for method, path in (("GET", "/v1/files"), ("POST", "/v1/files"),
                             ("GET", "/v1/files/file-x/content"), ("GET", "/v1/batches"),
                             ("POST", "/v1/batches"), ("POST", "/v1/batches/b/cancel")):
            reply = c.request(method, f"https://127.0.0.1:{sandbox.port}{path}", headers=auth)
            assert reply.status_code in (404, 405), (method, path, reply.status_code)
            assert reply.json()["error"]["code"] == "unknown_url"


def test_one_app_cannot_see_another_apps_files_or_batches(
    batch_proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = make_client(monkeypatch, batch_proxy)
    other = mine.with_options(api_key=OTHER_APP_KEY)
    batch = run_batch(mine, [chat_line("a-1", "app A's line")], "/v1/chat/completions")
    assert batch.status == "completed"
    for file_id in (batch.input_file_id, batch.output_file_id):
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(file_id)
        with pytest.raises(openai.NotFoundError):
            other.files.delete(file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):  # B cannot run a batch over A's file
        other.batches.create(input_file_id=batch.input_file_id,
                             endpoint="/v1/chat/completions", completion_window="24h")
    assert other.files.list().data == [] and other.batches.list().data == []
    assert mine.files.retrieve(batch.input_file_id).id == batch.input_file_id


ONE_AT_A_TIME = "  concurrency: 1\n"  # no rate limit: the sandbox's hold paces the lines


def _hold(sandbox: Sandbox, method: str, tail: str = "",
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    with sandbox.client() as c:
        reply = c.request(method, f"https://127.0.0.1:{sandbox.port}/sandbox/hold{tail}",
                          json=body)
    reply.raise_for_status()
    state: dict[str, Any] = reply.json()
    return state


@contextmanager
def held_lines(sandbox: Sandbox, allowed: int) -> Iterator[None]:
    """Chat lines after the first `allowed` wait at the sandbox's door until let in."""
    _hold(sandbox, "PUT", body={"path": "/v1/chat/completions", "pass": allowed})
    try:
        yield
    finally:
        _hold(sandbox, "DELETE")


def let_in_one_by_one(sandbox: Sandbox, until: Callable[[], bool], what: str) -> None:
    """Let waiting lines in, one at a time, until `until()`. A line goes on only once
    the one before it has gone in and it is seen waiting, so the proxy runs no more
    lines than it starts before it notices (the cancel, the SIGTERM); no rate limit
    is slept through."""
    def step() -> bool:
        if until():
            return True
        state = _hold(sandbox, "GET")
        if state["waiting"] and state["passed"] == state["allowed"]:
            _hold(sandbox, "POST", "/pass")
        return False

    wait_until(step, what=what)


def sent_texts(sandbox: Sandbox) -> list[str]:
    return [json.loads(e["body"])["messages"][0]["content"] for e in sandbox.journal()
            if e["path"] == "/v1/chat/completions"]


def wait_for_completed(client: openai.OpenAI, batch_id: str, at_least: int) -> None:
    wait_until(lambda: client.batches.retrieve(batch_id).request_counts.completed  # type: ignore[union-attr]
               >= at_least, timeout=60, what=f"{at_least} lines done")


def test_cancel_mid_run(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch,
                        tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox),
                        rules=rules_file(tmp_path, ONE_AT_A_TIME))
    try:
        client = make_client(monkeypatch, proxy)
        sandbox.clear_journal()
        lines = [chat_line(f"c-{i}", f"cancel-test {i}") for i in range(40)]
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))),
                                       purpose="batch")
        with held_lines(sandbox, 2):
            batch = client.batches.create(input_file_id=uploaded.id,
                                          endpoint="/v1/chat/completions",
                                          completion_window="24h")
            wait_for_completed(client, batch.id, 2)
            cancelling = client.batches.cancel(batch.id)
            assert cancelling.status in ("cancelling", "cancelled")
            let_in_one_by_one(sandbox, lambda: client.batches.retrieve(batch.id).status
                              == "cancelled", "the batch to be cancelled")
        done = finished(client, batch.id)
        assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
        completed = done.request_counts.completed
        assert 2 <= completed < 40
        output = by_custom_id(client.files.content(done.output_file_id).content)
        assert len(output) == completed
        assert sorted(sent_texts(sandbox)) == sorted(
            f"cancel-test {c.removeprefix('c-')}" for c in output)
    finally:
        assert proxy.process.stop() == 0


def test_restart_mid_run_loses_and_repeats_no_line(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rules = rules_file(tmp_path, ONE_AT_A_TIME)
    proxy = start_proxy(tmp_path, proxy_env(sandbox), rules=rules)
    lines = [chat_line(f"r-{i}", f"restart-test {i}") for i in range(16)]
    sandbox.clear_journal()
    try:
        client = make_client(monkeypatch, proxy)
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))),
                                       purpose="batch")
        with held_lines(sandbox, 3):
            batch = client.batches.create(input_file_id=uploaded.id,
                                          endpoint="/v1/chat/completions",
                                          completion_window="24h")
            wait_for_completed(client, batch.id, 3)
            proxy.process.popen.send_signal(signal.SIGTERM)  # mid-run
            let_in_one_by_one(sandbox, lambda: proxy.process.popen.poll() is not None,
                              "the proxy to exit")
    finally:
        assert proxy.process.stop() == 0
    before = len(sent_texts(sandbox))
    assert 3 <= before < 16
    again = start_proxy(tmp_path, proxy_env(sandbox), rules=rules)
    try:
        client = make_client(monkeypatch, again)
        done = finished(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 16
        output = by_custom_id(client.files.content(done.output_file_id).content)
        assert sorted(output) == sorted(line["custom_id"] for line in lines)
        sent = sent_texts(sandbox)
        assert sorted(sent) == sorted(f"restart-test {i}" for i in range(16))  # each once
    finally:
        assert again.process.stop() == 0


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_large_upload_memory_stays_bounded(
    batch_proxy: Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ~200 MB upload streams to disk: the proxy's peak RSS rises far less than that."""
    client = make_client(monkeypatch, batch_proxy)
    big = tmp_path / "big.jsonl"
    line = json.dumps(chat_line("id", "x" * 1000)).encode() + b"\n"
    with open(big, "wb") as f:
        for _ in range((200 * 1024 * 1024) // len(line)):
            f.write(line)
    size = big.stat().st_size
    pid = batch_proxy.process.popen.pid
    client.files.list()  # warm: the batch server, TLS to the app
    before = _rss_kib(pid, "VmRSS")
    with open(big, "rb") as f:
        uploaded = client.files.create(file=("big.jsonl", f), purpose="user_data")
    peak = _rss_kib(pid, "VmHWM")
    assert uploaded.bytes == size
    rise_mib = (peak - before) / 1024
    print(f"upload of {size} B: peak RSS rose {rise_mib:.1f} MiB from {before // 1024} MiB")
    assert rise_mib < size / (1024 * 1024) / 4, f"peak RSS rose {rise_mib:.0f} MiB"
    stored = next((batch_proxy.confdir / "batch-files").glob(uploaded.id))
    assert stored.stat().st_size == size
    assert client.files.retrieve(uploaded.id).bytes == size


def test_upload_over_the_size_limit_is_refused(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox),
                        rules=rules_file(tmp_path, "  max_file_bytes: 1000\n"))
    try:
        client = make_client(monkeypatch, proxy)
        with pytest.raises(openai.APIStatusError) as info:
            client.files.create(file=("in.jsonl", io.BytesIO(b"x" * 5000)), purpose="batch")
        assert info.value.status_code == 413
        assert list((proxy.confdir / "batch-files").iterdir()) == []
    finally:
        assert proxy.process.stop() == 0


# ------------------------------------------------------------------ Redis, two replicas


def test_two_proxies_sharing_redis_take_over_without_repeating_a_line(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import redis
    from redis_server import running_redis

    with running_redis(tmp_path) as url:
        rules = rules_file(tmp_path, f"  store: {url}\n{ONE_AT_A_TIME}")
        env = proxy_env(sandbox)
        one = start_proxy(tmp_path / "one", env, rules=rules)
        two = start_proxy(tmp_path / "two", env, rules=rules)
        proxies = {one.process.popen.pid: one, two.process.popen.pid: two}
        sandbox.clear_journal()
        lines = [chat_line(f"s-{i}", f"shared-test {i}") for i in range(14)]
        try:
            on_one, on_two = make_client(monkeypatch, one), make_client(monkeypatch, two)
            uploaded = on_one.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))),
                                           purpose="batch")
            with held_lines(sandbox, 3):
                batch = on_two.batches.create(input_file_id=uploaded.id,  # two sees it
                                              endpoint="/v1/chat/completions",
                                              completion_window="24h")
                wait_for_completed(on_one, batch.id, 3)
                with redis.Redis.from_url(url) as r:
                    holder = r.get(f"bastion-edge:batches:lease:{batch.id}")
                assert holder is not None
                first = proxies.pop(int(holder.decode().split(":")[1]))
                first.process.popen.send_signal(signal.SIGTERM)
                let_in_one_by_one(sandbox, lambda: first.process.popen.poll() is not None,
                                  "the lease holder to exit")
            assert first.process.stop() == 0  # the runner stopped; its lease is released
            (survivor,) = proxies.values()
            client = make_client(monkeypatch, survivor)
            done = finished(client, batch.id)
            assert done.status == "completed" and done.request_counts.completed == 14
            output = by_custom_id(client.files.content(done.output_file_id).content)
            assert sorted(output) == sorted(line["custom_id"] for line in lines)
            assert sorted(sent_texts(sandbox)) == sorted(f"shared-test {i}" for i in range(14))
            ran = [sum(1 for line in p.access_log.read_text().splitlines()
                       if f"batch line: {batch.id}" in line) for p in (first, survivor)]
            assert all(n > 0 for n in ran) and sum(ran) == 14, ran
            assert not (one.confdir / "batches.sqlite3").exists()
        finally:
            for proxy in (one, two):
                proxy.process.stop()


def test_files_encrypted_at_rest_and_batches_survive_restart(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cryptography.fernet import Fernet

    rules = rules_file(tmp_path, "  encryption_key_env: BATCH_KEY\n")
    env = proxy_env(sandbox, BATCH_KEY=Fernet.generate_key().decode())
    proxy = start_proxy(tmp_path, env, rules=rules)
    try:
        client = make_client(monkeypatch, proxy)
        batch = run_batch(client, [chat_line("enc-1", "a secret line zanzibar")],
                          "/v1/chat/completions")
        assert batch.status == "completed"
        blobs = proxy.confdir / "batch-files"
        for file_id in (batch.input_file_id, batch.output_file_id):
            stored = (blobs / file_id).read_bytes()
            assert b"zanzibar" not in stored and b"custom_id" not in stored
        assert b"zanzibar" in client.files.content(batch.input_file_id).content
        output = by_custom_id(client.files.content(batch.output_file_id).content)
        assert output["enc-1"]["response"]["status_code"] == 200
        database = proxy.confdir / "batches.sqlite3"
        assert database.stat().st_mode & 0o777 == 0o600
        assert (blobs.stat().st_mode & 0o777) == 0o700
    finally:
        assert proxy.process.stop() == 0
    again = start_proxy(tmp_path, env, rules=rules)
    try:
        client = make_client(monkeypatch, again)
        assert client.batches.retrieve(batch.id).status == "completed"
        assert b"zanzibar" in client.files.content(batch.input_file_id).content
        with sqlite3.connect(again.confdir / "batches.sqlite3") as db:
            (count,) = db.execute("SELECT COUNT(*) FROM results").fetchone()
        assert count == 0  # per-line results dropped once the output files are written
    finally:
        assert again.process.stop() == 0

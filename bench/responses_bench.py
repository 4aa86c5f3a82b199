"""Responses state: what chaining costs, and how fast the stores take writes.

`expanded_request_latency()` builds a conversation of `turns` responses through a real
`bastion-edge run` (sandbox upstream), then times, one request at a time, the next turn
sent two ways: chained with `previous_response_id` (the proxy expands it), and with the
same full conversation sent by the app itself. Both are stored, so the difference is
the expansion: the chain read, the re-encoded body, the larger capture. Milliseconds,
medians.

`store_writes_per_second()` puts `count` typical records (~2 KB: a user turn, an
assistant reply, its response object), 64 at a time, straight into each store:
SQLite, SQLite with encryption at rest, and Redis when `redis-server` is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from bastion_edge.rehearsal.localrun import (
    Proxy,
    free_port,
    proxy_env,
    start_proxy,
    start_sandbox,
    wait_until,
)
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.state.records import StoredResponse
from bastion_edge.state.responses_redis import RedisStore
from bastion_edge.state.responses_sqlite import SqliteStore
from bastion_edge.state.responses_store import ResponseStore, Retention

REPO = Path(__file__).resolve().parents[1]
URL = "https://api.openai.com/v1/responses"
SENTENCE = "Tell me one more thing about the history of the city, briefly. "


@contextlib.contextmanager
def _proxy(tmp: Path) -> Iterator[Proxy]:
    sandbox = start_sandbox(tmp)
    try:
        edge = start_proxy(tmp / "edge", proxy_env(sandbox), REPO / "rules.yaml")
        try:
            yield edge
        finally:
            edge.process.stop()
    finally:
        sandbox.process.stop()


def _client(edge: Proxy) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(edge.confdir / "mitmproxy-ca-cert.pem"))
    return httpx.Client(proxy=edge.url, verify=verify, timeout=30,
                        headers={"Authorization": "Bearer sk-bench-responses"})


def _post(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    reply = client.post(URL, json=body)
    elapsed = time.perf_counter() - started
    reply.raise_for_status()
    answer: dict[str, Any] = reply.json()
    return elapsed, answer


def expanded_request_latency(turns: int = 20, samples: int = 30,
                             edge: Proxy | None = None) -> dict[str, float]:
    """Median ms of a chained turn vs. the same conversation sent in full by the app."""
    if edge is None:
        with tempfile.TemporaryDirectory(prefix="bastion-responses-bench-") as tmp, \
                _proxy(Path(tmp)) as started:
            return expanded_request_latency(turns, samples, started)
    with _client(edge) as client:
        history: list[dict[str, Any]] = []
        previous = None
        for turn in range(turns):
            text = f"{turn}: {SENTENCE}"
            body: dict[str, Any] = {"model": "gpt-4o", "input": text}
            if previous:
                body["previous_response_id"] = previous
            _, answer = _post(client, body)
            previous = answer["id"]
            history += [{"type": "message", "role": "user", "content": text}, *answer["output"]]
        chained = {"model": "gpt-4o", "input": "and now?", "previous_response_id": previous}
        full = {"model": "gpt-4o", "input": [*history, {"role": "user", "content": "and now?"}]}
        plain, expanded = [], []
        for _ in range(samples):  # interleaved, so drift affects both alike
            plain.append(_post(client, full)[0])
            expanded.append(_post(client, chained)[0])
    plain_ms = statistics.median(plain) * 1000
    expanded_ms = statistics.median(expanded) * 1000
    return {"turns": turns, "plain_ms": round(plain_ms, 2), "expanded_ms": round(expanded_ms, 2),
            "added_ms": round(expanded_ms - plain_ms, 2)}


def _record(partition: str) -> StoredResponse:
    rid = f"resp_{uuid.uuid4().hex}"
    reply = SENTENCE * 12
    return StoredResponse(
        id=rid, partition=partition, created_at=time.time(), previous_response_id=None,
        ancestors=(), input_items=({"role": "user", "content": SENTENCE * 4},),
        input_item_ids=(f"msg_{uuid.uuid4().hex}",),
        response={"id": rid, "object": "response", "model": "gpt-oss-120b",
                  "status": "completed", "store": True, "metadata": {},
                  "output": [{"id": f"msg_{uuid.uuid4().hex}", "type": "message",
                              "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": reply,
                                           "annotations": []}]}]})


async def _writes_per_second(store: ResponseStore, count: int, concurrency: int = 64) -> float:
    records = [_record("bench-app") for _ in range(count)]
    started = time.perf_counter()
    for i in range(0, count, concurrency):
        await asyncio.gather(*(store.put(r) for r in records[i:i + concurrency]))
    rate = count / (time.perf_counter() - started)
    await store.close()
    return round(rate)


@contextlib.contextmanager
def _redis_server(workdir: Path) -> Iterator[str | None]:
    server = shutil.which("redis-server")
    if server is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                   is None, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def store_writes_per_second(count: int = 2000) -> dict[str, float]:
    """Records stored per second, per store (Redis only if redis-server is installed)."""
    retention = Retention(ttl_seconds=3600, max_responses=count * 10)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bastion-responses-bench-") as tmp_name:
        tmp = Path(tmp_name)
        results["sqlite"] = asyncio.run(_writes_per_second(
            SqliteStore(tmp / "plain.sqlite3", retention, BodyCipher()), count))
        cipher = BodyCipher((Fernet.generate_key(),))
        results["sqlite_encrypted"] = asyncio.run(_writes_per_second(
            SqliteStore(tmp / "sealed.sqlite3", retention, cipher), count))
        with _redis_server(tmp) as url:
            if url is not None:
                results["redis"] = asyncio.run(_writes_per_second(
                    RedisStore(url, retention, BodyCipher()), count))
    return results


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(json.dumps({
        "expanded_request_latency": expanded_request_latency(samples=5 if quick else 30),
        "store_writes_per_second": store_writes_per_second(200 if quick else 2000),
    }, indent=2))

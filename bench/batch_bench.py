"""Batch API benchmark: a 10,000-line chat batch through `bastion-edge run` (sandbox
upstream), against the same requests sent live at the same concurrency.

    make bench-batch            (or: python bench/batch_bench.py [--lines N] [--readme])

Reports lines per second, the proxy's RSS, and the proxy's CPU per line for both ways
(the overhead a batch line adds over a live request: planning, the store writes, the
output files). Client, sandbox and proxy share the machine; numbers are one run's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bastion_edge.rehearsal.localrun import Proxy, proxy_env, start_proxy, start_sandbox

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 16
CHAT = "https://api.openai.com/v1/chat/completions"


def line(i: int) -> dict[str, Any]:
    return {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 16,
                     "messages": [{"role": "user", "content": f"Summarise item {i}."}]}}


def proc(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS KiB, peak RSS KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return cpu, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def client(edge: Proxy) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(edge.confdir / "mitmproxy-ca-cert.pem"))
    return httpx.Client(proxy=edge.url, verify=verify, timeout=60,
                        headers={"Authorization": "Bearer sk-bench-batch"})


def run_batch(edge: Proxy, count: int) -> dict[str, float]:
    pid = edge.process.popen.pid
    data = b"".join(json.dumps(line(i)).encode() + b"\n" for i in range(count))
    with client(edge) as c:
        uploaded = c.post("https://api.openai.com/v1/files", data={"purpose": "batch"},
                          files={"file": ("bench.jsonl", io.BytesIO(data))}).json()
        cpu0, rss0, _ = proc(pid)
        started = time.perf_counter()
        batch = c.post("https://api.openai.com/v1/batches", json={
            "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}).json()
        while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.2)
            batch = c.get(f"https://api.openai.com/v1/batches/{batch['id']}").json()
        elapsed = time.perf_counter() - started
        cpu1, rss1, peak = proc(pid)
        assert batch["status"] == "completed", batch
        assert batch["request_counts"]["completed"] == count, batch["request_counts"]
        out = c.get(f"https://api.openai.com/v1/files/{batch['output_file_id']}/content")
        assert len(out.content.splitlines()) == count
    return {"seconds": elapsed, "per_second": count / elapsed,
            "cpu_ms_per_line": (cpu1 - cpu0) * 1000 / count,
            "rss_before_mib": rss0 / 1024, "rss_after_mib": rss1 / 1024,
            "rss_peak_mib": peak / 1024, "input_mib": len(data) / 2**20}


async def run_live(edge: Proxy, count: int) -> dict[str, float]:
    pid = edge.process.popen.pid
    verify = ssl.create_default_context(cafile=str(edge.confdir / "mitmproxy-ca-cert.pem"))
    queue = iter(range(count))
    async with httpx.AsyncClient(proxy=edge.url, verify=verify, timeout=60, headers={
            "Authorization": "Bearer sk-bench-batch"},
            limits=httpx.Limits(max_connections=CONCURRENCY)) as c:
        async def worker() -> None:
            for i in queue:
                reply = await c.post(CHAT, json=line(i)["body"])
                assert reply.status_code == 200, reply.text

        cpu0, _, _ = proc(pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        cpu1, _, _ = proc(pid)
    return {"seconds": elapsed, "per_second": count / elapsed,
            "cpu_ms_per_line": (cpu1 - cpu0) * 1000 / count}


def table(count: int, batch: dict[str, float], live: dict[str, float]) -> str:
    return "\n".join([
        f"One run, {time.strftime('%Y-%m-%d')}, on a shared 2-core machine (client, sandbox "
        f"and proxy on the same cores; other work running): {count:,} chat lines "
        f"({batch['input_mib']:.1f} MiB input), `batches.concurrency: {CONCURRENCY}`, "
        "no rate limit, SQLite store.",
        "",
        "| | batch (Files + Batch API) | same requests live, "
        f"{CONCURRENCY} concurrent |",
        "|---|---|---|",
        f"| wall time | {batch['seconds']:.1f} s | {live['seconds']:.1f} s |",
        f"| lines / requests per second | {batch['per_second']:.0f} | "
        f"{live['per_second']:.0f} |",
        f"| proxy CPU per line | {batch['cpu_ms_per_line']:.2f} ms | "
        f"{live['cpu_ms_per_line']:.2f} ms |",
        f"| proxy RSS before / after / peak | {batch['rss_before_mib']:.0f} / "
        f"{batch['rss_after_mib']:.0f} / {batch['rss_peak_mib']:.0f} MiB | |",
    ])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-batch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox = start_sandbox(tmp)
        try:
            rules = tmp / "rules.yaml"
            rules.write_text((REPO / "rules.yaml").read_text()
                             + f"\nbatches:\n  concurrency: {CONCURRENCY}\n")
            edge = start_proxy(tmp / "edge", proxy_env(sandbox), rules)
            try:
                batch = run_batch(edge, args.lines)
                live = asyncio.run(run_live(edge, args.lines))
            finally:
                edge.process.stop()
        finally:
            sandbox.process.stop()
    text = table(args.lines, batch, live)
    print(text)
    if args.readme:
        content = args.readme.read_text()
        block = f"<!-- batch-bench:start -->\n{text}\n<!-- batch-bench:end -->"
        content = re.sub(r"<!-- batch-bench:start -->.*?<!-- batch-bench:end -->",
                         lambda _: block, content, flags=re.S)
        args.readme.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())

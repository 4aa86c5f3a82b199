"""Long-stream load: N concurrent chat streams, each `EVENTS` SSE events `PACE_MS` apart.

Paths, side by side against one sandbox: direct; bare mitmdump made to stream
(`stream_large_bodies=1`, else it buffers whole replies); `bastion-edge run` with one
worker; and with one worker per core. For every N and path: time to first event
(TTFT) p50/p99, the largest gap between two reads of a stream, stream duration p99,
errors, proxy CPU per stream and per event (the process tree: a pool's parent and
workers), peak RSS of that tree, and the CPU of the load generator (this process,
aiohttp) and of the sandbox. A path breaks at the first N where p99 TTFT exceeds 1 s
or any stream fails.

Also here: small requests at concurrency 64, one worker vs one worker per core, in
alternating rounds, ratio per round (the `--workers` throughput target).
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

EVENTS = 100
PACE_MS = 20
BREAK_TTFT_S = 1.0
STREAM_TIMEOUT_S = 60.0
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float]:
    """(parent pid, user+system CPU seconds) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def tree(pid: int) -> list[int]:
    """`pid` and its direct children (a pool's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _stat(int(entry.name))[0] == pid:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return [pid, *children]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += _stat(pid)[1]
        except OSError:
            continue
    return total


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class StreamResult:
    ttft: float
    max_gap: float
    duration: float
    events: int
    error: str = ""


async def one_stream(session: aiohttp.ClientSession, path: Any, url: str,
                     body: dict[str, object], count: int = EVENTS,
                     pace_ms: int = PACE_MS) -> StreamResult:
    started = time.perf_counter()
    first = last = 0.0
    max_gap = 0.0
    events = 0
    tail = b""  # "data: " may be split across two reads
    try:
        async with session.post(
                url, json=body, proxy=path.proxy, ssl=path.ssl,
                headers={**path.auth, "x-sandbox-stream-events": str(count),
                         "x-sandbox-token-delay-ms": str(pace_ms)}) as reply:
            if reply.status != 200:
                return StreamResult(0, 0, 0, 0, f"status {reply.status}")
            async for chunk in reply.content.iter_any():
                now = time.perf_counter()
                if not first:
                    first = now
                elif now - last > max_gap:
                    max_gap = now - last
                last = now
                joined = tail + chunk
                events += joined.count(b"data: ")
                tail = joined[-5:]
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return StreamResult(0, 0, 0, events, type(e).__name__)
    expected = count + 3  # role chunk, N deltas, the stop chunk, [DONE]
    error = "" if events == expected else f"{events}/{expected} events"
    return StreamResult(first - started, max_gap, last - started, events, error)


async def streams_once(path: Any, n: int) -> dict[str, float]:
    """N concurrent streams through `path`; proxy CPU, RSS peak and client CPU."""
    pids = tree(path.pid) if path.pid else []
    sandbox_pid = path.sandbox_pid
    body = {**path.body, "stream": True}
    url = f"{path.base}/chat/completions"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S)
    peak = 0.0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mib(pids))
            await asyncio.sleep(0.05)

    proxy_before, client_before = cpu_seconds(pids), own_cpu()
    boxes = [sandbox_pid] if sandbox_pid else []
    sandbox_before = cpu_seconds(boxes)
    sampler = asyncio.create_task(sample())
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(one_stream(session, path, url, body)
                                         for _ in range(n)))
    stop.set()
    await sampler
    proxy_cpu = cpu_seconds(pids) - proxy_before
    ok = [r for r in results if not r.error]
    errors = len(results) - len(ok)
    ttfts = sorted(r.ttft for r in ok) or [float("inf")]
    return {
        "ttft_p50_ms": _pct(ttfts, 0.5), "ttft_p99_ms": _pct(ttfts, 0.99),
        "max_gap_ms": max((r.max_gap for r in ok), default=0.0) * 1000,
        "duration_p99_ms": _pct(sorted(r.duration for r in ok) or [0.0], 0.99),
        "errors": float(errors),
        "cpu_ms_per_stream": proxy_cpu / n * 1000 if pids else 0.0,
        "cpu_us_per_event": proxy_cpu / (n * EVENTS) * 1e6 if pids else 0.0,
        "peak_rss_mib": peak,
        "client_cpu_s": own_cpu() - client_before,
        "sandbox_cpu_s": cpu_seconds(boxes) - sandbox_before,
    }


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def marginal_event_cost(path: Any, streams: int = 50, short: int = 20,
                              long: int = 220, pace_ms: int = 5) -> float:
    """Proxy CPU per extra relayed event (µs): the same streams with `long` and with
    `short` events, so connection set-up (CONNECT, two TLS handshakes) cancels out."""
    pids = tree(path.pid)
    body = {**path.body, "stream": True}
    url = f"{path.base}/chat/completions"

    async def run(count: int) -> float:
        before = cpu_seconds(pids)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            done = await asyncio.gather(*(one_stream(session, path, url, body, count, pace_ms)
                                          for _ in range(streams)))
        assert not [r.error for r in done if r.error], "streams failed"
        return cpu_seconds(pids) - before

    short_cpu, long_cpu = [], []
    for _ in range(3):
        short_cpu.append(await run(short))
        long_cpu.append(await run(long))
    extra = statistics.median(long_cpu) - statistics.median(short_cpu)
    return extra / (streams * (long - short)) * 1e6


def broken(result: dict[str, float]) -> bool:
    return result["errors"] > 0 or result["ttft_p99_ms"] > BREAK_TTFT_S * 1000


async def measure_streams(paths: list[Any], counts: list[int],
                          log: Any) -> dict[int, dict[str, dict[str, float]]]:
    """Every N, every path (order alternating per N; a path that broke still runs, so
    the tables show how it degrades), a short pause between runs so one path's
    stragglers do not land on the next."""
    for path in paths:  # warm: the first connection through a proxy makes its certificate
        await streams_once(path, 4)
    results: dict[int, dict[str, dict[str, float]]] = {}
    for i, n in enumerate(counts):
        results[n] = {}
        for path in paths if i % 2 == 0 else paths[::-1]:
            result = await streams_once(path, n)
            results[n][path.name] = result
            log(f"streams N={n} {path.name}: "
                + ", ".join(f"{k}={v:.1f}" for k, v in result.items()))
            await asyncio.sleep(1.0)
    return results


def breaking_points(results: dict[int, dict[str, dict[str, float]]],
                    names: list[str]) -> dict[str, str]:
    points = {}
    for name in names:
        broke = [n for n, by_path in results.items()
                 if name in by_path and broken(by_path[name])]
        points[name] = f"N={broke[0]}" if broke else f"> {max(results)}"
    return points


async def small_request_ratio(one: Any, many: Any, rounds: int, seconds: float,
                              throughput: Any) -> dict[str, float]:
    """Requests/s at concurrency 64, one worker vs one per core, ratio per round; and the
    CPU per request of each party (proxy, sandbox, load generator), the set-up of each
    round's 64 connections included: on 2 cores the sandbox and the load generator take
    CPU the second worker would need."""
    singles, pools, ratios = [], [], []
    cpu: dict[str, list[float]] = {"one_us": [], "pool_us": [], "sandbox_us": [],
                                   "loadgen_us": []}
    for i in range(rounds):
        order = (one, many) if i % 2 == 0 else (many, one)
        got = {}
        for path in order:
            pids = tree(path.pid)
            before = cpu_seconds(pids), cpu_seconds([path.sandbox_pid]), own_cpu()
            got[path.name] = rps = await throughput(path, 64, seconds)
            after = cpu_seconds(tree(path.pid)), cpu_seconds([path.sandbox_pid]), own_cpu()
            served = rps * seconds + 64  # the timed requests and each connection's first
            per_request = [(b - a) / served * 1e6 for a, b in zip(before, after, strict=True)]
            cpu["one_us" if path is one else "pool_us"].append(per_request[0])
            if path is many:
                cpu["sandbox_us"].append(per_request[1])
                cpu["loadgen_us"].append(per_request[2])
        singles.append(got[one.name])
        pools.append(got[many.name])
        ratios.append(got[many.name] / got[one.name])
    return {"one_rps": statistics.median(singles), "pool_rps": statistics.median(pools),
            "ratio": statistics.median(ratios),
            **{k: statistics.median(v) for k, v in cpu.items()}}


ROWS = [
    ("TTFT p50 (ms)", "ttft_p50_ms", "{:.0f}"),
    ("TTFT p99 (ms)", "ttft_p99_ms", "{:.0f}"),
    ("max gap between reads (ms)", "max_gap_ms", "{:.0f}"),
    ("stream duration p99 (ms)", "duration_p99_ms", "{:.0f}"),
    ("errors", "errors", "{:.0f}"),
    ("proxy CPU per stream (ms)", "cpu_ms_per_stream", "{:.1f}"),
    ("proxy CPU per event (µs)", "cpu_us_per_event", "{:.0f}"),
    ("proxy peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
    ("load generator CPU (s)", "client_cpu_s", "{:.2f}"),
    ("sandbox CPU (s)", "sandbox_cpu_s", "{:.2f}"),
]


def streams_table(results: dict[int, dict[str, dict[str, float]]], names: list[str],
                  small: dict[str, float] | None, workers: int,
                  marginal: dict[str, float] | None = None) -> str:
    out = [f"N concurrent chat streams, each {EVENTS} SSE events {PACE_MS} ms apart "
           "(2 s). TTFT includes the CONNECT and both TLS handshakes of a new connection.", ""]
    for n, by_path in results.items():
        out += [f"**N = {n}**", "", "| measure | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names)]
        for label, key, fmt in ROWS:
            cells = [fmt.format(by_path[name][key]) if name in by_path else "-"
                     for name in names]
            if key.startswith(("cpu_", "peak_")):
                cells[0] = "-" if names[0] == "direct" else cells[0]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    points = breaking_points(results, names)
    out.append("Breaking point (p99 TTFT over 1 s, or any error): "
               + ", ".join(f"{name} {point}" for name, point in points.items()) + ".")
    if marginal:
        out += ["", "Proxy CPU per extra relayed event (50 streams of 220 minus 20 events, "
                "5 ms apart; connection set-up cancels out): "
                + ", ".join(f"{name} {us:.0f} µs" for name, us in marginal.items()) + "."]
    if small:
        out += ["", f"Small requests at concurrency 64: one worker {small['one_rps']:.0f} "
                f"req/s, {workers} workers {small['pool_rps']:.0f} req/s, ratio per round "
                f"(median) **{small['ratio']:.2f}x** (target >= 1.4). CPU per request "
                f"(median, connection set-up included): one worker {small['one_us']:.0f} µs, "
                f"the pool {small['pool_us']:.0f} µs, sandbox {small['sandbox_us']:.0f} µs, "
                f"load generator {small['loadgen_us']:.0f} µs."]
    return "\n".join(out)

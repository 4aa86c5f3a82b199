"""`make bench`: direct vs bare mitmdump vs bastion-edge, side by side in one run.

All paths talk real TLS to the same sandbox on this machine:
  direct         client -> sandbox
  mitmdump       client -> plain mitmdump (intercepting) -> sandbox
  bastion-edge   client -> `bastion-edge run` (api.openai.com rewritten) -> sandbox
  mitmdump -s    client -> mitmdump with the bastion-edge addon script -> sandbox
`bastion-edge run` is the product; `mitmdump -s` carries the same addon on top of all
of mitmdump's default addons, so it shows what the addon itself costs.
The client is aiohttp (cheaper per request than the proxies, so it is not the
bottleneck). Results go to stdout as a Markdown table and, with --readme, into that
file (docs/development/benchmarks.md) between the bench markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import canary_sim
import fallback_bench
import quota_cost
import responses_bench
import streams_bench
import token_cost
import tts_bench

from bastion_edge.rehearsal.localrun import (
    BIN,
    DEMO_BASTION_KEY,
    Process,
    Sandbox,
    free_port,
    proxy_env,
    start,
    start_proxy,
    start_sandbox,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
CHAT_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
SANDBOX_CHAT_BODY = {**CHAT_BODY, "model": "gpt-oss-120b"}
UPLOAD_BYTES = 25 * 1024 * 1024


@dataclass
class Path_:
    name: str
    base: str  # URL the client calls
    proxy: str | None
    ssl: ssl.SSLContext
    body: dict[str, object]
    pid: int | None = None
    key: str = DEMO_BASTION_KEY  # direct and mitmdump talk to Bastion with its key
    sandbox_pid: int | None = None  # the streams bench reports the sandbox's CPU too

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def ssl_context(*cafiles: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cafile in cafiles:
        context.load_verify_locations(str(cafile))
    return context


async def _post(session: aiohttp.ClientSession, path: Path_, url: str, data: object,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with session.post(url, json=data, proxy=path.proxy, ssl=path.ssl,
                            headers={**path.auth, **(headers or {})}) as reply:
        return reply.status, await reply.read()


async def sequential_latency(path: Path_, count: int, reuse: bool) -> list[float]:
    connector = aiohttp.TCPConnector(force_close=not reuse, limit=1)
    timings = []
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{path.base}/chat/completions"
        await _post(session, path, url, path.body)  # warm up
        for _ in range(count):
            started = time.perf_counter()
            status, _ = await _post(session, path, url, path.body)
            timings.append(time.perf_counter() - started)
            assert status == 200, status
    return timings


async def throughput(path: Path_, concurrency: int, seconds: float) -> float:
    """Requests/s over `concurrency` kept-alive connections, steady state: each worker's
    first request opens its connection (CONNECT, both TLS handshakes) before the clock
    starts, so a short window does not count connection set-up against the faster path."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{path.base}/chat/completions"

        async def request() -> None:
            status, _ = await _post(session, path, url, path.body)
            assert status == 200, status

        await asyncio.gather(*(request() for _ in range(concurrency)))
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await request()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def time_to_first_chunk(path: Path_, count: int) -> list[float]:
    timings = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        url = f"{path.base}/chat/completions"
        body = {**path.body, "stream": True}
        for i in range(count + 1):
            started = time.perf_counter()
            async with session.post(url, json=body, proxy=path.proxy, ssl=path.ssl,
                                    headers={**path.auth,
                                             "x-sandbox-token-delay-ms": "20"}) as reply:
                await reply.content.readany()
                first = time.perf_counter() - started
                await reply.read()
            if i:  # the first one warms the connection
                timings.append(first)
    return timings


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def upload(path: Path_) -> dict[str, float]:
    payload = os.urandom(UPLOAD_BYTES)
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1" if "api.openai.com" in path.base else "whisper-large-v3")
    form.add_field("file", payload, filename="big.wav", content_type="audio/wav")
    peak = before = rss_kib(path.pid) if path.pid else 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            if path.pid:
                peak = max(peak, rss_kib(path.pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(f"{path.base}/audio/transcriptions", data=form,
                                proxy=path.proxy, ssl=path.ssl, headers=path.auth) as reply:
            await reply.read()
            assert reply.status == 200, reply.status
        elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    await asyncio.sleep(2)
    after = rss_kib(path.pid) if path.pid else 0
    return {"seconds": elapsed, "growth_mib": (peak - before) / 1024,
            "retained_mib": (after - before) / 1024}


def start_mitmdump(tmp: Path, sandbox: Sandbox, name: str = "mitmdump",
                   extra: list[str] | None = None,
                   env: dict[str, str] | None = None) -> tuple[Process, int]:
    port = free_port()
    process = start(
        [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
         "--set", f"confdir={tmp / name}", "--set", "connection_strategy=lazy",
         "--set", "http2=false", "--set", f"ssl_verify_upstream_trusted_ca={sandbox.ca}",
         *(extra or [])],
        tmp / f"{name}.log", env)
    wait_until(lambda: _port_open(port), what=name)
    return process, port


def start_mitmdump_with_addon(tmp: Path, sandbox: Sandbox) -> tuple[Process, int]:
    """The bastion-edge addon as a mitmdump script, configured like `start_proxy`'s."""
    return start_mitmdump(
        tmp, sandbox, "mitmdump-s",
        ["-s", str(REPO / "addon" / "bastion_edge_addon.py"),
         "--set", f"bastion_rules={REPO / 'rules.yaml'}", "--set", "bastion_metrics_port=0",
         "--set", f"bastion_access_log={tmp / 'mitmdump-s-access.log'}"],
        proxy_env(sandbox))


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(paths: list[Path_], quick: bool) -> dict[str, dict[str, float]]:
    """Each measure runs for every path in turn, in several interleaved rounds whose
    order alternates, so slow drift on the shared 2-core machine hits all paths alike.
    Ratios are taken within a round (neighbours in time), then their median."""
    rounds = 4 if quick else 10
    n = 30 if quick else 60
    reused: dict[str, list[float]] = {p.name: [] for p in paths}
    fresh: dict[str, list[float]] = {p.name: [] for p in paths}
    rps: dict[str, list[float]] = {p.name: [] for p in paths}
    ttft: dict[str, list[float]] = {p.name: [] for p in paths}
    for round_ in range(rounds):
        for path in paths if round_ % 2 == 0 else paths[::-1]:
            reused[path.name] += await sequential_latency(path, n, reuse=True)
            fresh[path.name] += await sequential_latency(path, n // 4, reuse=False)
            rps[path.name].append(await throughput(path, 32, 1.5 if quick else 3))
            ttft[path.name] += await time_to_first_chunk(path, n // 10)
    results: dict[str, dict[str, float]] = {}
    for path in paths:
        up = await upload(path)
        name = path.name
        results[name] = {
            "p50_reused_ms": pct(reused[name], 0.5), "p99_reused_ms": pct(reused[name], 0.99),
            "p50_new_ms": pct(fresh[name], 0.5), "p99_new_ms": pct(fresh[name], 0.99),
            "rps_c32": statistics.median(rps[name]),
            "rps_ratio": statistics.median(
                mine / bare for mine, bare in zip(rps[name], rps["mitmdump"], strict=True)),
            "ttft_ms": statistics.median(ttft[name]) * 1000,
            "upload_s": up["seconds"], "upload_growth_mib": up["growth_mib"],
            "upload_retained_mib": up["retained_mib"],
        }
        print(f"{name}: {json.dumps({k: round(v, 2) for k, v in results[name].items()})}",
              file=sys.stderr, flush=True)
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    rows = [
        ("p50 latency, reused connection (ms)", "p50_reused_ms", "{:.2f}"),
        ("p99 latency, reused connection (ms)", "p99_reused_ms", "{:.2f}"),
        ("p50 latency, new connection (ms)", "p50_new_ms", "{:.2f}"),
        ("p99 latency, new connection (ms)", "p99_new_ms", "{:.2f}"),
        ("throughput at concurrency 32, median of rounds (req/s)", "rps_c32", "{:.0f}"),
        ("throughput / mitmdump's in the same round, median", "rps_ratio", "{:.3f}"),
        ("SSE time to first chunk, median (ms)", "ttft_ms", "{:.2f}"),
        ("25 MB transcription upload (s)", "upload_s", "{:.2f}"),
        ("proxy RSS growth during upload (MiB)", "upload_growth_mib", "{:.1f}"),
        ("proxy RSS kept 2 s after upload (MiB)", "upload_retained_mib", "{:.1f}"),
    ]
    out = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in rows:
        cells = [fmt.format(results[n][key]) if results[n][key] or n != "direct" else "-"
                 for n in names]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    edge, bare, direct = results["bastion-edge"], results["mitmdump"], results["direct"]
    script = results["mitmdump -s"]
    body_mib = UPLOAD_BYTES / 1024 / 1024
    out += [
        "",
        f"- p50 ratio bastion-edge / bare mitmdump (reused): "
        f"**{edge['p50_reused_ms'] / bare['p50_reused_ms']:.3f}** (target <= 1.10)",
        f"- p50 ratio bastion-edge / bare mitmdump (new connection): "
        f"**{edge['p50_new_ms'] / bare['p50_new_ms']:.3f}**",
        f"- throughput ratio bastion-edge / bare mitmdump (same-round pairs): "
        f"**{edge['rps_ratio']:.3f}** (target >= 0.90)",
        f"- the addon alone on all of mitmdump's default addons (`mitmdump -s`): "
        f"p50 ratio {script['p50_reused_ms'] / bare['p50_reused_ms']:.3f}, "
        f"throughput ratio {script['rps_ratio']:.3f}",
        f"- SSE time-to-first-chunk overhead vs direct: "
        f"**{edge['ttft_ms'] - direct['ttft_ms']:.2f} ms** (target <= 5 ms)",
        f"- upload peak RSS growth / body: "
        f"**{edge['upload_growth_mib'] / body_mib:.2f}x** (target <= 2x; bare mitmdump "
        f"{bare['upload_growth_mib'] / body_mib:.2f}x), kept afterwards "
        f"{edge['upload_retained_mib']:.1f} MiB",
    ]
    return "\n".join(out)


TTS_TEXT = ("The quick brown fox jumps over the lazy dog while the migration runs. "
            "Nothing in the application changed at all, and nobody had to redeploy it. Really.")


async def tts_added_latency(sandbox: Sandbox, edge: Path_, count: int) -> dict[str, float]:
    """Median ms: Riva called directly (WAV) vs. OpenAI's speech call through the proxy."""
    riva = f"https://127.0.0.1:{sandbox.port}/api/v1/tts/text_to_audio"
    direct_ssl = ssl_context(sandbox.ca)
    riva_body = {"text": TTS_TEXT, "language_code": "en-US", "encoding": 1,
                 "sample_rate_hz": 22050, "voice_name": "English-US.Female-1"}
    results: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        async def timed(url: str, body: dict[str, object], proxy: str | None,
                        context: ssl.SSLContext, headers: dict[str, str]) -> float:
            started = time.perf_counter()
            async with session.post(url, json=body, proxy=proxy, ssl=context,
                                    headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, reply.status
            return (time.perf_counter() - started) * 1000

        direct = [await timed(riva, riva_body, None, direct_ssl,
                              {"Authorization": f"Bearer {DEMO_BASTION_KEY}"})
                  for _ in range(count)]
        results["riva_direct_ms"] = statistics.median(direct)
        for fmt in ("mp3", "opus", "wav"):
            body = {"model": "tts-1", "voice": "nova", "input": TTS_TEXT, "response_format": fmt}
            runs = [await timed(f"{edge.base}/audio/speech", body, edge.proxy, edge.ssl,
                                edge.auth) for _ in range(count)]
            results[f"proxy_{fmt}_ms"] = statistics.median(runs)
    return results


def tts_table(transcode: dict[str, float], latency: dict[str, float]) -> str:
    from bastion_sandbox import speech_seconds

    out = ["| format | transcoding speed (x real time, 60 s of audio) |", "|---|---|"]
    out += [f"| {fmt} | {speed:.0f}x |" for fmt, speed in transcode.items()]
    clip = speech_seconds(TTS_TEXT)
    out += ["", f"A {clip:.1f} s clip: Riva called directly "
            f"{latency['riva_direct_ms']:.1f} ms; through bastion-edge as "
            + ", ".join(f"{k.split('_')[1]} {v:.1f} ms (+{v - latency['riva_direct_ms']:.1f})"
                        for k, v in latency.items() if k.startswith("proxy_"))
            + " (median)."]
    return "\n".join(out)


def responses_table(expanded: dict[str, float], writes: dict[str, float]) -> str:
    parts = [f"{k} {v:.2f}" for k, v in expanded.items()]
    return ("Responses state: " + ", ".join(parts) + " (ms, median).  \nStore writes/s: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in writes.items()) + ".")


def write_readme(readme: Path, text: str, marker: str = "bench") -> None:
    content = readme.read_text()
    block = f"<!-- {marker}:start -->\n{text}\n<!-- {marker}:end -->"
    content = re.sub(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", lambda _: block,
                     content, flags=re.S)
    readme.write_text(content)


def run_streams(quick: bool) -> str:
    """The long-stream load (bench/streams_bench.py) and the --workers throughput ratio."""
    workers = len(os.sched_getaffinity(0))
    counts = [50, 100] if quick else [50, 100, 250, 500]
    with tempfile.TemporaryDirectory(prefix="bastion-bench-streams-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox = start_sandbox(tmp)
        mitmdump, mitm_port = start_mitmdump(tmp, sandbox, "mitmdump-stream",
                                             ["--set", "stream_large_bodies=1"])
        one = start_proxy(tmp / "edge-1", proxy_env(sandbox), REPO / "rules.yaml")
        pool = start_proxy(tmp / "edge-n", proxy_env(sandbox), REPO / "rules.yaml",
                           ["--workers", str(workers)])
        box = sandbox.process.popen.pid
        try:
            direct_ssl = ssl_context(sandbox.ca)
            paths = [
                Path_("direct", sandbox.base_url, None, direct_ssl, SANDBOX_CHAT_BODY,
                      sandbox_pid=box),
                Path_("mitmdump (streaming)", sandbox.base_url, f"http://127.0.0.1:{mitm_port}",
                      ssl_context(tmp / "mitmdump-stream" / "mitmproxy-ca-cert.pem"),
                      SANDBOX_CHAT_BODY, mitmdump.popen.pid, sandbox_pid=box),
                Path_("bastion-edge, 1 worker", "https://api.openai.com/v1", one.url,
                      ssl_context(one.confdir / "mitmproxy-ca-cert.pem"), CHAT_BODY,
                      one.process.popen.pid, key="sk-bench-app-key", sandbox_pid=box),
                Path_(f"bastion-edge, {workers} workers", "https://api.openai.com/v1",
                      pool.url, ssl_context(pool.confdir / "mitmproxy-ca-cert.pem"), CHAT_BODY,
                      pool.process.popen.pid, key="sk-bench-app-key", sandbox_pid=box),
            ]

            def log(line: str) -> None:
                print(line, file=sys.stderr, flush=True)

            small = asyncio.run(streams_bench.small_request_ratio(
                paths[2], paths[3], 4 if quick else 10, 1.5 if quick else 3, throughput))
            log(f"small requests c64: {small}")
            marginal = {p.name: asyncio.run(streams_bench.marginal_event_cost(p))
                        for p in paths[1:3]}
            log(f"per extra event: {marginal}")
            results = asyncio.run(streams_bench.measure_streams(paths, counts, log))
        finally:
            pool.process.stop()
            one.process.stop()
            mitmdump.stop()
            sandbox.process.stop()
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M')} UTC on {os.cpu_count()} cores "
            f"({workers} usable), one run.\n\n"
            + streams_bench.streams_table(results, [p.name for p in paths], small, workers,
                                          marginal))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readme", type=Path)
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--only", choices=("all", "requests", "streams", "canary", "quota"),
                        default="all",
                        help="requests: the single-request table; streams: long streams "
                             "and --workers; canary: the canary's error rates (simulated); "
                             "quota: the CPU a quota adds per request")
    args = parser.parse_args()
    if args.only in ("all", "canary"):
        canary_text = canary_sim.run(50 if args.quick else 200)
        print(canary_text)
        if args.readme:
            write_readme(args.readme, canary_text, "bench-canary")
        if args.only == "canary":
            return 0
    if args.only in ("all", "quota"):
        quota_text = quota_cost.report(500 if args.quick else 2000, 3 if args.quick else 7)
        print(quota_text)
        if args.readme:
            write_readme(args.readme, quota_text, "bench-quota")
        if args.only == "quota":
            return 0
    if args.only in ("all", "streams"):
        streams_text = run_streams(args.quick)
        print(streams_text)
        if args.readme:
            write_readme(args.readme, streams_text, "bench-streams")
        if args.only == "streams":
            return 0
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox = start_sandbox(tmp)
        mitmdump, mitm_port = start_mitmdump(tmp, sandbox)
        scripted, scripted_port = start_mitmdump_with_addon(tmp, sandbox)
        edge = start_proxy(tmp / "edge", proxy_env(sandbox), REPO / "rules.yaml")
        try:
            direct_ssl = ssl_context(sandbox.ca)
            mitm_ssl = ssl_context(tmp / "mitmdump" / "mitmproxy-ca-cert.pem")
            edge_ssl = ssl_context(edge.confdir / "mitmproxy-ca-cert.pem")
            paths = [
                Path_("direct", sandbox.base_url, None, direct_ssl, SANDBOX_CHAT_BODY),
                Path_("mitmdump", sandbox.base_url, f"http://127.0.0.1:{mitm_port}", mitm_ssl,
                      SANDBOX_CHAT_BODY, mitmdump.popen.pid),
                Path_("bastion-edge", "https://api.openai.com/v1", edge.url, edge_ssl,
                      CHAT_BODY, edge.process.popen.pid, key="sk-bench-app-key"),
                Path_("mitmdump -s", "https://api.openai.com/v1",
                      f"http://127.0.0.1:{scripted_port}",
                      ssl_context(tmp / "mitmdump-s" / "mitmproxy-ca-cert.pem"),
                      CHAT_BODY, scripted.popen.pid, key="sk-bench-app-key"),
            ]
            results = asyncio.run(measure(paths, args.quick))
            accounting = asyncio.run(token_cost.measure(300 if args.quick else 1000,
                                                        3 if args.quick else 7))
            latency = asyncio.run(tts_added_latency(sandbox, paths[2], 5 if args.quick else 15))
            expanded = responses_bench.expanded_request_latency(
                samples=10 if args.quick else 30, edge=edge)
            fallback = fallback_bench.fallback_latency(sandbox, tmp, 5 if args.quick else 20)
        finally:
            edge.process.stop()
            scripted.stop()
            mitmdump.stop()
            sandbox.process.stop()
    transcode = tts_bench.transcode_speed(20.0 if args.quick else 60.0)
    writes = responses_bench.store_writes_per_second(500 if args.quick else 2000)
    text = (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, one run, "
            "all paths side by side against the sandbox.\n\n" + table(results)
            + "\n\n**Token accounting** (accounting on against the addon with it patched "
              "out, same process, interleaved rounds; `python bench/token_cost.py`)\n\n"
            + token_cost.describe(accounting, results["bastion-edge"]["rps_c32"])
            + "\n\n**Text-to-speech**\n\n" + tts_table(transcode, latency)
            + "\n\n**Responses state**\n\n" + responses_table(expanded, writes)
            + "\n\n**Model fallback**\n\n" + fallback_bench.fallback_table(fallback))
    print(text)
    if args.readme:
        write_readme(args.readme, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

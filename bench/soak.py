"""`make soak`: a soak and abuse run against a real `bastion-edge run` (not a test).

For `--seconds` (default 600) it keeps, at once:
  - mixed load: chat, streamed chat (SSE), embeddings, 2 MiB uploads, TTS, from
    `--workers` concurrent clients through HTTPS_PROXY, every reply checked;
  - the rules file swapped between two valid versions every 5 s (hot reload);
  - `--idle` idle connections (CONNECT, TLS, then nothing), reopened as the proxy
    closes them (limits.header_timeout_seconds);
  - slow clients: headers sent a byte every 2 s (slowloris), and streamed replies
    read slowly.
It samples the proxy's RSS and open fds every second and the p99 latency per window,
then stops the load, lets the proxy settle, and reports start / peak / end. With
--readme FILE (docs/development/benchmarks.md) the figures go into FILE between the soak
markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bastion_edge.rehearsal.localrun import Proxy, proxy_env, start_proxy, start_sandbox

REPO = Path(__file__).resolve().parents[1]
BASE = "https://api.openai.com/v1"
RULES_EXTRA = """
limits:
  header_timeout_seconds: 10
  idle_timeout_seconds: 30
  max_client_connections: 4000
"""
UPLOAD = os.urandom(2 * 1024 * 1024)
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Tally:
    served: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    idle_opened: int = 0
    idle_closed_by_proxy: int = 0
    slowloris_closed: int = 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_by_kind(pid: int) -> dict[str, int]:
    """RSS in KiB split into glibc's main heap, other anonymous memory (CPython's
    pymalloc arenas, thread arenas, large mallocs) and file-backed pages (code), from
    /proc/PID/smaps: where memory that stays after the load sits."""
    kinds = {"heap": 0, "anonymous": 0, "file": 0}
    kind = "anonymous"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") \
                else "anonymous"
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    return kinds


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def upstream_connections(pid: int, port: int) -> int:
    """The proxy's open TCP connections to the upstream (the sandbox) on `port`: the
    kept-alive connections of its HTTP client pools (TTS, model list), which come and go
    with the load and are not a leak; counted so the fd figure can leave them out."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                count += 1
    return count


async def one_request(session: aiohttp.ClientSession, kind: str, proxy: str,
                      context: ssl.SSLContext) -> None:
    auth = {"Authorization": "Bearer sk-soak-app"}
    if kind == "chat":
        async with session.post(f"{BASE}/chat/completions", proxy=proxy, ssl=context,
                                headers=auth, json={"model": "gpt-4o",
                                                    "messages": MESSAGES}) as reply:
            body = await reply.json()
            assert reply.status == 200 and body["choices"], (reply.status, body)
    elif kind == "sse":
        async with session.post(f"{BASE}/chat/completions", proxy=proxy, ssl=context,
                                headers=auth, json={"model": "gpt-4o", "messages": MESSAGES,
                                                    "stream": True}) as reply:
            assert reply.status == 200, reply.status
            raw = await reply.read()
            assert b"data: [DONE]" in raw, raw[-200:]
    elif kind == "slow-sse":  # a client that reads a stream slowly
        async with session.post(f"{BASE}/chat/completions", proxy=proxy, ssl=context,
                                headers={**auth, "x-sandbox-token-delay-ms": "50"},
                                json={"model": "gpt-4o", "messages": MESSAGES,
                                      "stream": True}) as reply:
            assert reply.status == 200, reply.status
            seen = b""
            async for chunk in reply.content.iter_chunked(64):
                seen += chunk
                await asyncio.sleep(0.05)
            assert b"data: [DONE]" in seen
    elif kind == "embeddings":
        async with session.post(f"{BASE}/embeddings", proxy=proxy, ssl=context, headers=auth,
                                json={"model": "text-embedding-3-small",
                                      "input": ["a", "b"]}) as reply:
            body = await reply.json()
            assert reply.status == 200 and len(body["data"]) == 2, (reply.status, body)
    elif kind == "upload":
        form = aiohttp.FormData()
        form.add_field("model", "whisper-1")
        form.add_field("file", UPLOAD, filename="a.wav", content_type="audio/wav")
        async with session.post(f"{BASE}/audio/transcriptions", proxy=proxy, ssl=context,
                                headers=auth, data=form) as reply:
            body = await reply.json()
            assert reply.status == 200 and "text" in body, (reply.status, body)
    elif kind == "tts":
        async with session.post(f"{BASE}/audio/speech", proxy=proxy, ssl=context, headers=auth,
                                json={"model": "tts-1", "voice": "alloy", "input": "Hello.",
                                      "response_format": "wav"}) as reply:
            audio = await reply.read()
            assert reply.status == 200 and audio[:4] == b"RIFF", (reply.status, audio[:200])
    else:
        raise AssertionError(kind)


MIX = ["chat"] * 5 + ["sse"] * 3 + ["embeddings"] * 3 + ["upload", "tts", "slow-sse"]


async def load_worker(index: int, deadline: float, tally: Tally, proxy: str,
                      context: ssl.SSLContext) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        n = index
        while time.monotonic() < deadline:
            kind = MIX[n % len(MIX)]
            n += 1
            started = time.monotonic()
            try:
                await one_request(session, kind, proxy, context)
            except Exception as e:  # every failure is counted and shown
                tally.failures.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
            else:
                tally.served += 1
                tally.latencies.append((started, time.monotonic() - started))


async def idle_connection(port: int, context: ssl.SSLContext, deadline: float,
                          tally: Tally) -> None:
    """CONNECT + TLS, then silence; reopened whenever the proxy closes it."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            await writer.start_tls(context, server_hostname="api.openai.com")
            tally.idle_opened += 1
            left = deadline - time.monotonic()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), timeout=max(left, 0.1)) == b"":
                    tally.idle_closed_by_proxy += 1
            writer.close()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            await asyncio.sleep(1)


async def slowloris(port: int, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for byte in b"CONNECT api.openai.com:443 HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
                if time.monotonic() > deadline:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(2)
            writer.close()
        except (ConnectionResetError, BrokenPipeError):
            tally.slowloris_closed += 1
        except OSError:
            await asyncio.sleep(1)


async def reloader(rules: Path, variants: list[str], deadline: float) -> int:
    swaps = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(5)
        staged = rules.with_suffix(".tmp")
        staged.write_text(variants[swaps % 2])
        staged.replace(rules)
        swaps += 1
    return swaps


async def sampler(pid: int, deadline: float, samples: list[tuple[float, int, int]]) -> None:
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), rss_kib(pid), open_fds(pid)))
        await asyncio.sleep(1)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def soak(proxy: Proxy, upstream_port: int, rules: Path, variants: list[str],
               seconds: float, workers: int, idle: int, slow: int) -> dict[str, object]:
    pid = proxy.process.popen.pid
    context = ssl.create_default_context(cafile=str(proxy.confdir / "mitmproxy-ca-cert.pem"))
    tally = Tally()
    warm = time.monotonic() + 10
    await asyncio.gather(*(load_worker(i, warm, Tally(), proxy.url, context)
                           for i in range(workers)))
    await asyncio.sleep(2)
    start_rss, start_fds, start_kinds = rss_kib(pid), open_fds(pid), rss_by_kind(pid)
    start_pooled = upstream_connections(pid, upstream_port)
    began = time.monotonic()
    deadline = began + seconds
    samples: list[tuple[float, int, int]] = []
    tasks = [
        *(load_worker(i, deadline, tally, proxy.url, context) for i in range(workers)),
        *(idle_connection(proxy.port, context, deadline, tally) for _ in range(idle)),
        *(slowloris(proxy.port, deadline, tally) for _ in range(slow)),
        sampler(pid, deadline, samples),
    ]
    swaps_task = asyncio.ensure_future(reloader(rules, variants, deadline))
    await asyncio.gather(*tasks)
    swaps = await swaps_task
    await asyncio.sleep(15)  # idle connections closed by now; let the proxy settle
    end_rss, end_fds, end_kinds = rss_kib(pid), open_fds(pid), rss_by_kind(pid)
    end_pooled = upstream_connections(pid, upstream_port)
    window = max(30.0, seconds / 10)
    p99s = []
    t = began
    while t < deadline:
        in_window = [d for at, d in tally.latencies if t <= at < t + window]
        p99s.append((t - began, p99(in_window), len(in_window)))
        t += window
    return {
        "seconds": seconds, "workers": workers, "idle": idle, "slow": slow,
        "served": tally.served, "failures": tally.failures, "reloads": swaps,
        "idle_opened": tally.idle_opened, "idle_closed": tally.idle_closed_by_proxy,
        "slowloris_closed": tally.slowloris_closed,
        "rss_start_mib": start_rss / 1024, "rss_peak_mib": max(s[1] for s in samples) / 1024,
        "rss_end_mib": end_rss / 1024, "fds_start": start_fds,
        "rss_kinds": {k: (start_kinds[k] / 1024, end_kinds[k] / 1024) for k in start_kinds},
        "fds_peak": max(s[2] for s in samples), "fds_end": end_fds, "p99s": p99s,
        "pooled_start": start_pooled, "pooled_end": end_pooled,
        "metrics": _limit_lines(proxy),
    }


def _limit_lines(proxy: Proxy) -> list[str]:
    text = proxy.metrics()
    return [line for line in text.splitlines()
            if line.startswith(("bastion_edge_limit_rejections_total",
                                "bastion_edge_rules_reloads_total"))]


def render(r: dict[str, object]) -> str:
    failures = r["failures"]
    assert isinstance(failures, list)
    p99s = r["p99s"]
    assert isinstance(p99s, list)
    kinds = r["rss_kinds"]
    assert isinstance(kinds, dict)
    lines = [
        f"Run: {r['seconds']:.0f} s, {r['workers']} load clients, {r['idle']} idle "
        f"connections, {r['slow']} slowloris clients, rules swapped every 5 s "
        f"({r['reloads']} reloads), on a 2-core machine "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests served | {r['served']} |",
        f"| failed requests | {len(failures)} |",
        f"| RSS start / peak / end | {r['rss_start_mib']:.0f} / {r['rss_peak_mib']:.0f} / "
        f"{r['rss_end_mib']:.0f} MiB |",
        "| RSS start / end by kind | " + ", ".join(
            f"{kind} {start:.0f} / {end:.0f}" for kind, (start, end) in kinds.items()) + " MiB |",
        f"| open fds start / peak / end | {r['fds_start']} / {r['fds_peak']} / "
        f"{r['fds_end']} |",
        f"| of which kept-alive upstream connections, start / end | {r['pooled_start']} / "
        f"{r['pooled_end']} |",
        f"| idle connections opened / closed by the proxy | {r['idle_opened']} / "
        f"{r['idle_closed']} |",
        f"| slowloris connections closed by the proxy | {r['slowloris_closed']} |",
        "",
        "p99 latency over time (mixed load; includes 2 MiB uploads, TTS and slow SSE reads):",
        "",
        "| from (s) | requests | p99 (ms) |",
        "|---|---|---|",
        *(f"| {at:.0f} | {n} | {value * 1000:.0f} |" for at, value, n in p99s),
    ]
    if failures:
        lines += ["", "First failures:", "", *(f"- `{f}`" for f in failures[:5])]
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    content = readme.read_text()
    block = f"<!-- soak:start -->\n{text}\n<!-- soak:end -->"
    pattern = re.compile(r"<!-- soak:start -->.*?<!-- soak:end -->", re.S)
    content = pattern.sub(lambda _: block, content) if pattern.search(content) \
        else content.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(content)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--readme", type=Path)
    parser.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the proxy (e.g. allocator settings)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1,000 idle clients need fds
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="bastion-soak-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox = start_sandbox(tmp / "sandbox")
        shipped = (REPO / "rules.yaml").read_text().split("\nlimits:", 1)[0] + "\n"
        variants = [shipped + RULES_EXTRA,
                    shipped.replace("    - use: gpt-oss-120b", "    - use: gpt-oss-20b", 1)
                    + RULES_EXTRA]
        rules = tmp / "rules.yaml"
        rules.write_text(variants[0])
        extra_env = dict(item.split("=", 1) for item in args.proxy_env)
        proxy = start_proxy(tmp / "edge", proxy_env(sandbox, **extra_env), rules)
        try:
            result = asyncio.run(soak(proxy, sandbox.port, rules, variants, args.seconds,
                                      args.workers, args.idle, args.slow))
        finally:
            log = proxy.process.log()
            notable = [line for line in log.splitlines()
                       if ("closing client" in line and "header_timeout" not in line)
                       or "Traceback" in line or "error" in line.lower()]
            print("\n".join(notable[:15]), file=sys.stderr)
            proxy.process.stop()
            sandbox.process.stop()
    text = render(result)
    print(text)
    print("\n".join(result["metrics"]))  # type: ignore[arg-type]
    if args.readme:
        write_readme(args.readme, text)
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())

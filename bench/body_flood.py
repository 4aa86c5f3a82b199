"""Issue 23 row 8: N clients each send most of a large JSON chat body and hold the last byte.

Against a real `bastion-edge run` with the shipped rules.yaml (so the shipped limits), it
opens `--clients` TLS connections through CONNECT, sends each a chat request announcing
`--mib` MiB and all of the body but its last byte, and holds them for `--hold` seconds
while sampling the proxy's RSS from /proc every 0.1 s. It prints the RSS at start, the
peak, and how the clients were answered (503 with retry-after, or still held). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bastion_edge.rehearsal.localrun import proxy_env, start_proxy, start_sandbox

REPO = Path(__file__).resolve().parents[1]
HOST = "api.openai.com"
PIECE = 256 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def flood_one(port: int, cafile: str, body: bytes, hold: float) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    context = ssl.create_default_context(cafile=cafile)
    await writer.start_tls(context, server_hostname=HOST)
    writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\n"
                 f"Authorization: Bearer sk-app\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    try:
        for start in range(0, len(body) - 1, PIECE):
            writer.write(body[start:min(start + PIECE, len(body) - 1)])
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), hold)
    except TimeoutError:
        return "held to the end"
    except (ConnectionError, ssl.SSLError):
        return "reset while sending"
    finally:
        writer.close()
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "eof"
    retry = b"retry-after:" in answer.lower()
    return f"{status}{' with retry-after' if retry else ''}"


async def flood(pid: int, port: int, cafile: str, clients: int, mib: float,
                hold: float) -> tuple[int, int, Counter[str]]:
    size = int(mib * 1024 * 1024)
    body = json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "z" * (size - 80)}]}).encode()
    start = rss_kib(pid)
    peak = start
    tasks = [asyncio.create_task(flood_one(port, cafile, body, hold)) for _ in range(clients)]
    while not all(t.done() for t in tasks):
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.1)
    return start, peak, Counter(t.result() for t in tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=34)
    parser.add_argument("--mib", type=float, default=15)
    parser.add_argument("--hold", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-flood-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox = start_sandbox(tmp / "sandbox")
        rules = tmp / "rules.yaml"
        rules.write_text((REPO / "rules.yaml").read_text())
        proxy = start_proxy(tmp / "edge", proxy_env(sandbox), rules)
        try:
            time.sleep(2)  # settled after start
            start, peak, outcomes = asyncio.run(flood(
                proxy.process.popen.pid, proxy.port, proxy.app_env()["SSL_CERT_FILE"],
                args.clients, args.mib, args.hold))
        finally:
            proxy.process.stop()
            sandbox.process.stop()
    print(f"{args.clients} clients x {args.mib:g} MiB held: proxy RSS "
          f"{start / 1024:.0f} MiB at start, peak {peak / 1024:.0f} MiB")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:3d} {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What token accounting costs the addon, per request: its hooks' CPU time with the
accounting on, and with it patched out, in interleaved rounds (same process, same flows).

Two requests: a JSON chat reply (usage read from the buffered body) and an SSE chat
stream of 42 events, one per chunk as upstreams write them (the usage tap, and the
usage-chunk strip the plan adds for a stream that did not ask for usage).
`make bench` puts the figures in docs/development/benchmarks.md; `python
bench/token_cost.py` prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow

from bastion_edge.proxy import reply_path as addon_module
from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.telemetry.token_metrics import TokenMetrics

REPO = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "hello"}]
JSON_BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
SSE_BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "stream": True}).encode()
USAGE = {"prompt_tokens": 9, "completion_tokens": 40, "total_tokens": 49}
JSON_REPLY = json.dumps({"id": "c1", "object": "chat.completion", "model": "gpt-oss-120b",
                         "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": "hi"}}],
                         "usage": USAGE}).encode()
_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-oss-120b",
          "usage": None}
SSE_REPLY = b"".join(
    b"data: " + json.dumps({**_CHUNK, "choices": [{"index": 0, "delta": {"content": "word "}}]},
                           separators=(",", ":")).encode() + b"\n\n" for _ in range(40)
) + b"data: " + json.dumps({**_CHUNK, "choices": [], "usage": USAGE},
                           separators=(",", ":")).encode() + b"\n\ndata: [DONE]\n\n"
SSE_CHUNKS = [event + b"\n\n" for event in SSE_REPLY.split(b"\n\n") if event]


def one_request(addon: Any | None, body: bytes, reply: bytes, sse: bool) -> None:
    flow = tflow.tflow()
    request = flow.request
    request.method, request.scheme, request.host, request.port = "POST", "https", \
        "api.openai.com", 443
    request.path = "/v1/chat/completions"
    request.headers = http.Headers(host="api.openai.com", authorization="Bearer sk-app",
                                   content_type="application/json")
    request.content = body
    if addon is not None:
        addon.requests.requestheaders(flow)
        addon.requests.request(flow)
    content_type = "text/event-stream" if sse else "application/json"
    flow.response = http.Response.make(200, b"" if sse else reply,
                                       {"content-type": content_type})
    if addon is not None:
        addon.replies.responseheaders(flow)
        stream = flow.response.stream
        if callable(stream):
            for chunk in SSE_CHUNKS:
                stream(chunk)
            stream(b"")
        addon.replies.response(flow)


@contextlib.contextmanager
def accounting_off() -> Iterator[None]:
    """The addon as it was before token accounting: no usage read, no tap, no strip, no
    token metrics (the plan's body still asks for the usage chunk: a few bytes)."""
    def no_tap(found: Any, then: Any = None, strip: bool = False) -> Any:
        return then

    with mock.patch.object(addon_module, "buffered_usage", lambda *args: None), \
            mock.patch.object(addon_module, "UsageTap", no_tap), \
            mock.patch.object(TokenMetrics, "exchange", lambda self, **kw: None):
        yield


def _timed(addon: Any | None, body: bytes, reply: bytes, sse: bool, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        one_request(addon, body, reply, sse)
    return time.process_time() - started


async def measure(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    rules = Path(tempfile.mkdtemp()) / "rules.yaml"
    rules.write_text((REPO / "rules.yaml").read_text())
    addon = BastionEdge(environ={"QUBITTRON_API_KEY": "bk-bench",
                                 "BASTION_BASE_URL": "https://127.0.0.1:9443/v1"})
    samples: dict[str, dict[str, list[float]]] = {
        kind: {"on": [], "off": []} for kind in ("json", "sse")}
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx:
        tctx.configure(addon, bastion_rules=str(rules), bastion_metrics_port=0)
        cases = {"json": (JSON_BODY, JSON_REPLY, False), "sse": (SSE_BODY, SSE_REPLY, True)}
        for body, reply, sse in cases.values():
            _timed(addon, body, reply, sse, 200)  # warm up
        for round_ in range(rounds):
            for kind, (body, reply, sse) in cases.items():
                building = _timed(None, body, reply, sse, requests)
                order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
                for mode in order:
                    with accounting_off() if mode == "off" else contextlib.nullcontext():
                        spent = _timed(addon, body, reply, sse, requests) - building
                    samples[kind][mode].append(spent / requests * 1e6)
        addon.replies.timeouts.cancel_all()
    return {kind: {"on_us": statistics.median(by["on"]), "off_us": statistics.median(by["off"]),
                   "added_us": statistics.median(
                       on - off for on, off in zip(by["on"], by["off"], strict=True))}
            for kind, by in samples.items()}


def describe(results: dict[str, dict[str, float]], rps: float | None = None) -> str:
    """One line per request kind. For the JSON request (the throughput and p50 rows'
    request), with the proxy's measured throughput: the share of its per-request time the
    accounting adds (1 / throughput: one proxy process on one core)."""
    j, s = results["json"], results["sse"]
    share = f", {j['added_us'] / (1e6 / rps) * 100:.2f}% of the proxy's per-request time " \
            f"at the {rps:.0f} req/s measured above" if rps else ""
    return "\n".join([
        f"- JSON chat reply, addon CPU per request: {j['off_us']:.1f} us without accounting, "
        f"{j['on_us']:.1f} us with it: **+{j['added_us']:.1f} us**{share}",
        f"- SSE chat stream of {len(SSE_CHUNKS)} events, one per chunk, usage asked upstream "
        f"and stripped: {s['off_us']:.1f} us without, {s['on_us']:.1f} us with: "
        f"+{s['added_us']:.1f} us, **{s['added_us'] / len(SSE_CHUNKS):.2f} us per event**; "
        "the first chunk goes on as soon as its line is complete (time to first chunk "
        "above)",
    ])


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(describe(asyncio.run(measure(requests, 7))))


if __name__ == "__main__":
    main()

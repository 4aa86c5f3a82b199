"""The addon's own CPU per relayed SSE event, by what it puts on `response.stream`.

No network: a chat stream as Bastion sends it (one event per read, as paced tokens
arrive) fed through ByteCounter (the default, `reply_model: upstream`) and the
model-restoring SseRewriter (`reply_model: original`). `python bench/sse_cost.py`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bastion_edge.core.reply_model import restore_model
from bastion_edge.proxy.exchange import Exchange
from bastion_edge.proxy.flow_edit import ByteCounter
from bastion_edge.streams.sse import SseRewriter

EVENTS = 20_000


def chat_events(model: str, count: int) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model, "system_fingerprint": None}
    out = []
    for i in range(count):
        choice = {"index": 0, "delta": {"content": f"tok{i} "}, "logprobs": None,
                  "finish_reason": None}
        out.append(b"data: " + json.dumps({**base, "choices": [choice]},
                                          separators=(",", ":")).encode() + b"\n\n")
    return out


def per_event_us(stream: Any, events: list[bytes]) -> float:
    started = time.perf_counter()
    for event in events:
        stream(event)
    stream(b"")
    return (time.perf_counter() - started) / len(events) * 1e6


def measure() -> dict[str, float]:
    events = chat_events("gpt-oss-120b", EVENTS)
    results = {}
    exchange: Any = Exchange.__new__(Exchange)
    exchange.bytes_out = 0
    results["ByteCounter"] = min(per_event_us(ByteCounter(exchange), events) for _ in range(3))
    results["SseRewriter (model restored)"] = min(
        per_event_us(SseRewriter(lambda obj: restore_model(obj, "gpt-4o"),
                                 **_fast_kwargs()), events) for _ in range(3))
    return results


def _fast_kwargs() -> dict[str, Any]:
    try:
        from bastion_edge.core.reply_model import model_bytes_restorer
    except ImportError:  # before the byte-level fast path
        return {}
    return {"fast": model_bytes_restorer("gpt-4o", "gpt-oss-120b")}


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name}: {value:.2f} µs per event")

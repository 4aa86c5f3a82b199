"""What a model fallback adds, through `bastion-edge run` against the sandbox.

Three ways one chat request can be served, timed side by side on one proxy:
  direct hit    the mapped target is listed and answers
  unlisted      the target is not in the live list: its fallback is sent first (no 404)
  404 retry     the list still lists the target, Bastion answers 404 model_not_found,
                the proxy retries on the fallback (the path the list cannot prevent)
A 404 marks the model unavailable until the next list refresh, so each 404-retry sample
first lets a refresh list the target again (the sandbox's admin API, the proxy's
metrics), then makes it vanish and sends the request; only the request is timed, and a
sample counts only if the proxy's `not_found` fallback counter moved.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import statistics
import time
from pathlib import Path

import aiohttp
import httpx

from bastion_edge.rehearsal.localrun import Proxy, Sandbox, proxy_env, start_proxy, wait_until

TARGET, FALLBACK = "gpt-oss-120b", "Meta-Llama-3_3-70B-Instruct"
RULES = f"""
models:
  gpt-4o: {TARGET}
fallbacks:
  {TARGET}: [{FALLBACK}]
models_refresh_seconds: 1
"""
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def _gauge(proxy: Proxy, model: str) -> str | None:
    found = re.search(rf'^bastion_edge_model_available{{model="{re.escape(model)}"}} (\S+)$',
                      proxy.metrics(), re.M)
    return found.group(1) if found else None


def _retries(proxy: Proxy) -> float:
    found = re.search(r'^bastion_edge_model_fallbacks_total{[^}]*reason="not_found"[^}]*} (\S+)$',
                      proxy.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def fallback_latency(sandbox: Sandbox, tmp: Path, samples: int) -> dict[str, float]:
    """Median ms of each path, and how many 404-retry samples were taken."""
    rules = tmp / "fallback-rules.yaml"
    rules.write_text(RULES)
    proxy = start_proxy(tmp / "fallback-edge", proxy_env(sandbox), rules)
    admin = httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox.ca)), timeout=10)
    state = f"{sandbox.base_url.removesuffix('/v1')}/sandbox/models"
    context = ssl.create_default_context(cafile=str(proxy.confdir / "mitmproxy-ca-cert.pem"))
    try:
        return asyncio.run(_measure(proxy, admin, state, context, samples))
    finally:
        admin.delete(state)
        admin.close()
        proxy.process.stop()


async def _measure(proxy: Proxy, admin: httpx.Client, state: str, context: ssl.SSLContext,
                   samples: int) -> dict[str, float]:
    url = "https://api.openai.com/v1/chat/completions"
    headers = {"Authorization": "Bearer sk-bench-app-key"}
    async with aiohttp.ClientSession() as session:
        async def timed() -> float:
            started = time.perf_counter()
            async with session.post(url, json=BODY, proxy=proxy.url, ssl=context,
                                    headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, reply.status
            return (time.perf_counter() - started) * 1000

        def listed(model: str, value: str) -> None:
            wait_until(lambda: _gauge(proxy, model) == value, what=f"{model} gauge {value}")

        listed(TARGET, "1.0")
        await timed()  # warm up: connections, TLS
        direct = [await timed() for _ in range(samples)]
        admin.patch(f"{state}/{TARGET}", json={"available": False})
        listed(TARGET, "0.0")
        unlisted = [await timed() for _ in range(samples)]
        retried: list[float] = []
        for _ in range(samples):
            admin.patch(f"{state}/{TARGET}", json={"available": True})
            listed(TARGET, "1.0")  # a refresh just listed it: the next is ~1 s away
            admin.patch(f"{state}/{TARGET}", json={"available": False})
            before = _retries(proxy)
            took = await timed()
            if _retries(proxy) == before + 1:
                retried.append(took)
    return {"direct_ms": statistics.median(direct), "unlisted_ms": statistics.median(unlisted),
            "retry_ms": statistics.median(retried) if retried else float("nan"),
            "retry_samples": float(len(retried))}


def fallback_table(result: dict[str, float]) -> str:
    direct = result["direct_ms"]
    return (f"Chat through bastion-edge (median): direct hit {direct:.1f} ms; target unlisted, "
            f"fallback sent first {result['unlisted_ms']:.1f} ms "
            f"({result['unlisted_ms'] - direct:+.1f}); 404 model_not_found then retry on the "
            f"fallback {result['retry_ms']:.1f} ms ({result['retry_ms'] - direct:+.1f}, "
            f"{result['retry_samples']:.0f} samples).")

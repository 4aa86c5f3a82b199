"""The addon's own CPU per request: its four hooks driven with mitmproxy's test helpers.

    python bench/hook_cost.py [REQUESTS] [RULES]

No network, no TLS, no other addons: what bastion-edge itself adds to one chat request
(plan, body rewrite, metrics, access-log record), measured as CPU time so a busy
machine disturbs it less than the end-to-end figures. For before/after comparisons
of the request path, run it against each checkout with that checkout's rules file.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow

try:
    from bastion_edge.proxy.addon import BastionEdge
except ImportError:  # the layout before the planner, for before/after comparisons
    from bastion_edge.hooks import BastionEdge  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
RULES = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "rules.yaml"
BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
REPLY = json.dumps({"id": "c1", "object": "chat.completion", "model": "gpt-oss-120b",
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "hi"}}]}).encode()


def one_request(addon: Any | None) -> None:
    """One chat request through the four hooks (None: only building the flow)."""
    flow = tflow.tflow()
    request = flow.request
    request.method, request.scheme, request.host, request.port = "POST", "https", \
        "api.openai.com", 443
    request.path = "/v1/chat/completions"
    request.headers = http.Headers(host="api.openai.com", authorization="Bearer sk-app",
                                   content_type="application/json")
    request.content = BODY.encode()
    # Since the thin root, the flow hooks live on its `requests` and `replies` children.
    requests, replies = getattr(addon, "requests", addon), getattr(addon, "replies", addon)
    if addon is not None:
        requests.requestheaders(flow)
        requests.request(flow)
    flow.response = http.Response.make(200, REPLY, {"content-type": "application/json"})
    if addon is not None:
        replies.responseheaders(flow)
        replies.response(flow)


async def measure(requests: int, rounds: int) -> list[float]:
    rules = Path(tempfile.mkdtemp()) / "rules.yaml"
    rules.write_text(RULES.read_text())
    addon = BastionEdge(environ={"QUBITTRON_API_KEY": "bk-bench",
                                 "BASTION_BASE_URL": "https://127.0.0.1:9443/v1"})
    per_request = []
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx:
        tctx.configure(addon, bastion_rules=str(rules), bastion_metrics_port=0)
        for _ in range(200):
            one_request(addon)
        for _ in range(rounds):  # the hooks' time, less building the flows themselves
            started = time.process_time()
            for _ in range(requests):
                one_request(None)
            building = time.process_time() - started
            started = time.process_time()
            for _ in range(requests):
                one_request(addon)
            spent = time.process_time() - started - building
            per_request.append(spent / requests * 1e6)
        getattr(addon, "replies", addon).timeouts.cancel_all()
    return per_request


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    samples = asyncio.run(measure(requests, 7))
    print(f"addon hooks, CPU per chat request: median {statistics.median(samples):.1f} us "
          f"(min {min(samples):.1f}, {len(samples)} rounds of {requests})")


if __name__ == "__main__":
    main()

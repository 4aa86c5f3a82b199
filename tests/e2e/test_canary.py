"""`cutover.mode: canary` end to end, the sandbox standing in for both providers: the
canary promotes by itself while both are healthy, rolls back when Bastion's sandbox fails
a share of requests (its `x-sandbox-fault` injection), and stays rolled back across a
restart (the state lives in the confdir's store).

The tick is shortened by a test-only variable (proxy/canary_addon.py `TICK_ENV`); loops
are bounded by request counts, never by the clock.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from harness import (
    BASTION_EDGE,
    Proxy,
    Sandbox,
    proxy_env,
    start_proxy,
    wait_until,
)

from bastion_edge.core.cutover import split_bucket
from bastion_edge.core.facts import key_sha256
from bastion_edge.proxy.canary_addon import TICK_ENV

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "which provider?"}]}
APPS = [f"sk-canary-app-{i}" for i in range(100)]


def canary_proxy(tmp: Path, sandbox: Sandbox, openai_box: Sandbox, canary: str) -> Proxy:
    rules = tmp / "rules.yaml"
    rules.write_text("models:\n  gpt-4o: gpt-oss-120b\n"
                     f"cutover:\n  mode: canary\n  canary:\n{canary}")
    env = proxy_env(sandbox, BASTION_OPENAI_URL=f"https://127.0.0.1:{openai_box.port}",
                    **{TICK_ENV: "0.2"})
    return start_proxy(tmp, env, rules=rules)


def cutover_events(proxy: Proxy) -> list[dict[str, object]]:
    lines = proxy.access_log.read_text().splitlines() if proxy.access_log.exists() else []
    return [r for r in map(json.loads, lines) if r.get("event") == "cutover"]


def status(proxy: Proxy) -> str:
    done = subprocess.run(
        [str(BASTION_EDGE), "cutover", "status", "--rules", str(proxy.rules),
         "--confdir", str(proxy.confdir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def on_bastion_at(percent: float) -> Callable[[str], bool]:
    """Whether an app's key is sticky to Bastion at `percent` (the split's own bucket)."""
    return lambda app: split_bucket(key_sha256(f"Bearer {app}") or "") < percent


def client(proxy: Proxy) -> httpx.Client:
    env = proxy.app_env()
    return httpx.Client(proxy=env["HTTPS_PROXY"], verify=env["SSL_CERT_FILE"])


def ask(http: httpx.Client, app: str, fault: bool = False) -> httpx.Response:
    headers = {"authorization": f"Bearer {app}"}
    if fault:
        headers["x-sandbox-fault"] = "status=500"
    return http.post("https://api.openai.com/v1/chat/completions", json=BODY, headers=headers)


def served_by(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    return "bastion" if reply.json()["model"] == "gpt-oss-120b" else "openai"


def traffic(http: httpx.Client, until: Callable[[], bool], limit: int,
            fault: Callable[[str, int], bool] = lambda app, n: False) -> Iterator[httpx.Response]:
    for n in range(limit):
        if n % 20 == 0 and until():
            return
        app = APPS[n % len(APPS)]
        yield ask(http, app, fault(app, n))
    raise AssertionError(f"no decision after {limit} requests")


def test_canary_promotes_to_100_with_healthy_upstreams(
    tmp_path: Path, sandbox: Sandbox, openai_standin: Sandbox
) -> None:
    proxy = canary_proxy(tmp_path, sandbox, openai_standin, """\
    steps: [10, 50, 100]
    min_requests: 30
    min_seconds: 0
    gates: {max_error_rate_increase_pp: 15, max_p95_ratio: null, min_agreement: 0.9}
""")
    try:
        with client(proxy) as http:
            sides = {served_by(reply) for reply in traffic(
                http, lambda: "complete" in status(proxy), 3000)}
            assert sides == {"bastion", "openai"}  # the canary really split the traffic
            assert {served_by(ask(http, app)) for app in APPS[:20]} == {"bastion"}
        promotes = [e for e in cutover_events(proxy) if e["decision"] == "promote"]
        assert [(e["from_percent"], e["to_percent"]) for e in promotes] == [
            (10.0, 50.0), (50.0, 100.0)]
        assert all(e["by"] == "auto" for e in promotes)
        assert "complete, Bastion gets 100 %" in status(proxy)
        wait_until(lambda: "bastion_edge_cutover_percent 100.0" in proxy.metrics(),
                   what="the percent gauge at 100")
        assert 'bastion_edge_cutover_decisions_total{decision="promote"} 2.0' in proxy.metrics()
    finally:
        proxy.process.stop()


def test_canary_rolls_back_on_bastion_failures_and_stays_rolled_back_after_restart(
    tmp_path: Path, sandbox: Sandbox, openai_standin: Sandbox
) -> None:
    canary = """\
    steps: [50, 100]
    min_requests: 30
    min_seconds: 0
    gates: {max_error_rate_increase_pp: 1, max_p95_ratio: null, min_agreement: 0.9}
    on_fail: rollback
"""
    proxy = canary_proxy(tmp_path, sandbox, openai_standin, canary)
    bastion_app = on_bastion_at(50.0)
    # Bastion's sandbox fails a third of the requests it gets; OpenAI's none.
    failing = [app for app in APPS if bastion_app(app)]
    try:
        with client(proxy) as http:
            replies = list(traffic(http, lambda: "rolled_back" in status(proxy), 2000,
                                   fault=lambda app, n: bastion_app(app) and n % 3 == 0))
            assert any(r.status_code == 500 for r in replies)
            assert {served_by(ask(http, app)) for app in failing[:10]} == {"openai"}
        [rollback] = [e for e in cutover_events(proxy) if e["decision"] == "rollback"]
        assert (rollback["from_percent"], rollback["to_percent"]) == (50.0, 0.0)
        gates = {g["name"]: g for g in rollback["gates"]}  # type: ignore[attr-defined]
        error_gate = next(g for name, g in gates.items() if "error" in name)
        assert error_gate["verdict"] == "fail" and error_gate["low"] * 100 > 1
        assert "rolled_back, Bastion gets 0 %" in status(proxy)
        wait_until(lambda: "bastion_edge_cutover_percent 0.0" in proxy.metrics(),
                   what="the percent gauge at 0")
    finally:
        proxy.process.stop()

    env = proxy_env(sandbox, BASTION_OPENAI_URL=f"https://127.0.0.1:{openai_standin.port}",
                    **{TICK_ENV: "0.2"})
    again = start_proxy(tmp_path, env, rules=proxy.rules)
    try:
        assert again.confdir == proxy.confdir
        wait_until(lambda: "bastion_edge_cutover_percent 0.0" in again.metrics(),
                   what="the restarted proxy's first tick")
        assert "rolled_back, Bastion gets 0 %" in status(again)
        with client(again) as http:
            assert {served_by(ask(http, app)) for app in failing[:10]} == {"openai"}
    finally:
        again.process.stop()

    pool = start_proxy(tmp_path, env, rules=proxy.rules, extra=["--workers", "2"])
    try:  # both workers read the same store: neither restarts the canary at 50 %
        wait_until(lambda: "bastion_edge_cutover_percent 0.0" in pool.metrics(),
                   what="the workers' first tick")
        workers, sides = set(), set()
        for n in range(64):  # a new connection each: the kernel picks the worker
            with client(pool) as http:
                reply = ask(http, failing[n % len(failing)])
            workers.add(reply.headers.get("x-bastion-edge-worker"))
            sides.add(served_by(reply))
        assert workers == {"0", "1"} and sides == {"openai"}
    finally:
        pool.process.stop()

"""`bastion-edge run --workers 2`, end to end: both workers serve on one port, one
/metrics adds them up, a chained Responses turn continues on the other worker (SQLite
in the confdir), a killed worker is restarted and counted, SIGTERM drains a stream in
flight and the parent exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
import yaml
from conftest import make_client
from harness import BASTION_KEY, REPO, Proxy, Sandbox, proxy_env, start_proxy, wait_until
from redis_server import running_redis

from bastion_edge.core.proxy_auth import new_secret, proxy_url, secret_sha256

EXAMPLES = REPO / "sidecar" / "examples"

WORKER_HEADER = "x-bastion-edge-worker"
ATTEMPTS = 64  # new connections tried to reach a given worker (each 1/2: never all miss)
T = TypeVar("T")


@pytest.fixture
def pool(sandbox: Sandbox, tmp_path: Path) -> Iterator[Proxy]:
    proxy = start_proxy(tmp_path, proxy_env(sandbox), extra=["--workers", "2"])
    yield proxy
    proxy.process.stop()


def worker_pids(proxy: Proxy) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(proxy.process.popen.pid)],
                         capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def on_worker(want: str, monkeypatch: pytest.MonkeyPatch, proxy: Proxy,
              call: Callable[[openai.OpenAI], Any]) -> Any:
    """`call` through a fresh client (a new connection: the kernel picks a worker) until
    worker `want` answers; returns its parsed result."""
    for _ in range(ATTEMPTS):
        with make_client(monkeypatch, proxy) as client:
            raw = call(client)
            if raw.headers.get(WORKER_HEADER) == want:
                return raw.parse()
    raise AssertionError(f"worker {want} never answered")


def metric(proxy: Proxy, pattern: str) -> float:
    total = 0.0
    for line in proxy.metrics().splitlines():
        if re.match(pattern, line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_one_port_one_metrics_shared_responses(
    pool: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def chat(client: openai.OpenAI) -> Any:
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "which worker?"}])

    on_worker("0", monkeypatch, pool, chat)
    on_worker("1", monkeypatch, pool, chat)
    served = metric(pool, r'bastion_edge_requests_total\{.*endpoint="chat.completions"')
    assert served >= 2  # both workers' counts in one series, summed by the parent
    counted = metric(pool, r"bastion_edge_requests_total\{")
    assert counted == served  # no per-process (pid) series: one /metrics for the pool
    assert 'bastion_edge_rules_info{sha256="' in pool.metrics()  # Info, multiprocess-safe

    first = on_worker("0", monkeypatch, pool, lambda c: c.responses.with_raw_response.create(
        model="gpt-4o", input="My name is Ada."))
    second = on_worker("1", monkeypatch, pool, lambda c: c.responses.with_raw_response.create(
        model="gpt-4o", input="What is my name?", previous_response_id=first.id))
    assert "What is my name?" in second.output_text
    again = on_worker("0", monkeypatch, pool, lambda c: c.responses.with_raw_response.retrieve(
        second.id))
    assert again.output_text == second.output_text


def test_a_killed_worker_is_restarted_and_counted_then_sigterm_drains(
    pool: Proxy, sandbox: Sandbox
) -> None:
    assert metric(pool, r"bastion_edge_worker_restarts_total ") == 0, pool.process.log()
    victim = worker_pids(pool)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: metric(pool, r"bastion_edge_worker_restarts_total ") == 1,
               what="the restart to be counted")
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{pool.metrics_port}/readyz")
               .status_code == 200, what="both workers ready again")
    assert len(worker_pids(pool)) == 2 and victim not in worker_pids(pool)

    env = pool.app_env()
    first_event = threading.Event()
    events: list[bytes] = []

    def stream() -> None:
        trust = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
        with httpx.Client(proxy=env["HTTPS_PROXY"], verify=trust,
                          timeout=30) as client, client.stream(
                "POST", "https://api.openai.com/v1/chat/completions",
                headers={"authorization": "Bearer sk-app", "x-sandbox-stream-events": "20",
                         "x-sandbox-token-delay-ms": "50"},
                json={"model": "gpt-4o-mini", "stream": True,
                      "messages": [{"role": "user", "content": "drain me"}]}) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    events.append(line.encode())
                    first_event.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_event.wait(20)
    pool.process.popen.send_signal(signal.SIGTERM)
    reader.join(30)
    assert events[-1] == b"data: [DONE]" and len(events) == 20 + 3  # role, 20, stop, DONE
    assert pool.process.popen.wait(30) == 0, pool.process.log()


# ------------------------------------------------------------------ the gateway form


def gateway_rules(tmp: Path, redis_url: str, secret: str) -> Path:
    """The Kubernetes gateway example's own rules, pointed at this test's key file,
    Redis and app secret."""
    documents = yaml.safe_load_all((EXAMPLES / "kubernetes-gateway.yaml").read_text())
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    rules = yaml.safe_load(config_map["data"]["rules.yaml"])
    key_file = tmp / "bastion-key"
    key_file.write_text(BASTION_KEY + "\n")
    rules["keys"]["default_file"] = str(key_file)
    rules["responses_state"]["store"] = redis_url
    rules["clients"]["apps"][0]["secret_sha256"] = secret_sha256(secret)
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def test_two_gateway_replicas_share_redis_and_authenticate_apps(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = new_secret()
    with running_redis(tmp_path) as redis_url:
        rules = gateway_rules(tmp_path, redis_url, secret)
        env = proxy_env(sandbox, QUBITTRON_API_KEY=None)
        replicas = [start_proxy(tmp_path / name, env, rules=rules, extra=["--workers", "2"])
                    for name in ("one", "two")]
        try:
            def client(proxy: Proxy, credentials: bool = True) -> openai.OpenAI:
                url = proxy_url("billing", secret if credentials else "wrong", "127.0.0.1",
                                proxy.port)
                monkeypatch.setenv("HTTPS_PROXY", url)
                monkeypatch.setenv("SSL_CERT_FILE", proxy.app_env()["SSL_CERT_FILE"])
                monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
                return openai.OpenAI(api_key="sk-billing-app", max_retries=0)

            with pytest.raises(openai.APIConnectionError):  # 407 on CONNECT: no tunnel
                client(replicas[0], credentials=False).models.list()
            first = client(replicas[0]).responses.create(model="gpt-4o", input="I am Ada.")
            second = client(replicas[1]).responses.create(
                model="gpt-4o", input="Who am I?", previous_response_id=first.id)
            upstream = [json.loads(e["body"]) for e in sandbox.journal()
                        if e["path"] == "/v1/responses"][-1]
            said = [item["content"] if isinstance(item["content"], str)
                    else item["content"][0]["text"]
                    for item in upstream["input"] if item.get("role") == "user"]
            assert said == ["I am Ada.", "Who am I?"]
            assert sandbox.last("/v1/responses")["headers"]["authorization"] \
                == f"Bearer {BASTION_KEY}"
            assert client(replicas[0]).responses.retrieve(second.id).id == second.id
        finally:
            assert all(replica.process.stop() == 0 for replica in replicas)

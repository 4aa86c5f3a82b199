"""Issue 23, the rows left after round 2 (`authed` is its proxy): each run as an attacker
would against a real `bastion-edge run` on loopback."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import test_trust_round2 as round2
from harness import (
    APP_KEY,
    BASTION_KEY,
    REPO,
    Proxy,
    Sandbox,
    free_port,
    proxy_env,
    start_proxy,
    wait_until,
)
from test_batches import _hold
from trust_support import BILLING_KEY, BILLING_SECRET, REPORTS_SECRET, curl, rules_with_apps

from bastion_edge.core.auth_failures import THRESHOLD

authed = round2.authed  # the round-2 proxy: apps declared, the shipped rules
reports_url = round2.reports_url


def basic(app: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{app}:{secret}".encode()).decode()


# ---------------------------------------------------------------- row 1

def in_tunnel(proxy: Proxy, request_line: str, body: bytes) -> tuple[int, bytes]:
    """A CONNECT to api.openai.com, then one raw HTTP/1.1 request inside the TLS tunnel."""
    with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
        raw.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
                    b"Proxy-Authorization: " + basic("reports", REPORTS_SECRET).encode()
                    + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        tls = ssl.create_default_context(cafile=proxy.app_env()["SSL_CERT_FILE"])
        with tls.wrap_socket(raw, server_hostname="api.openai.com") as secure:
            secure.sendall(f"{request_line} HTTP/1.1\r\nHost: api.openai.com\r\n"
                           f"Authorization: Bearer {APP_KEY}\r\nContent-Type: application/json"
                           f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                           .encode() + body)
            reply = b""
            while chunk := secure.recv(65536):
                reply += chunk
    head, _, rest = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


CHAT = json.dumps({"model": "gpt-4o-mini",
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_an_absolute_form_request_naming_another_host_is_refused(
    authed: Proxy, sandbox: Sandbox
) -> None:
    sandbox.clear_journal()
    status, body = in_tunnel(authed, "POST https://evil.example/v1/chat/completions", CHAT)
    assert status == 400, body
    assert b"foreign_authority" in body
    assert sandbox.journal() == []  # Bastion never saw it, nor the key
    # The tunnel's own authority in absolute form is fine: sent on in origin form.
    status, body = in_tunnel(authed, "POST https://API.openai.com:443/v1/chat/completions",
                             CHAT)
    assert status == 200, body
    assert [entry["path"] for entry in sandbox.journal()] == ["/v1/chat/completions"]


# ---------------------------------------------------------------- rows 4, 5

def listening_ports(pid: int) -> set[int]:
    """TCP ports `pid` and its children listen on (from /proc)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    inodes: set[str] = set()
    for each in pids:
        for fd in Path(f"/proc/{each}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, one of ours
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def assert_refused(proxy_url: str, port: int) -> None:
    tunnel = curl("-m", "20", "-x", proxy_url, "-p", "-o", "/dev/null",
                  f"http://127.0.0.1:{port}/metrics")
    assert tunnel.returncode != 0 and "403" in tunnel.stderr, (port, tunnel.stderr)
    forwarded = curl("-m", "20", "-x", proxy_url, "-i", f"http://127.0.0.1:{port}/metrics")
    assert forwarded.stdout.startswith("HTTP/1.1 403"), (port, forwarded.stdout)
    body = forwarded.stdout.replace("\r\n", "\n").partition("\n\n")[2]
    assert json.loads(body)["error"]["code"] == "egress_refused", (port, body)


def test_the_proxys_own_listeners_are_refused_by_address(authed: Proxy) -> None:
    ports = listening_ports(authed.process.popen.pid)
    # The proxy, /metrics, the TTS adapter and the batch server at least.
    assert {authed.port, authed.metrics_port} < ports and len(ports) >= 4, ports
    for port in sorted(ports):
        assert_refused(reports_url(authed), port)


@pytest.fixture
def pool(sandbox: Sandbox, tmp_path: Path) -> Iterator[Proxy]:
    rules = tmp_path / "rules" / "rules.yaml"
    rules.parent.mkdir()
    rules.write_text((REPO / "rules.yaml").read_text()
                     + '\negress:\n  allow: ["127.0.0.1/32"]\n')
    proxy = start_proxy(tmp_path, proxy_env(sandbox), rules, extra=["--workers", "2"])
    yield proxy
    proxy.process.stop()


def published(worker: int) -> bool:
    """Has this worker told the pool every port it listens on?"""
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    socket_path = next(v for v in environ if v.startswith(b"BASTION_WORKER_ADMIN_SOCKET="))
    directory = Path(socket_path.split(b"=", 1)[1].decode()).parent
    known = {int(p) for f in directory.glob("*.ports") for p in f.read_text().split()}
    return listening_ports(worker) <= known


def test_a_network_exception_never_opens_any_workers_ports(pool: Proxy) -> None:
    parent = pool.process.popen.pid
    workers = [int(pid) for pid in subprocess.run(
        ["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()]
    assert len(workers) == 2
    for worker in workers:
        wait_until(lambda w=worker: published(w), what="worker ports published")
    ports = listening_ports(parent)
    assert pool.metrics_port in ports and len(ports) >= 6, ports  # TTS and batch of each
    for port in sorted(ports):
        for _ in range(4):  # new connections: the kernel picks either worker
            assert_refused(pool.url, port)


# ---------------------------------------------------------------- row 15

@pytest.fixture
def guessed(sandbox: Sandbox, tmp_path: Path) -> Iterator[Proxy]:
    running = start_proxy(tmp_path, proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BILLING_KEY),
                          rules_with_apps(tmp_path))
    yield running
    running.process.stop()


def test_guessing_proxy_secrets_is_logged_and_refused_per_source(guessed: Proxy) -> None:
    statuses = []
    with httpx.Client(timeout=30) as plain:
        for i in range(THRESHOLD + 10):
            reply = plain.get(f"http://127.0.0.1:{guessed.port}/", headers={
                "host": "api.openai.com",
                "proxy-authorization": basic("reports", f"guess-{i:04d}-wrong")})
            statuses.append(reply.status_code)
        assert statuses[:THRESHOLD] == [407] * THRESHOLD
        assert set(statuses[THRESHOLD:]) == {429}, statuses
        # During the cool-down even the right secret is not checked.
        right = plain.get(f"http://127.0.0.1:{guessed.port}/", headers={
            "host": "api.openai.com", "proxy-authorization": basic("reports", REPORTS_SECRET)})
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
        assert right.json()["error"]["code"] == "proxy_auth_throttled"
        # Another app on the same address (a pod's containers share loopback) is not.
        neighbour = plain.get(f"http://127.0.0.1:{guessed.port}/v1/models", headers={
            "host": "api.openai.com", "proxy-authorization": basic("billing", BILLING_SECRET)})
        assert neighbour.status_code not in (407, 429), neighbour.text
    log = guessed.process.log()
    failures = re.findall(r"failed proxy authentication from 127\.0\.0\.1 \(app 'reports'", log)
    assert len(failures) == THRESHOLD, log[-3000:]
    assert "guess-0" not in log  # never the secret
    throttled = [line for line in guessed.metrics().splitlines()
                 if line.startswith('bastion_edge_proxy_errors_total{code="proxy_auth_throttled"')]
    assert throttled and float(throttled[0].rsplit(" ", 1)[1]) == 11, throttled


# ---------------------------------------------------------------- row 14

def test_a_flow_in_flight_shows_no_bastion_key_in_mitmweb(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    web_port = free_port()
    proxy = start_proxy(tmp_path, proxy_env(sandbox), extra=["--web", "--web-port", str(web_port)])
    token = next(line for line in proxy.process.log().splitlines()
                 if line.startswith("mitmweb")).split("token=", 1)[1]
    web = httpx.Client(base_url=f"http://127.0.0.1:{web_port}",
                       headers={"Authorization": f"Bearer {token}"})
    _hold(sandbox, "PUT", body={"path": "/v1/chat/completions", "pass": 0})
    try:
        trust = ssl.create_default_context(cafile=proxy.app_env()["SSL_CERT_FILE"])
        with ThreadPoolExecutor(1) as pool, httpx.Client(proxy=proxy.url, verify=trust,
                                                         timeout=60) as app:
            slow = pool.submit(app.post, "https://api.openai.com/v1/chat/completions",
                               content=CHAT, headers={"authorization": f"Bearer {APP_KEY}"})
            try:
                # Sent to Bastion (the key went out) and waiting there for its answer.
                wait_until(lambda: _hold(sandbox, "GET")["waiting"] == 1,
                           what="chat in flight")
                flows = web.get("/flows").json()
                dump = web.get("/flows/dump").content
            finally:
                _hold(sandbox, "DELETE")
            assert slow.result().status_code == 200
        assert any(f["request"]["path"] == "/v1/chat/completions" and not f.get("response")
                   for f in flows), flows
        assert BASTION_KEY not in json.dumps(flows)
        assert BASTION_KEY.encode() not in dump
        # Bastion got the real key, not the redacted one.
        assert sandbox.journal()[-1]["headers"]["authorization"] == f"Bearer {BASTION_KEY}"
    finally:
        _hold(sandbox, "DELETE")
        web.close()
        proxy.process.stop()

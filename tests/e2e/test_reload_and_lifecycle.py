"""Hot reload (plain edits, a broken file, a ConfigMap symlink swap), SSE model
restoration, observability endpoints, clean shutdown, and `mitmdump -s`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import make_client
from harness import (
    BASTION_KEY,
    BIN,
    REPO,
    Proxy,
    Sandbox,
    free_port,
    proxy_env,
    start,
    start_proxy,
    wait_until,
)

MESSAGES = [{"role": "user", "content": "hi"}]
RULES_A = "models:\n  gpt-4o: gpt-oss-120b\n"
RULES_B = "models:\n  gpt-4o: gpt-oss-20b\n"


def _model_now(client: openai.OpenAI) -> str:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES).model  # type: ignore[arg-type]


def _eventually(check: Callable[[], bool], seconds: float = 3.0) -> float:
    """Seconds until `check` held; fails after `seconds` (the reload promise)."""
    start_at = time.monotonic()
    wait_until(check, timeout=seconds, what="hot reload")
    return time.monotonic() - start_at


@pytest.fixture
def configmap(tmp_path: Path) -> Path:
    """Kubernetes layout: rules.yaml -> ..data/rules.yaml, ..data -> ..<timestamp>."""
    root = tmp_path / "configmap"
    first = root / "..2026_11_24_00_00_00.000000001"
    first.mkdir(parents=True)
    (first / "rules.yaml").write_text(RULES_A)
    (root / "..data").symlink_to(first.name)
    (root / "rules.yaml").symlink_to("..data/rules.yaml")
    return root


def _swap_configmap(root: Path, text: str, stamp: str) -> None:
    new = root / f"..2026_11_24_00_00_0{stamp}.000000001"
    new.mkdir()
    (new / "rules.yaml").write_text(text)
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(new.name)
    os.replace(tmp_link, root / "..data")


@pytest.fixture
def reload_proxy(
    sandbox: Sandbox, tmp_path: Path, configmap: Path
) -> Iterator[Proxy]:
    running = start_proxy(tmp_path / "p", proxy_env(sandbox), rules=configmap / "rules.yaml")
    yield running
    running.process.stop()


def test_configmap_swap_edit_and_broken_file(
    monkeypatch: pytest.MonkeyPatch, reload_proxy: Proxy, configmap: Path
) -> None:
    client = make_client(monkeypatch, reload_proxy)
    assert _model_now(client) == "gpt-oss-120b"

    _swap_configmap(configmap, RULES_B, "1")
    _eventually(lambda: _model_now(client) == "gpt-oss-20b")

    # A broken file is rejected; the last good rules keep serving.
    _swap_configmap(configmap, "models:\n  gpt-4o: 3\n", "2")
    wait_until(lambda: 'bastion_edge_rules_reloads_total{result="failure"} 1.0'
               in reload_proxy.metrics(), timeout=3, what="reload failure counted")
    assert _model_now(client) == "gpt-oss-20b"
    assert 'models."gpt-4o": expected a string' in reload_proxy.process.log()

    # An in-place edit (not a swap) is picked up too.
    target = (configmap / "rules.yaml").resolve()
    target.write_text(RULES_A)
    _eventually(lambda: _model_now(client) == "gpt-oss-120b")


def test_sse_reply_model_original_restored_inside_chunks(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_A + "reply_model: original\n")
    proxy = start_proxy(tmp_path, proxy_env(sandbox), rules=rules)
    try:
        client = make_client(monkeypatch, proxy)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        assert raw.headers["x-bastion-edge-upstream-model"] == "gpt-oss-120b"
        chunks = list(raw.parse())
        assert chunks and {c.model for c in chunks} == {"gpt-4o"}
        assert _model_now(client) == "gpt-4o"
    finally:
        proxy.process.stop()


def test_health_readiness_and_sigterm(proxy_factory: Callable[[], Proxy]) -> None:
    proxy = proxy_factory()
    base = f"http://127.0.0.1:{proxy.metrics_port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert proxy.process.stop() == 0
    printed = proxy.process.log()
    assert f"listening on 127.0.0.1:{proxy.port}" in printed
    assert "mitmproxy-ca-cert.pem" in printed and "export HTTPS_PROXY=" in printed


@pytest.fixture
def proxy_factory(sandbox: Sandbox, tmp_path: Path) -> Iterator[Callable[[], Proxy]]:
    started: list[Proxy] = []

    def make() -> Proxy:
        started.append(start_proxy(tmp_path / str(len(started)), proxy_env(sandbox)))
        return started[-1]

    yield make
    for proxy in started:
        proxy.process.stop()


def test_same_addon_in_plain_mitmdump(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    confdir = tmp_path / "mitm"
    process = start(
        [str(BIN / "mitmdump"), "-q", "-s", str(REPO / "addon" / "bastion_edge_addon.py"),
         "--listen-host", "127.0.0.1", "--listen-port", str(port),
         "--set", f"confdir={confdir}", "--set", f"bastion_rules={REPO / 'rules.yaml'}",
         "--set", f"bastion_metrics_port={metrics_port}"],
        tmp_path / "mitmdump.log", proxy_env(sandbox))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{metrics_port}/readyz").status_code
                   == 200, what="mitmdump readiness")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("SSL_CERT_FILE", str(confdir / "mitmproxy-ca-cert.pem"))
        client = openai.OpenAI(api_key="sk-mitmdump-app", max_retries=0)
        assert _model_now(client) == "gpt-oss-120b"
        seen = sandbox.last("/v1/chat/completions")
        assert seen["headers"]["authorization"] == f"Bearer {BASTION_KEY}"
    finally:
        process.popen.send_signal(signal.SIGINT)
        process.popen.wait(10)


def test_access_log_bodies_only_on_request_and_redacted(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, tmp_path: Path
) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox), extra=["--access-log-bodies"])
    try:
        client = make_client(monkeypatch, proxy)
        leaked = "my key is sk-proj-abcdefghijklmnop and " + BASTION_KEY
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": leaked}],
            extra_body={"metadata": {"api_key": "plain-secret"}})
        text = proxy.access_log.read_text()
        assert "sk-proj-abcdefghijklmnop" not in text and BASTION_KEY not in text
        assert "plain-secret" not in text
        import json

        record = json.loads(text.splitlines()[-1])
        assert record["request_body"]["model"] == "gpt-oss-120b"
        assert record["request_body"]["metadata"]["api_key"] == "[redacted]"
        assert record["response_body"]["model"] == "gpt-oss-120b"
    finally:
        proxy.process.stop()


def test_web_mode_shows_rewritten_flows_annotated(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, tmp_path: Path
) -> None:
    web_port = free_port()
    proxy = start_proxy(tmp_path, proxy_env(sandbox), extra=["--web", "--web-port", str(web_port)])
    try:
        client = make_client(monkeypatch, proxy)
        assert _model_now(client) == "gpt-oss-120b"
        url = next(line.split(": ", 1)[1] for line in proxy.process.log().splitlines()
                   if line.startswith("mitmweb"))
        token = url.split("token=", 1)[1]
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows",
                          headers={"Authorization": f"Bearer {token}"}).json()
        ours = [f for f in flows if f["request"]["path"] == "/v1/chat/completions"]
        assert ours and ours[-1]["comment"].startswith("bastion-edge: host, key, model")
        assert ours[-1]["marked"]
        shown = " ".join(str(v) for f in ours for v in f["request"]["headers"])
        assert BASTION_KEY not in shown  # redacted once sent
    finally:
        proxy.process.stop()

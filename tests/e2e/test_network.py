"""curl as the client: http->https, already-Bastion traffic, and untouched tunnels."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from harness import APP_KEY, BASTION_KEY, REPO, Proxy, Sandbox, free_port, proxy_env, start_proxy


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--noproxy", "", *args],
                          capture_output=True, text=True, timeout=30)


def test_http_openai_via_http_proxy_is_rewritten_over_https(
    proxy: Proxy, sandbox: Sandbox
) -> None:
    done = curl("-x", proxy.url, "http://api.openai.com/v1/chat/completions",
                "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                "-d", json.dumps({"model": "gpt-4o", "messages": [{"role": "user",
                                                                    "content": "plain"}]}))
    reply = json.loads(done.stdout)
    assert reply["model"] == "gpt-oss-120b"
    seen = sandbox.last("/v1/chat/completions")
    assert seen["headers"]["authorization"] == f"Bearer {BASTION_KEY}"


def test_http_bastion_is_upgraded_keeping_the_apps_own_key(
    proxy: Proxy, sandbox: Sandbox
) -> None:
    own_key = "app-own-bastion-key-3d1"
    done = curl("-x", proxy.url, "http://api.qubittron.ai/v1/embeddings", "-D", "-",
                "-H", f"Authorization: Bearer {own_key}", "-H", "content-type: application/json",
                "-d", json.dumps({"model": "bge-m3", "input": "hi"}))
    assert "x-bastion-edge-rewrites: https-upgrade" in done.stdout.lower()
    seen = sandbox.last("/v1/embeddings")
    assert seen["headers"]["authorization"] == f"Bearer {own_key}"


def test_https_bastion_passes_through_unchanged(proxy: Proxy, sandbox: Sandbox) -> None:
    own_key = "app-own-bastion-key-https"
    body = json.dumps({"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}]})
    done = curl("-x", proxy.url, "--cacert", proxy.app_env()["SSL_CERT_FILE"],
                "https://api.qubittron.ai/v1/chat/completions",
                "-H", f"Authorization: Bearer {own_key}", "-H", "content-type: application/json",
                "-d", body)
    assert json.loads(done.stdout)["model"] == "gpt-oss-20b"
    seen = sandbox.last("/v1/chat/completions")
    assert seen["headers"]["authorization"] == f"Bearer {own_key}"


def test_sandbox_http_answers_only_with_a_redirect(sandbox: Sandbox) -> None:
    done = curl("-D", "-", "-o", "/dev/null",
                f"http://127.0.0.1:{sandbox.http_port}/v1/models",
                "-H", "Authorization: Bearer whatever")
    assert done.stdout.startswith("HTTP/1.1 301")
    assert f"location: https://127.0.0.1:{sandbox.port}/v1/models" in done.stdout.lower()


@pytest.fixture(scope="module")
def other_tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Some non-OpenAI HTTPS service with its own CA."""
    ca = trustme.CA()
    ca_path = tmp_path_factory.mktemp("other") / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    port = free_port()
    loop = asyncio.new_event_loop()

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="origin says hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port, ca_path
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def proxy(
    sandbox: Sandbox, other_tls_host: tuple[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """The shipped rules, plus the egress exception the loopback stand-in host needs."""
    tmp = tmp_path_factory.mktemp("proxy")
    rules = tmp / "rules.yaml"
    rules.write_text((REPO / "rules.yaml").read_text()
                     + f'egress:\n  allow: ["localhost:{other_tls_host[0]}"]\n')
    running = start_proxy(tmp, proxy_env(sandbox), rules)
    yield running
    assert running.process.stop() == 0, running.process.log()


def test_other_tls_hosts_are_tunnelled_with_their_own_certificate(
    proxy: Proxy, other_tls_host: tuple[int, Path]
) -> None:
    port, ca_path = other_tls_host
    # Trusting only the origin's CA proves the proxy did not decrypt (re-sign) it.
    done = curl("-x", proxy.url, "--cacert", str(ca_path), f"https://localhost:{port}/")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "origin says hi"

"""Only declared apps spend the Bastion key; tunnels go only where they should.

A real `bastion-edge run` with two apps declared, real clients (curl, openai-python,
openai-node through the preload) with credentials in their proxy URL.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from harness import (
    APP_KEY,
    BASTION_EDGE,
    BASTION_KEY,
    REPO,
    Proxy,
    Sandbox,
    free_port,
    proxy_env,
    start_proxy,
)
from trust_support import (
    BILLING_KEY,
    BILLING_SECRET,
    REPORTS_SECRET,
    Origin,
    curl,
    headers_of,
    loopback_origin,
    rules_with_apps,
    with_credentials,
)

CHAT = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with loopback_origin() as running:
        yield running


@pytest.fixture(scope="module")
def authed(
    sandbox: Sandbox, origin: Origin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("authed")
    rules = rules_with_apps(tmp, f'egress:\n  allow: ["localhost:{origin.port}"]\n')
    running = start_proxy(tmp, proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BILLING_KEY),
                          rules)
    yield running
    assert running.process.stop() == 0, running.process.log()


def reports_url(proxy: Proxy) -> str:
    return with_credentials(proxy.url, "reports", REPORTS_SECRET)


def openai_chat(proxy_url: str, bundle: str) -> subprocess.CompletedProcess[str]:
    return curl("-x", proxy_url, "--cacert", bundle, "-D", "-",
                "https://api.openai.com/v1/chat/completions",
                "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                "-d", CHAT)


@pytest.mark.parametrize("credentials", [None, ("billing", "wrong-secret"),
                                         ("nobody", BILLING_SECRET)])
def test_without_valid_credentials_curl_gets_407_and_nothing_reaches_bastion(
    authed: Proxy, sandbox: Sandbox, credentials: tuple[str, str] | None
) -> None:
    sandbox.clear_journal()
    url = with_credentials(authed.url, *credentials) if credentials else authed.url
    plain = curl("-x", url, "-i", "http://api.openai.com/v1/chat/completions",
                 "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                 "-d", CHAT)
    head, _, body = plain.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 407"), plain.stdout
    assert 'proxy-authenticate: basic realm="bastion-edge"' in head.lower()
    assert json.loads(body)["error"]["code"] == "proxy_authentication_required"
    tunnel = openai_chat(url, authed.app_env()["SSL_CERT_FILE"])
    assert tunnel.returncode != 0 and "407" in tunnel.stderr + tunnel.stdout
    assert sandbox.journal() == []


def test_curl_with_credentials_is_served_and_proxy_credentials_stay_behind(
    authed: Proxy, sandbox: Sandbox
) -> None:
    sandbox.clear_journal()
    bundle = authed.app_env()["SSL_CERT_FILE"]
    done = curl("-x", reports_url(authed), "--cacert", bundle,
                "https://api.openai.com/v1/chat/completions",
                "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                # inside the tunnel: must not be forwarded either
                "-H", "Proxy-Authorization: Basic c211Z2dsZWQ6c2VjcmV0", "-d", CHAT)
    assert json.loads(done.stdout)["model"] == "gpt-oss-120b", done.stderr
    plain = curl("-x", reports_url(authed), "http://api.openai.com/v1/chat/completions",
                 "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                 "-d", CHAT)
    assert json.loads(plain.stdout)["model"] == "gpt-oss-120b"
    seen = [headers_of(e) for e in sandbox.journal()]
    assert len(seen) == 2
    for headers in seen:
        assert headers["authorization"] == f"Bearer {BASTION_KEY}"
        assert "proxy-authorization" not in headers
    assert REPORTS_SECRET not in authed.process.log()
    assert REPORTS_SECRET not in authed.access_log.read_text()


def test_openai_python_with_credentials_in_the_proxy_url_spends_its_own_key(
    authed: Proxy, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in authed.app_env().items():
        monkeypatch.setenv(name, value)
    url = with_credentials(authed.url, "billing", BILLING_SECRET)
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    sandbox.clear_journal()
    client = openai.OpenAI(api_key=APP_KEY, max_retries=0)
    reply = client.embeddings.create(model="text-embedding-3-small", input="billing")
    assert reply.model == "bge-m3"
    assert headers_of(sandbox.last("/v1/embeddings"))["authorization"] == f"Bearer {BILLING_KEY}"


NODE_APP = """\
import OpenAI from "openai";
const client = new OpenAI({ maxRetries: 0, timeout: 20000 });
const chat = await client.chat.completions.create({
  model: "gpt-4o", messages: [{ role: "user", content: "hello from node" }] });
console.log(JSON.stringify({ chat: chat.model }));
"""


@pytest.mark.parametrize("secret", [BILLING_SECRET, "wrong"])
def test_openai_node_through_the_preload_with_credentials(
    authed: Proxy, sandbox: Sandbox, tmp_path: Path, secret: str
) -> None:
    from test_transparent import app_env, node_app, require_node

    require_node()
    sandbox.clear_journal()
    env = authed.app_env()
    url = with_credentials(authed.url, "billing", secret)
    env.update(HTTPS_PROXY=url, HTTP_PROXY=url)
    app = node_app(tmp_path / "node-app", NODE_APP)
    done = subprocess.run(["node", str(app)], env=app_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60, check=False)
    if secret == BILLING_SECRET:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["chat"] == "gpt-oss-120b"
        seen = headers_of(sandbox.last("/v1/chat/completions"))
        assert seen["authorization"] == f"Bearer {BILLING_KEY}"
    else:
        assert done.returncode != 0
        assert "407" in done.stderr
        assert sandbox.journal() == []


def test_egress_to_loopback_metadata_and_own_ports_is_refused(
    authed: Proxy, origin: Origin
) -> None:
    url = reports_url(authed)
    before = len(origin.hits)
    for target in (f"127.0.0.1:{origin.port}", f"[::1]:{origin.port}",
                   f"localhost:{authed.metrics_port}", f"127.0.0.1:{authed.port}",
                   "169.254.169.254:80"):
        done = curl("-x", url, "-p", "-o", "/dev/null", f"http://{target}/")
        assert done.returncode != 0 and "403" in done.stderr, (target, done.stderr)
    for target in (f"127.0.0.1:{authed.metrics_port}/metrics", f"127.0.0.1:{origin.port}/",
                   "169.254.169.254/latest/meta-data/", f"[::1]:{origin.port}/"):
        done = curl("-x", url, "-i", f"http://{target}")
        assert done.stdout.startswith("HTTP/1.1 403"), (target, done.stdout)
        assert '"egress_refused"' in done.stdout
        assert "bastion_edge_requests" not in done.stdout
    assert len(origin.hits) == before  # nothing got through
    assert 'code="egress_refused"' in authed.metrics()


def test_an_allow_listed_loopback_service_is_reachable(authed: Proxy, origin: Origin) -> None:
    url = reports_url(authed)
    tunnelled = curl("-x", url, "-p", f"http://localhost:{origin.port}/tunnel")
    assert tunnelled.stdout == "loopback origin says hi", tunnelled.stderr
    forwarded = curl("-x", url, f"http://localhost:{origin.port}/forward")
    assert forwarded.stdout == "loopback origin says hi", forwarded.stderr
    assert origin.hits[-2:] == ["/tunnel", "/forward"]
    # The exception names the host as the app asks for it, not every loopback name.
    assert curl("-x", url, "-p", f"http://127.0.0.1:{origin.port}/").returncode != 0


def test_listening_beyond_loopback_without_apps_refuses_to_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text((REPO / "rules.yaml").read_text())
    done = subprocess.run(
        [BASTION_EDGE, "run", "--listen-host", "0.0.0.0", "--listen-port", str(free_port()),
         "--metrics-port", "0", "--rules", str(rules), "--confdir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "clients.apps" in done.stderr and "--allow-unauthenticated" in done.stderr


def test_allow_unauthenticated_is_the_explicit_opt_out(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox),
                        extra=["--listen-host", "0.0.0.0", "--allow-unauthenticated"])
    try:  # the banner tells an app on this host the address it reaches, as `env` does
        assert proxy.app_env()["HTTPS_PROXY"] == f"http://127.0.0.1:{proxy.port}"
        reply = httpx.post("http://api.openai.com/v1/embeddings", proxy=proxy.url,
                           headers={"authorization": f"Bearer {APP_KEY}"},
                           json={"model": "text-embedding-3-small", "input": "x"}, timeout=20)
        assert reply.status_code == 200
    finally:
        assert proxy.process.stop() == 0

"""Fault injection, the HTTP->HTTPS redirector, the TLS material and the server lifecycle."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from sandbox_support import AUTH, client_for, run_sandbox_thread, sse_data

from bastion_sandbox import (
    FaultPlan,
    RunningSandbox,
    SandboxConfig,
    ensure_tls,
    parse_faults,
    start_sandbox,
)

CHAT_BODY = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "fault me"}]}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client_for(sandbox, headers=AUTH) as c:
        yield c


def fault(value: str) -> dict[str, str]:
    return {"x-sandbox-fault": value}


# --- parsing --------------------------------------------------------------------------


def test_parse_faults_combinations() -> None:
    assert parse_faults(None) == FaultPlan()
    assert parse_faults(" delay-ms=250, status=429 ", "40") == FaultPlan(
        delay_ms=250, status=429, token_delay_ms=40
    )
    assert parse_faults("reset").reset
    assert parse_faults("stall-after-headers-ms=10").stall_after_headers_ms == 10


@pytest.mark.parametrize("bad", ["status=200", "status=abc", "delay-ms=-1", "explode", "reset=1"])
def test_parse_faults_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_faults(bad)


def test_bad_fault_header_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=CHAT_BODY, headers=fault("explode"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_sandbox_fault"


# --- faults over the wire ----------------------------------------------------------------


def test_delay(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=CHAT_BODY, headers=fault("delay-ms=300"))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_status_429_has_retry_after(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=CHAT_BODY, headers=fault("status=429"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_status_500_and_delay_combined(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.post(
        "/v1/embeddings",
        json={"model": "bge-m3", "input": "x"},
        headers=fault("delay-ms=100,status=500"),
    )
    assert time.monotonic() - started >= 0.1
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "server_error")


def test_reset_drops_the_connection(sandbox: RunningSandbox, client: httpx.Client) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/v1/chat/completions", json=CHAT_BODY, headers=fault("reset"))
    entry = client.get("/sandbox/journal").json()[-1]
    assert entry["headers"]["x-sandbox-fault"] == "reset"
    assert entry["status"] is None
    assert client.get("/v1/models").status_code == 200  # the next connection works


def test_stall_after_headers_on_stream(client: httpx.Client) -> None:
    body = {**CHAT_BODY, "stream": True}
    started = time.monotonic()
    headers = fault("stall-after-headers-ms=500")
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        headers_at = time.monotonic() - started
        lines = response.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - started
        text = "\n".join([first, *lines])
    finished = time.monotonic() - started
    assert headers_at < 0.4 and first_at < 0.4
    assert first.startswith("data: ")
    assert finished >= 0.5
    assert sse_data(text)[-1] == "[DONE]"


def test_stall_after_headers_on_plain_reply(client: httpx.Client) -> None:
    started = time.monotonic()
    headers = fault("stall-after-headers-ms=400")
    with client.stream("GET", "/v1/models", headers=headers) as response:
        headers_at = time.monotonic() - started
        body = json.loads(response.read())
    assert headers_at < 0.3
    assert time.monotonic() - started >= 0.4
    assert body["object"] == "list"


def test_token_delay_paces_sse(client: httpx.Client) -> None:
    body = {**CHAT_BODY, "stream": True}
    started = time.monotonic()
    response = client.post(
        "/v1/chat/completions", json=body, headers={"x-sandbox-token-delay-ms": "50"}
    )
    events = len(sse_data(response.text))
    assert events >= 6
    assert time.monotonic() - started >= 0.05 * (events - 1)


# --- HTTP redirector --------------------------------------------------------------------


def test_http_listener_redirects_everything_with_301(sandbox: RunningSandbox) -> None:
    assert sandbox.http_origin is not None
    response = httpx.post(f"{sandbox.http_origin}/v1/chat/completions?x=1", json=CHAT_BODY)
    assert response.status_code == 301
    assert response.headers["location"] == f"{sandbox.origin}/v1/chat/completions?x=1"


def test_following_the_redirect_loses_the_key(sandbox: RunningSandbox) -> None:
    with httpx.Client(verify=sandbox.tls.client_ssl_context(), follow_redirects=True) as c:
        response = c.post(
            f"{sandbox.http_origin}/v1/chat/completions", json=CHAT_BODY, headers=AUTH
        )
    assert response.status_code == 401
    assert response.history[0].status_code == 301


# --- TLS and lifecycle --------------------------------------------------------------------


def test_tls_files_permissions_sans_and_reuse(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path)
    assert stat.S_IMODE(tls.ca_cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(tls.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.server_key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "api.qubittron.ai"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    ca_pem, server_pem = tls.ca_cert.read_bytes(), tls.server_cert.read_bytes()
    ensure_tls(tmp_path)
    assert tls.ca_cert.read_bytes() == ca_pem and tls.server_cert.read_bytes() == server_pem
    tls.server_cert.unlink()
    ensure_tls(tmp_path)  # a new server cert from the same CA
    assert tls.ca_cert.read_bytes() == ca_pem
    assert tls.server_cert.read_bytes() != server_pem
    x509.load_pem_x509_certificate(tls.server_cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca_pem)
    )


def test_cert_verifies_as_api_qubittron_ai(sandbox: RunningSandbox) -> None:
    """A client that resolves Bastion's host name to the sandbox accepts its certificate."""
    context = ssl.create_default_context(cafile=sandbox.ca_path)
    with (
        socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="api.qubittron.ai") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with (
        socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="api.openai.com")


def test_start_sandbox_in_a_loop_and_stop(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        running = await start_sandbox(SandboxConfig(port=0, tls_dir=tmp_path))
        try:
            assert running.port != 0 and running.http_port is None
            context = running.tls.client_ssl_context()
            async with httpx.AsyncClient(verify=context) as c:
                response = await c.get(f"{running.base_url}/models", headers=AUTH)
            return running.port, response.status_code
        finally:
            await running.stop()

    port, status = asyncio.run(scenario())
    assert status == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{port}/v1/models", verify=False)

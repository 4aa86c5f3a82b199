"""Errors: the proxy's own are OpenAI envelopes with fitting statuses; upstream's pass
through unchanged, so the SDK raises the same typed exceptions; the proxy keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import make_client
from harness import Proxy, Sandbox, free_port, proxy_env, start_proxy

MESSAGES = [{"role": "user", "content": "hi"}]


def _chat(client: openai.OpenAI, **extra: object) -> object:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES,  # type: ignore[arg-type]
                                          **extra)  # type: ignore[call-overload]


def test_unmapped_model_is_400_naming_the_rules_file(client: openai.OpenAI, proxy: Proxy) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-9-ultra", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_mapped"
    assert str(proxy.rules) in caught.value.message


def test_upstream_errors_pass_through_typed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client, extra_headers={"x-sandbox-fault": "status=429"})
    assert caught.value.status_code == 429
    assert caught.value.response.headers.get("x-bastion-edge-error") is None
    with pytest.raises(openai.InternalServerError):
        _chat(client, extra_headers={"x-sandbox-fault": "status=500"})
    assert _chat(client)  # still serving


def test_upstream_reset_is_502_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        _chat(client, extra_headers={"x-sandbox-fault": "reset"})
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_connection_error"
    assert _chat(client)


def test_invalid_json_is_400(proxy: Proxy) -> None:
    import httpx

    env = proxy.app_env()
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=env["SSL_CERT_FILE"]) as http:
        reply = http.post("https://api.openai.com/v1/chat/completions",
                          content=b'{"model": "gpt-4o", "messages": [',
                          headers={"content-type": "application/json",
                                   "authorization": "Bearer sk-x"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_json"


@pytest.fixture(scope="module")
def slow_proxy(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("slow")
    rules = tmp / "rules.yaml"
    rules.write_text("upstream:\n  response_timeout_seconds: 1\nmodels:\n  gpt-4o: gpt-oss-120b\n")
    running = start_proxy(tmp, proxy_env(sandbox), rules=rules)
    yield running
    running.process.stop()


def test_upstream_timeout_is_504(monkeypatch: pytest.MonkeyPatch, slow_proxy: Proxy) -> None:
    client = make_client(monkeypatch, slow_proxy)
    with pytest.raises(openai.APIStatusError) as caught:
        _chat(client, extra_headers={"x-sandbox-fault": "delay-ms=3000"})
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert _chat(client)


def _one_off_proxy(tmp: Path, **env: str | None) -> Proxy:
    return start_proxy(tmp, proxy_env(None, **env))


def test_upstream_unreachable_is_502(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: Sandbox
) -> None:
    dead = f"https://127.0.0.1:{free_port()}/v1"
    proxy = _one_off_proxy(tmp_path, QUBITTRON_API_KEY="k-test", BASTION_BASE_URL=dead,
                           BASTION_UPSTREAM_CA=str(sandbox.ca))
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            _chat(make_client(monkeypatch, proxy))
        assert caught.value.status_code == 502
        assert caught.value.code == "upstream_unreachable"
    finally:
        assert proxy.process.stop() == 0


def test_upstream_tls_failure_is_502(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: Sandbox
) -> None:
    # No BASTION_UPSTREAM_CA: the sandbox's private CA is not trusted.
    proxy = _one_off_proxy(tmp_path, QUBITTRON_API_KEY="k-test",
                           BASTION_BASE_URL=sandbox.base_url, BASTION_UPSTREAM_CA=None)
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            _chat(make_client(monkeypatch, proxy))
        assert caught.value.code == "upstream_tls_error"
        assert not [e for e in sandbox.journal() if e["path"] == "/v1/chat/completions"
                    and "k-test" in str(e["headers"])]
    finally:
        proxy.process.stop()


def test_missing_bastion_key_fails_closed_with_401(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: Sandbox
) -> None:
    proxy = _one_off_proxy(tmp_path, BASTION_BASE_URL=sandbox.base_url,
                           BASTION_UPSTREAM_CA=str(sandbox.ca), QUBITTRON_API_KEY=None)
    sandbox.clear_journal()
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            _chat(make_client(monkeypatch, proxy))
        assert caught.value.code == "bastion_key_missing"
        assert "QUBITTRON_API_KEY" in caught.value.message
        assert sandbox.journal() == []
    finally:
        proxy.process.stop()


def test_refused_request_logs_the_model_the_app_asked_for(
    client: openai.OpenAI, proxy: Proxy
) -> None:
    import json

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-7-unknown", messages=MESSAGES)  # type: ignore[arg-type]
    record = json.loads(proxy.access_log.read_text().splitlines()[-1])
    assert (record["decision"], record["original_model"]) == ("refused", "gpt-7-unknown")
    assert record["error"] == "model_not_mapped" and record["destination"] == "proxy"

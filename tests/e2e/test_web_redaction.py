"""`run --web`: no Bastion key and no proxy credentials on any flow mitmweb shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from harness import APP_KEY, BASTION_KEY, Sandbox, free_port, proxy_env, start_proxy
from trust_support import BILLING_KEY, BILLING_SECRET, rules_with_apps, with_credentials


def test_web_flows_show_no_key_on_error_refused_streamed_and_tts_paths(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    web_port = free_port()
    proxy = start_proxy(tmp_path, proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BILLING_KEY),
                        rules_with_apps(tmp_path), extra=["--web", "--web-port", str(web_port)])
    try:
        url = with_credentials(proxy.url, "billing", BILLING_SECRET)
        app = {"authorization": f"Bearer {APP_KEY}"}
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(proxy=url, verify=proxy.app_env()["SSL_CERT_FILE"],
                          timeout=30) as client:
            base = "https://api.openai.com/v1"
            failed = client.post(f"{base}/chat/completions", json=chat,
                                 headers={**app, "x-sandbox-fault": "reset"})
            assert failed.status_code == 502  # the upstream error path
            refused = client.post(f"{base}/chat/completions", headers=app,
                                  json={**chat, "model": "no-such-model"})
            assert refused.status_code == 400
            streamed = client.post(f"{base}/chat/completions", headers=app,
                                   json={**chat, "stream": True})
            assert streamed.status_code == 200 and "data:" in streamed.text
            speech = client.post(f"{base}/audio/speech", headers=app,
                                 json={"model": "tts-1", "voice": "nova", "input": "hello"})
            assert speech.status_code == 200
        url_line = next(line for line in proxy.process.log().splitlines()
                        if line.startswith("mitmweb"))
        token = url_line.split("token=", 1)[1]
        flows: list[dict[str, Any]] = httpx.get(
            f"http://127.0.0.1:{web_port}/flows",
            headers={"Authorization": f"Bearer {token}"}).json()
        ours = [f for f in flows if f["request"]["path"].startswith("/v1/")]
        assert len(ours) >= 4
        assert any(f.get("error") for f in ours)  # the error path is among them
        shown = json.dumps(flows)
        for secret in (BASTION_KEY, BILLING_KEY, BILLING_SECRET):
            assert secret not in shown
        for flow in flows:
            names = {str(name).lower() for name, _ in flow["request"]["headers"]}
            assert "proxy-authorization" not in names
    finally:
        proxy.process.stop()

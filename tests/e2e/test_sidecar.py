"""The container entrypoint started as the container starts it (environment only),
its exported CA used by an SDK client, SIGTERM draining, and the examples checked
against what the entrypoint really reads."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from harness import REPO, Sandbox, free_port, proxy_env, seed_ca, start, wait_until

from bastion_edge.deploy.sidecar import ENV_VARS, EXPORTED_BUNDLE, EXPORTED_CA, EXPORTED_ENV

EXAMPLES = REPO / "sidecar" / "examples"


@pytest.fixture
def sidecar(sandbox: Sandbox, tmp_path: Path) -> Any:
    port, metrics_port = free_port(), free_port()
    shared = tmp_path / "shared"
    seed_ca(tmp_path / "data")  # the session's CA: generating one is tested in test_cli
    env = proxy_env(sandbox, BASTION_LISTEN_HOST="127.0.0.1", BASTION_LISTEN_PORT=str(port),
                    BASTION_METRICS_HOST="127.0.0.1", BASTION_METRICS_PORT=str(metrics_port),
                    BASTION_RULES=str(REPO / "rules.yaml"), BASTION_CONFDIR=str(tmp_path / "data"),
                    BASTION_EXPORT_DIR=str(shared), BASTION_PROXY_HOST="127.0.0.1",
                    BASTION_ACCESS_LOG=str(tmp_path / "access.log"),
                    BASTION_SHUTDOWN_GRACE="10")
    process = start([sys.executable, str(REPO / "sidecar" / "entrypoint.py")],
                    tmp_path / "sidecar.log", env)
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"
    wait_until(lambda: httpx.get(readyz).status_code == 200, what="sidecar readiness")
    yield process, shared, readyz
    process.stop()


def test_entrypoint_exports_ca_and_env_an_sdk_can_use(
    sidecar: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, shared, _ = sidecar
    assert (shared / EXPORTED_CA).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert oct((shared / EXPORTED_CA).stat().st_mode & 0o777) == "0o644"
    env = dict(line.split("=", 1) for line in (shared / EXPORTED_ENV).read_text().splitlines())
    assert env["SSL_CERT_FILE"] == str(shared / EXPORTED_BUNDLE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = openai.OpenAI(api_key="sk-sidecar-app", max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                       "content": "hi"}])
    assert reply.model == "gpt-oss-120b"


def test_sigterm_lets_in_flight_requests_finish(sidecar: Any, sandbox: Sandbox) -> None:
    process, shared, readyz = sidecar
    env = dict(line.split("=", 1) for line in (shared / EXPORTED_ENV).read_text().splitlines())
    result: dict[str, Any] = {}
    marker = f"slow-{uuid.uuid4().hex}"

    def slow_request() -> None:
        with httpx.Client(proxy=env["HTTPS_PROXY"], verify=env["SSL_CERT_FILE"]) as http:
            reply = http.post("https://api.openai.com/v1/chat/completions",
                              json={"model": "gpt-4o", "messages": [{"role": "user",
                                                                     "content": marker}]},
                              headers={"authorization": "Bearer sk-app",
                                       "x-sandbox-fault": "delay-ms=2000"}, timeout=30)
            result["status"] = reply.status_code

    def upstream_holds_it() -> bool:
        return any(marker in (e["body"] or "") and e["status"] is None
                   for e in sandbox.journal())

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_until(upstream_holds_it, what="the slow request to reach the sandbox")
    process.popen.send_signal(signal.SIGTERM)
    assert thread.is_alive()  # the signal arrived while the request was upstream
    wait_until(lambda: httpx.get(readyz).status_code == 503, what="not ready")
    thread.join(30)
    assert result.get("status") == 200  # finished during the grace period
    assert process.popen.wait(15) == 0


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "docker-compose.yaml").read_text())
    return loaded


def _k8s() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((EXAMPLES / "kubernetes.yaml").read_text()))


def _env_list(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_compose_example_references_what_the_entrypoint_reads() -> None:
    services = _compose()["services"]
    sidecar_env = services["bastion-edge"]["environment"]
    assert set(sidecar_env) - {"QUBITTRON_API_KEY"} <= set(ENV_VARS)
    mounts = {v.split(":")[1]: v for v in services["bastion-edge"]["volumes"]}
    assert sidecar_env["BASTION_RULES"].startswith(tuple(mounts))
    assert sidecar_env["BASTION_CONFDIR"] in mounts and sidecar_env["BASTION_EXPORT_DIR"] in mounts
    app_env = services["app"]["environment"]
    export = sidecar_env["BASTION_EXPORT_DIR"]
    assert app_env["SSL_CERT_FILE"] == f"{export}/{EXPORTED_BUNDLE}"
    assert app_env["NODE_EXTRA_CA_CERTS"] == f"{export}/{EXPORTED_CA}"
    port = sidecar_env["BASTION_LISTEN_PORT"]
    assert app_env["HTTPS_PROXY"] == f"http://{sidecar_env['BASTION_PROXY_HOST']}:{port}"
    assert services["app"]["depends_on"]["bastion-edge"]["condition"] == "service_healthy"


def test_kubernetes_example_is_a_native_sidecar_wired_to_the_entrypoint() -> None:
    documents = _k8s()
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    env = _env_list(sidecar)
    assert set(env) - {"QUBITTRON_API_KEY"} <= set(ENV_VARS)
    rules_dir, rules_file = os.path.split(env["BASTION_RULES"])
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts[rules_dir]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert rules_file in config_map["data"]
    assert env["BASTION_CONFDIR"] in mounts and env["BASTION_EXPORT_DIR"] in mounts
    metrics_port = int(env["BASTION_METRICS_PORT"])
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": metrics_port}
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["resources"]["requests"]
    app = spec["containers"][0]
    app_env = _env_list(app)
    assert app_env["HTTPS_PROXY"] == f"http://{env['BASTION_PROXY_HOST']}:{env['BASTION_LISTEN_PORT']}"
    assert app_env["SSL_CERT_FILE"] == f"{env['BASTION_EXPORT_DIR']}/{EXPORTED_BUNDLE}"
    app_mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    assert app_mounts[env["BASTION_EXPORT_DIR"]] == mounts[env["BASTION_EXPORT_DIR"]]
    # The config map itself is valid rules.
    from bastion_edge.config.rules import parse_rules

    assert parse_rules(config_map["data"][rules_file]).models


def test_dockerfile_builds_the_tested_way() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.1[2-9]-slim$", text, re.M)
    assert re.search(r"^ && make install \\$", text, re.M)
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert "EXPOSE 8080 9090" in text and "/healthz" in text
    assert '"/app/sidecar/entrypoint.py"' in text
    for line in re.findall(r"^ENV .*?(?<!\\)$", text, re.M | re.S):
        for name in re.findall(r"(BASTION_\w+)=", line):
            assert name in ENV_VARS

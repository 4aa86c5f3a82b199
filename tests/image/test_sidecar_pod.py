"""The built image in a pod, the Kubernetes sidecar form: the sandbox as Bastion, the
sidecar read-only, non-root, with no capabilities and two workers, and an app container
given only the documented variables and the exported CA bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pods import BASE, IMAGE, REPO, Pod, owned_dir, podman, podman_popen, podman_result, wait_for

pytestmark = pytest.mark.timeout(900)  # the first `make image` of a machine builds a base

BASTION_KEY = "bastion-image-test-key"
SIDECAR_ENV = {
    "QUBITTRON_API_KEY": BASTION_KEY,
    "BASTION_BASE_URL": "https://localhost:8443/v1",  # the sandbox, in the same pod
    "BASTION_UPSTREAM_CA": "/sandbox/ca.pem",
    "BASTION_METRICS_PORT": "9191",  # not the default: the HEALTHCHECK must follow it
    "BASTION_WORKERS": "2",
    "BASTION_SHUTDOWN_GRACE": "20",
}
CHAT = """
import json, sys, urllib.error, urllib.request
headers = {"Authorization": "Bearer sk-app-image-test", "Content-Type": "application/json"}
if sys.argv[2:]:
    headers["x-sandbox-fault"] = sys.argv[2]
body = {"model": "gpt-4o", "messages": [{"role": "user", "content": sys.argv[1]}]}
request = urllib.request.Request("https://api.openai.com/v1/chat/completions",
                                 data=json.dumps(body).encode(), headers=headers)
try:
    print(json.load(urllib.request.urlopen(request, timeout=60))["model"])
except urllib.error.HTTPError as e:
    sys.exit(f"{e.code}: {e.read().decode()}")
"""
JOURNAL = """
import json, ssl, urllib.request
context = ssl.create_default_context(cafile="/sandbox/ca.pem")
print(urllib.request.urlopen("https://localhost:8443/sandbox/journal", context=context).read()
      .decode())
"""


def documented_app_env() -> dict[str, str]:
    """The app's environment exactly as the compose example documents it."""
    compose = yaml.safe_load((REPO / "sidecar/examples/docker-compose.yaml").read_text())
    env: dict[str, str] = compose["services"]["app"]["environment"]
    return {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}


class Deployment:
    def __init__(self, pod: Pod, root: Path) -> None:
        self.pod, self.root = pod, root
        self.rules = root / "rules"
        self.ready_seconds = 0.0

    def chat(self, marker: str, *fault: str) -> subprocess.CompletedProcess[str]:
        return podman_result("exec", self.pod.name_of("app"), "python3", "-c", CHAT, marker,
                             *fault)

    def journal(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = json.loads(
            self.pod.exec("sidecar", "python", "-c", JOURNAL))
        return entries


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("pod")
    root.chmod(0o755)
    data, shared, sandbox = (owned_dir(root / n) for n in ("data", "shared", "sandbox"))
    rules = root / "rules"
    rules.mkdir()
    shutil.copy(REPO / "rules.yaml", rules / "rules.yaml")
    pod = Pod()
    try:
        pod.run("sandbox", ["sandbox", "--port", "8443", "--tls-dir", "/sandbox"],
                options=["--entrypoint", "bastion-edge"], mounts=[f"{sandbox}:/sandbox"])
        wait_for(lambda: (sandbox / "ca.pem").exists(), "the sandbox's CA")
        deployment = Deployment(pod, root)
        started = time.monotonic()
        pod.run("sidecar", env=SIDECAR_ENV, options=[
            "--read-only", "--cap-drop=all", "--stop-timeout", "30"], mounts=[
            f"{data}:/data", f"{shared}:/shared", f"{rules}:/etc/bastion-edge:ro",
            f"{sandbox}:/sandbox:ro"])
        wait_for(lambda: pod.healthy("sidecar"), "the sidecar's HEALTHCHECK", attempts=100)
        deployment.ready_seconds = time.monotonic() - started
        print(f"\nsidecar healthy {deployment.ready_seconds:.1f} s after `podman run`")
        pod.run("app", ["sleep", "infinity"], image=BASE, env=documented_app_env(),
                mounts=[f"{shared}:/shared:ro"], options=["--stop-timeout", "0"])
        yield deployment
    finally:
        pod.remove()


def test_app_reaches_bastion_with_the_bastion_key_only(deployment: Deployment) -> None:
    done = deployment.chat("hello from the app container")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gpt-oss-120b"
    entry = next(e for e in deployment.journal() if "hello from the app" in (e["body"] or ""))
    assert entry["model"] == "gpt-oss-120b"
    assert entry["headers"]["authorization"] == f"Bearer {BASTION_KEY}"
    assert "sk-" not in json.dumps(entry["headers"])


def test_sidecar_is_non_root_read_only_and_logs_what_the_app_needs(
        deployment: Deployment) -> None:
    pod = deployment.pod
    assert pod.exec("sidecar", "python", "-c", "import os; print(os.getuid())").strip() == "10001"
    write = podman_result("exec", pod.name_of("sidecar"), "touch", "/app/x")
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    log = pod.logs("sidecar")
    assert "export SSL_CERT_FILE=/shared/ca-bundle.pem" in log
    assert "export HTTPS_PROXY=http://localhost:8080" in log
    assert "export NODE_EXTRA_CA_CERTS=/shared/bastion-edge-ca.pem" in log
    assert "SSL_CERT_FILE=/data" not in log and "make install" not in log
    assert "2 workers" in log or "workers: 2" in log or "worker" in log


def test_healthcheck_survives_the_build_and_follows_the_metrics_port(
        deployment: Deployment) -> None:
    config = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE)
    assert "/app/sidecar/healthcheck.py" in config  # podman kept it: --format docker
    assert deployment.pod.healthy("sidecar")  # on 9191, where the sidecar listens


def test_rules_directory_mount_sees_an_atomic_replace(deployment: Deployment) -> None:
    rules = deployment.rules / "rules.yaml"
    text = rules.read_text()
    general = "- use: gpt-oss-120b                             # general-purpose chat"
    assert general in text
    temporary = deployment.rules / ".rules.yaml.tmp"  # an editor's save: write, then rename
    temporary.write_text(text.replace(general, "- use: gpt-oss-20b", 1))
    temporary.rename(rules)
    wait_for(lambda: deployment.chat("after the reload").stdout.strip() == "gpt-oss-20b",
             "the replaced rules to be served", attempts=30)


def test_sigterm_lets_a_request_in_flight_finish(deployment: Deployment) -> None:
    """Last in this module: it stops the sidecar."""
    pod = deployment.pod
    marker = "slow request in flight"
    slow = podman_popen("exec", pod.name_of("app"), "python3", "-c", CHAT, marker,
                        "delay-ms=4000")
    wait_for(lambda: any(marker in (e["body"] or "") and e["status"] is None
                         for e in deployment.journal()), "the slow request upstream")
    started = time.monotonic()
    podman("stop", "--time", "30", pod.name_of("sidecar"))  # SIGTERM, then the grace
    stop_seconds = time.monotonic() - started
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert out.strip() == "gpt-oss-20b"
    state = podman("inspect", "--format", "{{.State.ExitCode}}", pod.name_of("sidecar"))
    assert state.strip() == "0"
    print(f"\nsidecar stopped {stop_seconds:.1f} s after SIGTERM (one 4 s request in flight)")

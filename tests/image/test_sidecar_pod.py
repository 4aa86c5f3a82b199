"""The built image in a pod, the Kubernetes sidecar form: the sandbox as Bastion, the
sidecar read-only, non-root, with no capabilities and two workers, and an app container
given only the documented variables and the exported CA bundle."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import yaml
from pods import IMAGE, REPO, Pod, podman, podman_popen, podman_result, wait_for
from stack import BASTION_KEY, CHAT, Stack

pytestmark = pytest.mark.timeout(900)  # the first `make image` of a machine builds a base

SIDECAR_ENV = {
    "BASTION_METRICS_PORT": "9191",  # not the default: the HEALTHCHECK must follow it
    "BASTION_WORKERS": "2",
    "BASTION_SHUTDOWN_GRACE": "20",
}


def documented_app_env() -> dict[str, str]:
    """The app's environment exactly as the compose example documents it."""
    compose = yaml.safe_load((REPO / "sidecar/examples/docker-compose.yaml").read_text())
    env: dict[str, str] = compose["services"]["app"]["environment"]
    return {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Stack]:
    pod = Pod()
    try:
        stack = Stack(tmp_path_factory.mktemp("pod"), pod)
        stack.start_sandbox()
        stack.start_sidecar(SIDECAR_ENV)
        stack.start_app(documented_app_env())
        yield stack
    finally:
        pod.remove()


def test_app_reaches_bastion_with_the_bastion_key_only(deployment: Stack) -> None:
    done = deployment.chat("hello from the app container")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gpt-oss-120b"
    entry = next(e for e in deployment.journal() if "hello from the app" in (e["body"] or ""))
    assert entry["model"] == "gpt-oss-120b"
    assert entry["headers"]["authorization"] == f"Bearer {BASTION_KEY}"
    assert "sk-" not in json.dumps(entry["headers"])


def test_sidecar_is_non_root_read_only_and_logs_what_the_app_needs(
        deployment: Stack) -> None:
    pod = deployment.pod
    assert pod.exec("sidecar", "python", "-c", "import os; print(os.getuid())").strip() == "10001"
    write = podman_result("exec", pod.name_of("sidecar"), "touch", "/app/x")
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    log = pod.logs("sidecar")
    assert "export SSL_CERT_FILE=/shared/ca-bundle.pem" in log
    assert "export HTTPS_PROXY=http://localhost:8080" in log
    assert "export NODE_EXTRA_CA_CERTS=/shared/bastion-edge-ca.pem" in log
    assert "SSL_CERT_FILE=/data" not in log and "make install" not in log
    assert "2 workers ready" in log  # BASTION_WORKERS=2


def test_healthcheck_survives_the_build_and_follows_the_metrics_port(
        deployment: Stack) -> None:
    config = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE)
    assert "/app/sidecar/healthcheck.py" in config  # podman kept it: --format docker
    assert deployment.pod.healthy("sidecar")  # on 9191, where the sidecar listens


def test_rules_directory_mount_sees_an_atomic_replace(deployment: Stack) -> None:
    rules = deployment.rules / "rules.yaml"
    text = rules.read_text()
    general = "- use: gpt-oss-120b                             # general-purpose chat"
    assert general in text
    temporary = deployment.rules / ".rules.yaml.tmp"  # an editor's save: write, then rename
    replaced = text.replace(general, "- use: gpt-oss-20b", 1)
    temporary.write_text(replaced)
    temporary.rename(rules)
    wait_for(lambda: deployment.chat("after the reload").stdout.strip() == "gpt-oss-20b",
             "the replaced rules to be served", attempts=30)
    # Each of the two workers reloads on its own: both have (two starts and two reloads,
    # summed over the workers), before a later test relies on it.
    wait_for(lambda: 'bastion_edge_rules_reloads_total{result="success"} 4.0'
             in deployment.pod.exec("sidecar", "python", "-c", METRICS),
             "both workers to load the replaced rules", attempts=100)


METRICS = ("import urllib.request as u; print(u.build_opener(u.ProxyHandler({}))"
           ".open('http://127.0.0.1:9191/metrics').read().decode())")


def test_sigterm_lets_a_request_in_flight_finish(deployment: Stack) -> None:
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

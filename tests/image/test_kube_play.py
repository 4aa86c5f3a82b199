"""The shipped Kubernetes sidecar manifest under `podman kube play`, changed only where
podman differs from Kubernetes: podman has no native sidecars (an init container with
restartPolicy: Always would have to exit before the app starts), so the sidecar runs as a
regular container of the pod; no registry here, so the local images; the sandbox joins the
pod as Bastion; the pod gets no network, so no published ports; no probes (podman runs
httpGet probes with curl, which the image lacks, and keeps no image HEALTHCHECK: the test
runs the health check's script); emptyDirs and the Secret become host directories
(podman's emptyDir is root's, 0755, where Kubernetes' is 0777), the key file still `prod`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pods import BASE, IMAGE, REPO, Pod, owned_dir, podman, podman_result, wait_for
from stack import BASTION_KEY, CHAT, JOURNAL, SANDBOX_ENV

pytestmark = pytest.mark.timeout(900)  # the first `make image` of a machine builds a base

MANIFEST = REPO / "sidecar" / "examples" / "kubernetes.yaml"


def playable(documents: list[dict[str, Any]], keys: Path, root: Path) -> list[dict[str, Any]]:
    out = copy.deepcopy(documents)
    deployment = next(d for d in out if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = 1
    spec = deployment["spec"]["template"]["spec"]
    sidecar = spec.pop("initContainers")[0]
    assert sidecar.pop("restartPolicy") == "Always"  # the native sidecar podman lacks
    sidecar["image"] = IMAGE
    sidecar.pop("ports")  # podman 4 publishes containerPorts; this pod has no network
    # podman 4 runs an httpGet probe as `curl` inside the container (the image has none,
    # so the probe fails and podman restarts the sidecar); the image's HEALTHCHECK, asking
    # /readyz on the same port, is what the test waits for instead.
    sidecar.pop("livenessProbe")
    sidecar.pop("readinessProbe")
    sidecar["env"] += [{"name": k, "value": v} for k, v in SANDBOX_ENV.items()
                       if k != "QUBITTRON_API_KEY"]  # the key: the Secret's file
    sidecar["volumeMounts"].append({"name": "sandbox", "mountPath": "/sandbox"})
    app = spec["containers"][0]
    app.update(image=BASE, command=["sleep", "infinity"])
    sandbox_container = {"name": "sandbox", "image": IMAGE,
                         "command": ["bastion-edge", "sandbox", "--tls-dir", "/sandbox"],
                         "volumeMounts": [{"name": "sandbox", "mountPath": "/sandbox"}]}
    spec["containers"] = [sandbox_container, sidecar, app]
    for volume in spec["volumes"]:
        if "secret" in volume:
            del volume["secret"]
            volume["hostPath"] = {"path": str(keys), "type": "Directory"}
        if "emptyDir" in volume:  # podman's is root's, 0755 (Kubernetes': 0777)
            del volume["emptyDir"]
            path = owned_dir(root / volume["name"])
            volume["hostPath"] = {"path": str(path), "type": "Directory"}
    spec["volumes"].append({"name": "sandbox",
                            "hostPath": {"path": str(root / "sandbox"), "type": "Directory"}})
    return out


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Pod]:
    root = tmp_path_factory.mktemp("kube")
    root.chmod(0o755)
    keys, sandbox = root / "keys", owned_dir(root / "sandbox")
    keys.mkdir()
    (keys / "prod").write_text(BASTION_KEY)  # the Secret's key `prod`
    (keys / "prod").chmod(0o644)
    # The sandbox's CA before the sidecar reads it (a pod starts its containers together).
    podman("run", "--rm", "--network", "none", "-v", f"{sandbox}:/sandbox", "--entrypoint",
           "python", IMAGE, "-c", "from pathlib import Path; from bastion_edge.sandbox.tls "
           "import ensure_tls; ensure_tls(Path('/sandbox'))")
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    manifest = root / "kubernetes.yaml"
    manifest.write_text(yaml.safe_dump_all(playable(documents, keys, root)))
    try:
        podman("kube", "play", "--network", "none", str(manifest))
        name = podman("pod", "ps", "--format", "{{.Name}}", "--filter",
                      "name=legacy-app").split()[0]
        pod = Pod(name=name, create=False)
        wait_for(lambda: pod.ready("bastion-edge"), "the sidecar's readiness", attempts=100)
        yield pod
    finally:
        podman_result("kube", "down", str(manifest))


def test_the_manifest_runs_the_app_through_the_sidecar(played: Pod) -> None:
    done = podman_result("exec", played.name_of("app"), "python3", "-c", CHAT, "from kube play")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gpt-oss-120b"  # the ConfigMap's mapping
    journal = yaml.safe_load(played.exec("bastion-edge", "python", "-c", JOURNAL))
    entry = next(e for e in journal if "from kube play" in (e["body"] or ""))
    assert entry["headers"]["authorization"] == f"Bearer {BASTION_KEY}"  # the Secret's file

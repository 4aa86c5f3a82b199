"""One pod as the tests deploy it: the sandbox standing in for Bastion, the sidecar from the
image (read-only, no capabilities), an app container from the plain Python base."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pods import BASE, REPO, Pod, owned_dir, podman_result, wait_for

BASTION_KEY = "bastion-image-test-key"
SANDBOX_ENV = {
    "QUBITTRON_API_KEY": BASTION_KEY,
    "BASTION_BASE_URL": "https://localhost:8443/v1",  # the sandbox, in the same pod
    "BASTION_UPSTREAM_CA": "/sandbox/ca.pem",
}
# The app: the standard library only, so nothing but the environment points it anywhere.
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
import ssl, urllib.request
context = ssl.create_default_context(cafile="/sandbox/ca.pem")
print(urllib.request.urlopen("https://localhost:8443/sandbox/journal", context=context).read()
      .decode())
"""


class Stack:
    def __init__(self, root: Path, pod: Pod) -> None:
        self.root, self.pod = root, pod
        root.chmod(0o755)  # the sidecar's uid walks into its mounts
        self.data, self.shared, self.sandbox = (
            owned_dir(root / name) for name in ("data", "shared", "sandbox"))
        self.rules = root / "rules"  # the directory is mounted: atomic replaces are seen
        self.rules.mkdir()
        shutil.copy(REPO / "rules.yaml", self.rules / "rules.yaml")
        self.ready_seconds = 0.0

    def start_sandbox(self) -> None:
        self.pod.run("sandbox", ["sandbox", "--port", "8443", "--tls-dir", "/sandbox"],
                     options=["--entrypoint", "bastion-edge"],
                     mounts=[f"{self.sandbox}:/sandbox"])
        wait_for(lambda: (self.sandbox / "ca.pem").exists(), "the sandbox's CA")

    def start_sidecar(self, env: dict[str, str], options: Sequence[str] = ()) -> None:
        started = time.monotonic()
        self.pod.run("sidecar", env={**SANDBOX_ENV, **env}, options=[
            "--read-only", "--cap-drop=all", "--stop-timeout", "30", *options], mounts=[
            f"{self.data}:/data", f"{self.shared}:/shared", f"{self.rules}:/etc/bastion-edge:ro",
            f"{self.sandbox}:/sandbox:ro"])
        wait_for(lambda: self.pod.healthy("sidecar"), "the sidecar's HEALTHCHECK", attempts=100)
        self.ready_seconds = time.monotonic() - started
        print(f"\nsidecar healthy {self.ready_seconds:.1f} s after `podman run`")

    def start_app(self, env: dict[str, str], mounts: Sequence[str] = ()) -> None:
        self.pod.run("app", ["sleep", "infinity"], image=BASE, env=env,
                     mounts=[f"{self.shared}:/shared:ro", *mounts],
                     options=["--stop-timeout", "0"])

    def chat(self, marker: str, *fault: str) -> subprocess.CompletedProcess[str]:
        return podman_result("exec", self.pod.name_of("app"), "python3", "-c", CHAT, marker,
                             *fault)

    def journal(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = json.loads(
            self.pod.exec("sidecar", "python", "-c", JOURNAL))
        return entries

"""podman as the image tests drive it: one-line skip reasons, pods, containers, logs."""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("BASTION_TEST_IMAGE", "bastion-edge:test")
BASE = "python:3.13-slim"  # the Dockerfile's default FROM (made by scripts/debian-base)
SIDECAR_UID = 10001


@functools.cache
def missing() -> str | None:
    """Why podman can't run the image tests here, in one line; None when it can."""
    if shutil.which("podman") is None:
        return "podman missing (scripts/system-deps podman installs podman, runc, mmdebstrap)"
    if os.geteuid() != 0:
        return "podman as root needed (pods with NET_ADMIN init containers, uid 10001 mounts)"
    info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                          capture_output=True, text=True)
    if info.returncode != 0:
        return f"podman cannot run: {(info.stderr.strip().splitlines() or ['?'])[-1]}"
    has_base = subprocess.run(["podman", "image", "exists", BASE]).returncode == 0
    if not has_base and shutil.which("mmdebstrap") is None:
        return f"no {BASE} image and no mmdebstrap to make one"
    return None


def engine_env(folder: Path) -> dict[str, str]:
    """podman's environment: default ulimits within the host's (some hosts refuse the
    engine's 1048576 open files), for every container, a pod's infra container too."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conf = folder / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={files}:{files}", '
                    '"nproc=8192:8192"]\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


_ENV: dict[str, str] = {}


def _engine_env() -> dict[str, str]:
    if not _ENV:
        _ENV.update(engine_env(Path(tempfile.mkdtemp(prefix="bastion-podman-"))))
    return _ENV


def podman_result(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=_engine_env())


def podman_popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["podman", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_engine_env())


def podman(*args: str, check: bool = True, timeout: float = 300) -> str:
    done = podman_result(*args, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done.stdout


def wait_for(condition: Callable[[], bool], what: str, attempts: int = 300) -> None:
    """Poll (0.1 s apart) a bounded number of times; no wall-clock bound."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


@dataclass
class Pod:
    """A pod with no network but its own loopback: containers talk over 127.0.0.1 only."""

    name: str = field(default_factory=lambda: f"bastion-test-{uuid.uuid4().hex[:8]}")
    containers: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # `podman pod create` options
    create: bool = True  # False: a pod made otherwise (`podman kube play`)

    def __post_init__(self) -> None:
        if self.create:
            podman("pod", "create", "--name", self.name, "--network", "none", *self.options)

    def run(self, name: str, args: Sequence[str] = (), *, image: str = IMAGE,
            env: dict[str, str] | None = None, mounts: Sequence[str] = (),
            options: Sequence[str] = (), detach: bool = True, check: bool = True) -> str:
        full = f"{self.name}-{name}"
        argv = ["run", "--pod", self.name, "--name", full]
        argv += ["-d"] if detach else []
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        for mount in mounts:
            argv += ["-v", mount]
        self.containers.append(full)
        return podman(*argv, *options, image, *args, check=check)

    def name_of(self, name: str) -> str:
        return f"{self.name}-{name}"

    def logs(self, name: str) -> str:
        done = podman_result("logs", self.name_of(name))
        return done.stdout + done.stderr

    def exec(self, name: str, *argv: str, check: bool = True) -> str:
        return podman("exec", self.name_of(name), *argv, check=check)

    def healthy(self, name: str) -> bool:
        """The image's own HEALTHCHECK, as the engine runs it."""
        try:
            done = podman_result("healthcheck", "run", self.name_of(name), timeout=30)
        except subprocess.TimeoutExpired:  # a container podman is restarting can hang it
            return False
        return done.returncode == 0

    def netns_run(self, *argv: str) -> None:
        """A host command (e.g. `ip`) in the pod's network namespace."""
        infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", self.name).strip()
        pid = podman("inspect", "--format", "{{.State.Pid}}", infra).strip()
        subprocess.run(["nsenter", "-t", pid, "-n", *argv], check=True)

    def ready(self, name: str) -> bool:
        """The health check's script run by hand (kube play keeps no image HEALTHCHECK)."""
        done = podman_result("exec", self.name_of(name), "python", "/app/sidecar/healthcheck.py",
                             timeout=30)
        return done.returncode == 0

    def remove(self) -> None:
        podman("pod", "rm", "--force", "--time", "0", self.name, check=False)


def owned_dir(path: Path, uid: int = SIDECAR_UID) -> Path:
    """A host directory the sidecar's non-root user can write."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    return path

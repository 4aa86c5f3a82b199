"""The sandbox and `bastion-edge run` as child processes on free loopback ports.

Used by `bastion-edge demo`, the benchmark and the end-to-end tests: everything
binds 127.0.0.1, each process's output goes to a file, `stop()` sends SIGTERM.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
BASTION_EDGE = str(BIN / "bastion-edge")
DEMO_BASTION_KEY = "bastion-sandbox-key"
_LOG_IDS = count(1)
# The proxies' own plain-HTTP endpoints (/readyz, /metrics), polled often: one client,
# since each new one builds a TLS context (~30 ms of CPU) even for http://, and no
# proxy settings from the environment (those are the app's, not ours).
LOCAL_HTTP = httpx.Client(trust_env=False, timeout=10)


def printed_port(process: Process, pattern: str, what: str) -> int:
    """The port a child bound to port 0 printed (its first line matching `pattern`)."""
    found: list[int] = []

    def printed() -> bool:
        match = re.search(pattern, process.log())
        if match:
            found.append(int(match.group(1)))
            return True
        if process.popen.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{process.log()}")
        return False

    wait_until(printed, what=f"{what} to print its port")
    return found[0]


def free_port() -> int:
    """A port free right now, for callers that cannot let their child bind port 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; `timeout` is only a ceiling against a hung start
    (a busy 2-core machine can take many seconds to start a proxy), never a measure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start(args: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Process:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return Process(popen, log_path)


@dataclass
class Sandbox:
    process: Process
    port: int
    http_port: int
    tls_dir: Path

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca)), timeout=10)

    def journal(self, background: bool = False) -> list[dict[str, Any]]:
        """What the sandbox received; without the proxy's own background model-list
        reads unless `background`."""
        with self.client() as c:
            entries: list[dict[str, Any]] = c.get(
                f"https://127.0.0.1:{self.port}/sandbox/journal").json()
        return entries if background else [e for e in entries if not _background(e)]

    def clear_journal(self) -> None:
        with self.client() as c:
            c.delete(f"https://127.0.0.1:{self.port}/sandbox/journal")

    def last(self, path: str) -> dict[str, Any]:
        matching = [e for e in self.journal() if e["path"] == path]
        assert matching, f"sandbox never saw {path}"
        return matching[-1]


def start_sandbox(
    tmp: Path, extra: list[str] | None = None, tls_dir: Path | None = None
) -> Sandbox:
    """A sandbox; pass another sandbox's `tls_dir` to share its CA.

    It binds port 0 and the ports it got are read from its banner: no race with other
    processes for a port picked in advance."""
    tls_dir = tls_dir or tmp / "sandbox-tls"
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"sandbox-{os.getpid()}-{next(_LOG_IDS)}.log"
    process = start(
        [BASTION_EDGE, "sandbox", "--port", "0", "--http-port", "0",
         "--tls-dir", str(tls_dir), *(extra or [])], log_path)
    port = printed_port(process, r"sandbox on https://[^:]+:(\d+)/", "sandbox")
    http_port = printed_port(process, r"http redirect on http://[^:]+:(\d+)", "sandbox")
    sandbox = Sandbox(process, port, http_port, tls_dir)

    def up() -> bool:
        if process.popen.poll() is not None:
            raise RuntimeError(f"sandbox exited:\n{process.log()}")
        with sandbox.client() as c:
            return c.get(f"https://127.0.0.1:{port}/sandbox/journal").status_code == 200

    wait_until(up, what="sandbox")
    return sandbox


@dataclass
class Proxy:
    process: Process
    port: int
    metrics_port: int
    confdir: Path
    rules: Path
    access_log: Path
    env_lines: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return LOCAL_HTTP.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text

    def app_env(self) -> dict[str, str]:
        """What an app gets: exactly the lines `bastion-edge env` prints."""
        return dict(self.env_lines)


def proxy_env(
    sandbox: Sandbox | None, key: str = DEMO_BASTION_KEY, **overrides: str | None
) -> dict[str, str]:
    """The proxy's environment: this one, minus proxy settings, pointed at `sandbox`."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_PROXY") and not k.endswith("_proxy")}
    env.pop("SSL_CERT_FILE", None)
    if sandbox is not None:
        env.update(QUBITTRON_API_KEY=key, BASTION_BASE_URL=sandbox.base_url,
                   BASTION_UPSTREAM_CA=str(sandbox.ca))
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _start_proxy_once(
    tmp: Path, env: dict[str, str], rules: Path, extra: list[str] | None,
    port: int | None, confdir: Path | None,
) -> Proxy:
    metrics_port = free_port()
    confdir = confdir or tmp / "confdir"
    access_log = tmp / "access.log"
    process = start(
        [BASTION_EDGE, "run", "--listen-port", str(port or 0),
         "--metrics-port", str(metrics_port),
         "--confdir", str(confdir), "--rules", str(rules), "--access-log", str(access_log),
         *(extra or [])],
        tmp / "proxy.log", env)
    port = printed_port(process, r"bastion-edge listening on \S+:(\d+)", "proxy")
    proxy = Proxy(process, port, metrics_port, confdir, rules, access_log)

    def ready() -> bool:
        if process.popen.poll() is not None:
            raise RuntimeError(f"proxy exited:\n{process.log()}")
        return LOCAL_HTTP.get(f"http://127.0.0.1:{metrics_port}/readyz").status_code == 200

    wait_until(ready, what="proxy readiness")
    return proxy


def start_proxy(
    tmp: Path, env: dict[str, str], rules: Path, extra: list[str] | None = None,
    port: int | None = None, confdir: Path | None = None,
) -> Proxy:
    """A proxy on port 0 (the port it got is read from its banner); its metrics port is
    picked in advance (0 disables metrics), so a start that lost that port is retried."""
    tmp.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            proxy = _start_proxy_once(tmp, env, rules, extra, port, confdir)
            break
        except RuntimeError as e:
            if attempt == 2 or "address already in use" not in str(e).lower():
                raise
    for line in printed_app_env(proxy.process):
        name, _, value = line.removeprefix("export ").partition("=")
        proxy.env_lines[name] = shlex.split(value)[0]
    return proxy


_APP_ENV = re.compile(r"An app needs:\n((?:export [^\n]*\n)+)")


def printed_app_env(process: Process) -> list[str]:
    """The `export` lines the proxy printed under "An app needs:" (what `bastion-edge env`
    prints for it, by the same function), once the last of them ends."""
    found: list[str] = []

    def printed() -> bool:
        match = _APP_ENV.search(process.log())
        if match:
            found.extend(match.group(1).splitlines())
            return True
        if process.popen.poll() is not None:
            raise RuntimeError(f"proxy exited:\n{process.log()}")
        return False

    wait_until(printed, what="the proxy's banner")
    return found



def _background(entry: dict[str, Any]) -> bool:
    headers = entry.get("headers") or {}
    if isinstance(headers, list):
        headers = dict(headers)
    agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), "")
    return isinstance(agent, str) and agent.startswith("bastion-edge model-catalog")

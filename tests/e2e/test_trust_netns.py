"""A client on another host: a network namespace the test creates, joined by a veth pair.

Inside the namespace: the sandbox on 127.0.0.1:8443 and `bastion-edge run` listening on
0.0.0.0 with apps declared; `/etc/netns/<ns>/hosts` maps `sneaky-loopback.test` to
127.0.0.1 for the proxy. The test process, outside, is the remote client at
10.212.N.1. Needs root and iproute2; skipped otherwise. Removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from harness import APP_KEY, BASTION_EDGE, BASTION_KEY, Sandbox, proxy_env, start, wait_until
from test_transparent import Netns
from trust_support import REPORTS_SECRET, curl, headers_of, rules_with_apps, with_credentials

PROXY_PORT, METRICS_PORT, SANDBOX_PORT = 8080, 9090, 8443
CHAT = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "remote"}]})


@dataclass
class Remote:
    ns: Netns
    sandbox: Sandbox
    address: str  # the proxy's address as the remote client sees it

    @property
    def url(self) -> str:
        return f"http://{self.address}:{PROXY_PORT}"

    def journal(self) -> list[dict[str, object]]:
        return self.ns.call(self.sandbox.journal)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test creates a network namespace and a veth pair")
    if shutil.which("ip") is None:
        pytest.fail("iproute2 is missing: apt-get install -y iproute2")
    tmp = tmp_path_factory.mktemp("remote")
    pid = os.getpid()
    ns, outside, inside = Netns(f"be12-{pid}"), f"b12h{pid}", f"b12n{pid}"
    subnet = f"10.212.{pid % 250}"
    netns_etc = Path("/etc/netns")
    etc_existed = netns_etc.exists()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: netns_etc.rmdir() if not etc_existed and netns_etc.exists()
                         and not any(netns_etc.iterdir()) else None)
        cleanup.callback(shutil.rmtree, netns_etc / ns.name, True)
        cleanup.callback(subprocess.run, ["ip", "link", "del", outside], capture_output=True)
        cleanup.callback(subprocess.run, ["ip", "netns", "del", ns.name], capture_output=True)
        processes = []
        cleanup.callback(lambda: [p.stop(10) for p in reversed(processes)])
        for args in (["netns", "add", ns.name],
                     ["link", "add", outside, "type", "veth", "peer", "name", inside],
                     ["link", "set", inside, "netns", ns.name],
                     ["addr", "add", f"{subnet}.1/30", "dev", outside],
                     ["link", "set", outside, "up"],
                     ["-n", ns.name, "addr", "add", f"{subnet}.2/30", "dev", inside],
                     ["-n", ns.name, "link", "set", inside, "up"],
                     ["-n", ns.name, "link", "set", "lo", "up"]):
            subprocess.run(["ip", *args], check=True)
        (netns_etc / ns.name).mkdir(parents=True)
        (netns_etc / ns.name / "hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 sneaky-loopback.test\n")

        box = start(ns.argv([BASTION_EDGE, "sandbox", "--port", str(SANDBOX_PORT),
                             "--tls-dir", str(tmp / "sandbox-tls")]), tmp / "sandbox.log")
        processes.append(box)
        sandbox = Sandbox(box, SANDBOX_PORT, 0, tmp / "sandbox-tls")
        wait_until(lambda: box.popen.poll() is None and ns.call(
            lambda: sandbox.client().get(f"https://127.0.0.1:{SANDBOX_PORT}/sandbox/journal")
            .status_code == 200), what="sandbox in the namespace")
        proxy = start(ns.argv([
            BASTION_EDGE, "run", "--listen-host", "0.0.0.0", "--listen-port", str(PROXY_PORT),
            "--metrics-host", "0.0.0.0", "--metrics-port", str(METRICS_PORT),
            "--confdir", str(tmp / "confdir"), "--rules", str(rules_with_apps(tmp / "p"))]),
            tmp / "proxy.log", proxy_env(sandbox))
        processes.append(proxy)

        def ready() -> bool:
            if proxy.popen.poll() is not None:
                raise RuntimeError(f"proxy exited:\n{proxy.log()}")
            return httpx.get(f"http://{subnet}.2:{METRICS_PORT}/readyz",
                             trust_env=False).status_code == 200

        wait_until(ready, what="proxy readiness, probed from outside")
        yield Remote(ns, sandbox, f"{subnet}.2")


def test_a_remote_client_without_credentials_is_refused(remote: Remote) -> None:
    remote.ns.call(remote.sandbox.clear_journal)
    done = curl("-x", remote.url, "-i", "http://api.openai.com/v1/chat/completions",
                "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                "-d", CHAT)
    assert done.stdout.startswith("HTTP/1.1 407"), done.stdout + done.stderr
    assert remote.journal() == []


def test_a_remote_client_with_credentials_is_served(remote: Remote) -> None:
    remote.ns.call(remote.sandbox.clear_journal)
    url = with_credentials(remote.url, "reports", REPORTS_SECRET)
    done = curl("-x", url, "http://api.openai.com/v1/chat/completions",
                "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
                "-d", CHAT)
    assert json.loads(done.stdout)["model"] == "gpt-oss-120b", done.stdout + done.stderr
    (entry,) = remote.journal()
    assert headers_of(entry)["authorization"] == f"Bearer {BASTION_KEY}"  # type: ignore[arg-type]


def test_a_name_resolving_to_loopback_and_the_proxys_own_address_are_refused(
    remote: Remote,
) -> None:
    url = with_credentials(remote.url, "reports", REPORTS_SECRET)
    for target, reason in (
        (f"sneaky-loopback.test:{SANDBOX_PORT}", "127.0.0.1 is a loopback address"),
        (f"{remote.address}:{METRICS_PORT}", f"port {METRICS_PORT} is the proxy's own port"),
        (f"{remote.address}:{PROXY_PORT}", f"port {PROXY_PORT} is the proxy's own port"),
    ):
        tunnel = curl("-x", url, "-p", "-o", "/dev/null", f"http://{target}/")
        assert tunnel.returncode != 0 and "403" in tunnel.stderr, (target, tunnel.stderr)
        forward = curl("-x", url, "-i", f"http://{target}/metrics")
        assert forward.stdout.startswith("HTTP/1.1 403"), (target, forward.stdout)
        assert reason in forward.stdout

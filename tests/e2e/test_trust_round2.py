"""Trust boundary, round 2 (issue 23): each row the second audit reproduced, run as an
attacker would against a real `bastion-edge run` on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from harness import Proxy, Sandbox, proxy_env, start_proxy
from trust_support import BILLING_KEY, REPORTS_SECRET, curl, rules_with_apps, with_credentials


@pytest.fixture(scope="module")
def authed(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("round2")
    running = start_proxy(tmp, proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BILLING_KEY),
                          rules_with_apps(tmp))
    yield running
    assert running.process.stop() == 0, running.process.log()


def reports_url(proxy: Proxy) -> str:
    return with_credentials(proxy.url, "reports", REPORTS_SECRET)


# Row 6: metadata services outside link-local, and IPv6 forms that carry a refused IPv4.
@pytest.mark.parametrize("target", [
    "[fd00:ec2::254]:80",  # AWS IPv6 instance metadata
    "100.100.100.200:80",  # Alibaba Cloud metadata
    "168.63.129.16:80",  # Azure wire server
    "[64:ff9b::a9fe:a9fe]:80",  # NAT64 of 169.254.169.254
    "[64:ff9b:1::7f00:1]:80",  # local-use NAT64 of 127.0.0.1
    "[::ffff:a9fe:a9fe]:80",  # IPv4-mapped, hex spelling
    "[2002:a9fe:a9fe::1]:80",  # 6to4
])
def test_metadata_services_and_translated_forms_are_refused(authed: Proxy, target: str) -> None:
    tunnel = curl("-m", "20", "-x", reports_url(authed), "-p", "-o", "/dev/null",
                  f"http://{target}/latest/meta-data/")
    assert tunnel.returncode != 0 and "403" in tunnel.stderr, (target, tunnel.stderr)
    forwarded = curl("-m", "20", "-x", reports_url(authed), "-i",
                     f"http://{target}/latest/meta-data/")
    assert forwarded.stdout.startswith("HTTP/1.1 403"), (target, forwarded.stdout)
    body = forwarded.stdout.replace("\r\n", "\n").partition("\n\n")[2]
    assert json.loads(body)["error"]["code"] == "egress_refused"

"""A new user's first run, through the real `bastion-edge`: an app without the CA, an
unset key, a port already taken, a second `run` on the same confdir."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness import Sandbox, proxy_env, start_proxy, wait_until

from bastion_edge.rehearsal.localrun import Proxy

ADVICE = "does not trust the proxy's CA"


def _curl_without_the_ca(proxy: Proxy) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--proxy", proxy.url, "https://api.openai.com/v1/models"],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30,
        check=False)


def test_an_app_without_the_ca_gets_the_fix_logged_once_and_counted(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox))
    try:
        for _ in range(2):
            done = _curl_without_the_ca(proxy)
            assert done.returncode != 0  # curl refuses the proxy's certificate
        wait_until(lambda: "bastion_edge_client_tls_untrusted_total 2.0" in proxy.metrics(),
                   what="both handshakes counted")
    finally:
        assert proxy.process.stop() == 0, proxy.process.log()
    log = proxy.process.log()
    assert log.count(ADVICE) == 1, log
    line = next(line for line in log.splitlines() if ADVICE in line)
    assert "the app at 127.0.0.1" in line and "unknown ca for api.openai.com" in line
    assert re.search(r'eval "\$\(/\S+/bastion-edge env --confdir \S+\)"', line), line
    assert f"SSL_CERT_FILE={proxy.confdir}/ca-bundle.pem" in line
    assert f"NODE_EXTRA_CA_CERTS={proxy.confdir}/mitmproxy-ca-cert.pem" in line

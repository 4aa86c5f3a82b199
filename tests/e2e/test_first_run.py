"""A new user's first run, through the real `bastion-edge`: an app without the CA, an
unset key, a port already taken, a second `run` on the same confdir."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from harness import BASTION_EDGE, Sandbox, proxy_env, start, start_proxy, wait_until

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


def test_port_in_use_and_a_second_run_on_the_same_confdir(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    first = start_proxy(tmp_path / "first", proxy_env(sandbox))
    state = first.confdir / "run-state.json"
    try:
        recorded = json.loads(state.read_text())
        assert recorded["pid"] == first.process.popen.pid
        base = [BASTION_EDGE, "run", "--confdir", str(first.confdir), "--rules",
                str(first.rules), "--metrics-port", "0"]
        taken = subprocess.run([*base, "--listen-port", str(first.port)],
                               env=proxy_env(sandbox), capture_output=True, text=True,
                               timeout=60, check=False)
        assert taken.returncode == 1
        assert (f"127.0.0.1:{first.port} is already in use: a bastion-edge run (pid "
                f"{first.process.popen.pid}, confdir {first.confdir}) already listens there. "
                "Stop it, or choose another port with --listen-port") in taken.stderr
        assert "regular@" not in taken.stdout + taken.stderr
        second = start([*base, "--listen-port", "0"], tmp_path / "second.log",
                       proxy_env(sandbox))
        wait_until(lambda: "bastion-edge listening on" in second.log()
                   or second.popen.poll() is not None, what="the second run")
        assert "keeps the record" in second.log()
        assert second.stop() == 0, second.log()
        assert json.loads(state.read_text()) == recorded  # the first's record survives
    finally:
        assert first.process.stop() == 0, first.process.log()
    assert not state.exists()  # removed by its owner

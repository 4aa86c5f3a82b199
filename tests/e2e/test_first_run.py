"""A new user's first run, through the real `bastion-edge`: an app without the CA, an
unset key, a port already taken, a second `run` on the same confdir."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
from harness import (
    APP_KEY,
    BASTION_EDGE,
    REPO,
    Sandbox,
    free_port,
    proxy_env,
    start,
    start_proxy,
    wait_until,
)

from bastion_edge.cli.try_it import READY_MARK
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
    second = None
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
        if second is not None and second.popen.poll() is None:
            second.stop()  # a failed assertion above must not leave it running
        assert first.process.stop() == 0, first.process.log()
    assert not state.exists()  # removed by its owner


# ------------------------------------------------------------------ installable anywhere

def _install_the_wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the sources (nothing else of the checkout), install
    it into a fresh venv; the dependencies come from the project's venv by a .pth line
    (offline), the package itself only from the wheel. Returns the venv's bin folder."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "addon" / "bastion_edge", source / "addon" / "bastion_edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp / "dist"), str(source)], check=True, timeout=600)
    wheel = next((tmp / "dist").glob("bastion_edge-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3.*/site-packages"))
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=600)
    return venv / "bin"


def test_the_wheel_runs_check_and_run_from_an_empty_directory(tmp_path: Path) -> None:
    bin_dir = _install_the_wheel(tmp_path)
    edge = str(bin_dir / "bastion-edge")
    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([edge, *args], cwd=empty, env={**env, **extra},
                              capture_output=True, text=True, timeout=120, check=False)

    where = cli("--version")
    assert where.returncode == 0 and where.stdout.startswith("bastion-edge 0.1.0 (mitmproxy 12.")
    imported = subprocess.run([str(bin_dir / "python"), "-c",
                               "import bastion_edge; print(bastion_edge.__file__)"],
                              cwd=empty, env=env, capture_output=True, text=True, check=True)
    assert imported.stdout.startswith(str(tmp_path / "venv"))  # the wheel, not the checkout
    packaged = f"{tmp_path}/venv/lib/python"
    checked = cli("check", QUBITTRON_API_KEY="bk-wheel")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"rules: {packaged}")
    assert "/site-packages/bastion_edge/data/rules.yaml" in checked.stdout.splitlines()[0]
    unset = cli("check")
    assert unset.returncode == 1 and "QUBITTRON_API_KEY is not set" in unset.stderr
    # run, from the empty directory, without a key: it says so once, listens, is ready
    metrics_port = free_port()
    proxy = start([edge, "run", "--listen-port", "0", "--metrics-port", str(metrics_port)],
                  tmp_path / "run.log", env, cwd=empty)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{metrics_port}/readyz").status_code
                   == 200 or proxy.popen.poll() is not None, what="the installed proxy")
        assert proxy.popen.poll() is None, proxy.log()
    finally:
        assert proxy.stop() == 0, proxy.log()
    log = proxy.log()
    assert log.count("QUBITTRON_API_KEY is not set") == 1, log
    assert "keeping the last good list" not in log
    assert (home / ".bastion-edge" / "mitmproxy-ca-cert.pem").exists()


# ------------------------------------------------------------------ try

def test_try_names_its_access_log_and_shows_each_request(tmp_path: Path) -> None:
    confdir, port, empty = tmp_path / "conf", free_port(), tmp_path / "empty"
    empty.mkdir()
    process = start([BASTION_EDGE, "try", "--confdir", str(confdir), "--listen-port", str(port)],
                    tmp_path / "try.out", cwd=empty)  # no ./rules.yaml: the packaged rules
    try:
        wait_until(lambda: READY_MARK in process.log() or process.popen.poll() is not None,
                   what="try's recipe")
        printed = process.log()
        access_log = confdir / "try" / "access.log"
        assert f"access log: {access_log}  (bastion-edge report {access_log})" in printed
        assert f'eval "$({BASTION_EDGE} env --confdir {confdir})"' in printed
        exports = {}
        for line in printed.splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                exports[name] = shlex.split(value)[0]
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "https://api.openai.com/v1/chat/completions",
             "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
             "-d", json.dumps({"model": "gpt-4o",
                               "messages": [{"role": "user", "content": "hi"}]})],
            env={"PATH": "/usr/bin:/bin", **exports}, capture_output=True, text=True,
            timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: "POST /v1/chat/completions 200  gpt-4o -> gpt-oss-120b  (bastion)"
                   in process.log(), what="try's line for the request")
        assert access_log.exists()
    finally:
        process.popen.send_signal(signal.SIGINT)
        assert process.popen.wait(30) == 0, process.log()

"""`bastion-edge try`: sandbox + proxy in one command, env lines to paste, clean exit;
`bastion-edge env` finds the port a running `run` recorded in its confdir."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from harness import APP_KEY, BASTION_EDGE, REPO, free_port, start, wait_until

from bastion_edge.cli.try_it import READY_MARK


def exports(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = shlex.split(value)[0]
    return found


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_try_wires_sandbox_and_proxy_and_prints_the_env(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    confdir, port = tmp_path / "conf", free_port()
    process = start([BASTION_EDGE, "try", "--confdir", str(confdir), "--listen-port", str(port),
                     "--rules", str(REPO / "rules.yaml")], tmp_path / "try.out")
    try:
        wait_until(lambda: READY_MARK in process.log() or process.popen.poll() is not None,
                   timeout=60, what="try's recipe")
        printed = exports(process.log())
        assert printed["HTTPS_PROXY"] == f"http://127.0.0.1:{port}"
        # an app configured only by the pasted lines reaches the sandbox through the proxy
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "https://api.openai.com/v1/chat/completions",
             "-H", f"Authorization: Bearer {APP_KEY}", "-H", "content-type: application/json",
             "-d", json.dumps({"model": "gpt-4o",
                               "messages": [{"role": "user", "content": "hi"}]})],
            env={"PATH": "/usr/bin:/bin", **printed}, capture_output=True, text=True,
            timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["model"] == "gpt-oss-120b"
        # `env` with only the confdir: the port comes from the running proxy's record
        env = subprocess.run([BASTION_EDGE, "env", "--confdir", str(confdir)],
                             capture_output=True, text=True, check=True)
        assert exports(env.stdout) == printed
        assert "recorded in" in env.stderr
    finally:
        process.popen.send_signal(stop_with)
        assert process.popen.wait(30) == 0, process.log()
    assert not (confdir / "run-state.json").exists()
    fallback = subprocess.run([BASTION_EDGE, "env", "--confdir", str(confdir)],
                              capture_output=True, text=True, check=True)
    assert exports(fallback.stdout)["HTTPS_PROXY"] == "http://127.0.0.1:8080"
    assert "no running `bastion-edge run` recorded" in fallback.stderr


def test_explicit_env_flags_win_over_the_record(tmp_path: Path) -> None:
    import os

    from bastion_edge.cli.run_state import RunState, write_state

    write_state(RunState("0.0.0.0", 18123, str(tmp_path), os.getpid()))
    recorded = subprocess.run([BASTION_EDGE, "env", "--confdir", str(tmp_path)],
                              capture_output=True, text=True, check=True)
    assert exports(recorded.stdout)["HTTPS_PROXY"] == "http://127.0.0.1:18123"
    flags = subprocess.run([BASTION_EDGE, "env", "--confdir", str(tmp_path), "--listen-port",
                            "9999", "--proxy-host", "edge.svc"],
                           capture_output=True, text=True, check=True)
    assert exports(flags.stdout)["HTTPS_PROXY"] == "http://edge.svc:9999"

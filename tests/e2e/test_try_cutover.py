"""`bastion-edge try --cutover MODE`: a second sandbox poses as OpenAI, the proxy runs
in that mode with an access log, and Ctrl-C prints the report command, which works."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from harness import BASTION_EDGE, REPO, free_port, start, wait_until
from test_try_it import exports

from bastion_edge.cli.try_it import READY_MARK

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("mode", ["split", "canary"])
def test_try_cutover_reaches_both_sandboxes_and_prints_the_report(
    tmp_path: Path, mode: str
) -> None:
    confdir = tmp_path / "conf"
    process = start([BASTION_EDGE, "try", "--cutover", mode, "--confdir", str(confdir),
                     "--listen-port", str(free_port()), "--rules", str(REPO / "rules.yaml")],
                    tmp_path / "try.out")
    try:
        wait_until(lambda: READY_MARK in process.log() or process.popen.poll() is not None,
                   timeout=60, what="try's recipe")
        out = process.log()
        assert f"cutover rehearsal: {mode}" in out and "stands in for OpenAI" in out, out
        env = exports(out)
        served = {"gpt-4o": 0, "gpt-oss-120b": 0}  # OpenAI's sandbox, Bastion's
        # The canary's first tick may come after the first request; split goes on until
        # each side has the 30 exchanges the report's verdicts need.
        wanted = 30 if mode == "split" else 1
        with httpx.Client(proxy=env["HTTPS_PROXY"], verify=env["SSL_CERT_FILE"]) as http:
            for i in range(600):
                if min(served.values()) >= wanted and i >= 30:
                    break
                reply = http.post("https://api.openai.com/v1/chat/completions", json=BODY,
                                  headers={"authorization": f"Bearer sk-try-app-{i % 30}"})
                assert reply.status_code == 200, reply.text
                served[reply.json()["model"]] += 1
        assert min(served.values()) >= wanted, served
        if mode == "canary":
            command = re.search(r"watch it: (bastion-edge cutover status .*)", out)
            assert command is not None, out
            args = shlex.split(command.group(1))
            status = subprocess.run([str(BASTION_EDGE), *args[1:]], capture_output=True,
                                    text=True, timeout=60)
            assert "running, Bastion gets 50 %" in status.stdout, status.stdout + status.stderr
    finally:
        process.popen.send_signal(signal.SIGINT)
        assert process.popen.wait(30) == 0, process.log()
    printed = re.search(r"bastion-edge report (\S+) --html (\S+)", process.log())
    assert printed is not None, process.log()
    log, html = Path(printed.group(1)), Path(printed.group(2))
    assert log.is_file() and log.read_text().count('"destination"') >= 30
    report = subprocess.run([str(BASTION_EDGE), "report", str(log), "--html", str(html)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert html.is_file()
    error_kpi = next(line for line in report.stdout.splitlines() if "] Error rate" in line)
    if mode == "split":  # 30 a side: a verdict, with its interval
        assert "95 % CI" in error_kpi and "not enough data" not in error_kpi, error_kpi

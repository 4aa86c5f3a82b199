"""`bastion-edge try`: the sandbox and the proxy wired together, for a first look.

Two children (`bastion-edge sandbox`, `bastion-edge run` pointed at it with the
sandbox's CA and a sandbox key), the env lines an app needs printed to paste (and the
full path of `bastion-edge env`, which is not on PATH after `make install`), the access
log `report` reads, then one line per request until SIGINT/SIGTERM and stop both
(exit 0). Either child dying early is exit 1 with its log.

`--cutover split|mirror|canary` rehearses a cutover: a second sandbox poses as OpenAI
(`--persona openai`, sharing the first one's CA), the proxy runs in that mode with an
access log (rehearsal/cutover_rehearsal.py writes its rules), and Ctrl-C prints the
`bastion-edge report` command for what was recorded.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from bastion_edge.cli.self_command import self_command
from bastion_edge.rehearsal.cutover_rehearsal import write_rehearsal
from bastion_edge.rehearsal.localrun import Process, proxy_env, start_proxy, start_sandbox

READY_MARK = "# bastion-edge try: ready"


def run_try(rules: Path, confdir: Path, listen_port: int, cutover: str | None = None) -> int:
    if not rules.is_file():
        print(f"bastion-edge try: no rules file at {rules} (give --rules, or run it where "
              "rules.yaml is)")
        return 1
    logs = confdir / "try"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, Process] = {}
    try:
        try:
            sandbox = start_sandbox(logs, tls_dir=confdir / "sandbox")
            children["sandbox"] = sandbox.process
            env = proxy_env(sandbox)
            if cutover is not None:
                openai = start_sandbox(logs, ["--persona", "openai"],
                                       tls_dir=confdir / "sandbox")
                children["OpenAI sandbox"] = openai.process
                env["BASTION_OPENAI_URL"] = f"https://127.0.0.1:{openai.port}"
                logs = logs / f"cutover-{cutover}"
                rules = write_rehearsal(rules, cutover, logs)
            proxy = start_proxy(logs, env, rules.resolve(), port=listen_port,
                                confdir=confdir)
            children["proxy"] = proxy.process
        except (RuntimeError, TimeoutError, OSError, ValueError) as e:  # did not come up
            print(f"bastion-edge try: {e}")
            return 1
        requests = AccessLogTail(proxy.access_log)
        if cutover is not None:
            _print_cutover(cutover, env, rules, confdir)
        _print_recipe(sandbox.base_url, proxy.url, proxy.env_lines, rules, confdir, logs,
                      proxy.access_log)
        while not stop.wait(0.5):
            for line in requests.new_lines():
                print(line, flush=True)
            for name, child in children.items():
                if child.popen.poll() is not None:
                    print(f"bastion-edge try: the {name} exited:\n{child.log()}")
                    return 1
        if cutover is not None:
            html = logs / "report.html"
            print(f"\nthe rehearsal's access log: {proxy.access_log}\nits report:\n"
                  f"  bastion-edge report {shlex.quote(str(proxy.access_log))} --html "
                  f"{shlex.quote(str(html))}\n  (the page: {html})", flush=True)
        return 0
    finally:
        for child in reversed(children.values()):
            child.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_cutover(mode: str, env: dict[str, str], rules: Path, confdir: Path) -> None:
    from bastion_edge.cli.cutover_cmd import describe_cutover
    from bastion_edge.config.rules import apply_environment, load_rules

    print(f"cutover rehearsal: {mode}; a second sandbox stands in for OpenAI: "
          f"{env['BASTION_OPENAI_URL']}")
    for line in describe_cutover(apply_environment(load_rules(rules), env)):
        print(f"  {line}")
    if mode == "canary":
        print("  watch it: bastion-edge cutover status --rules "
              f"{shlex.quote(str(rules))} --confdir {shlex.quote(str(confdir))}")
        print("  (rehearsal gates are loose so a few hundred requests from several app "
              "keys promote it; real rules keep the shipped gates)")


def _print_recipe(sandbox_url: str, proxy_url: str, env_lines: dict[str, str], rules: Path,
                  confdir: Path, logs: Path, access_log: Path) -> None:
    print(f"sandbox (a local stand-in for Bastion): {sandbox_url}")
    print(f"bastion-edge proxy: {proxy_url}   rules: {rules}   logs: {logs}")
    print(f"access log: {access_log}  (bastion-edge report {shlex.quote(str(access_log))})")
    env_command = f"{shlex.quote(self_command())} env --confdir {shlex.quote(str(confdir))}"
    print(f"Paste into the app's shell (or: eval \"$({env_command})\"):\n")
    for name, value in env_lines.items():
        print(f"export {name}={shlex.quote(value)}")
    print("\nthen, for example:\n  curl https://api.openai.com/v1/chat/completions "
          "-H 'Authorization: Bearer sk-any' -H 'content-type: application/json' \\\n"
          "    -d '{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", "
          "\"content\": \"hi\"}]}'")
    print("\nCtrl-C stops both. Each request the proxy handles is shown here as\n"
          "  METHOD PATH STATUS  app's model -> Bastion's model\n"
          f"{READY_MARK}", flush=True)


def request_line(record: dict[str, Any]) -> str:
    """One access-log record as try shows it: method, path, status, model mapping."""
    original, upstream = record.get("original_model"), record.get("upstream_model")
    if original and upstream and original != upstream:
        models = f"{original} -> {upstream}"
    else:
        models = str(original or upstream or "-")
    line = (f"{record.get('method', '?')} {record.get('path', '?')} "
            f"{record.get('status', '-')}  {models}")
    extra = [str(record[k]) for k in ("destination", "error") if record.get(k)]
    return line + (f"  ({', '.join(extra)})" if extra else "")


class AccessLogTail:
    """The records appended to an access log since this was made, as `request_line`s."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except OSError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        lines = []
        for raw in complete:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and "method" in record:
                lines.append(request_line(record))
        return lines

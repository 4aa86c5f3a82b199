"""`bastion-edge check | env | key-hash`, driven through cli.main."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion_edge.cli import main as cli
from bastion_edge.deploy.node_preload import preload_path
from bastion_edge.deploy.tls_bundles import system_ca_file

SHIPPED = Path(__file__).resolve().parents[3] / "rules.yaml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BASTION_BASE_URL", "BASTION_UPSTREAM_CA", "BASTION_RULES", "QUBITTRON_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_check_valid_file_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--rules-only", "--rules", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert f"rules: {SHIPPED}" in out
    assert "upstream: https://api.qubittron.ai/v1" in out
    rows = {tuple(line.split()) for line in out.splitlines()}
    assert ("gpt-4o", "has_image=true", "Qwen2.5-VL-72B-Instruct") in rows
    assert ("header", "x-bastion-route=coding", "Qwen3-Coder-30B-A3B-Instruct") in rows
    assert ("prompt_tokens>24000", "Meta-Llama-3_3-70B-Instruct") in rows
    assert ("text-embedding-3-small", "(always)", "bge-m3") in rows
    assert ("gpt-4o-*", "has_image=true", "Qwen2.5-VL-72B-Instruct") in rows
    assert ("gpt-3.5-turbo*", "(always)", "gpt-oss-20b") in rows
    assert "default: $QUBITTRON_API_KEY (NOT SET)" in out


def test_check_reports_key_presence_never_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBITTRON_API_KEY", "bk-secret-value-123")
    assert cli.main(["check", "--rules", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "default: $QUBITTRON_API_KEY (set)" in out
    assert "bk-secret-value-123" not in out


def test_check_uses_bastion_rules_env_and_base_url_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("models:\n  gpt-4o: gpt-oss-120b\n")
    monkeypatch.setenv("BASTION_RULES", str(path))
    monkeypatch.setenv("BASTION_BASE_URL", "https://127.0.0.1:9443/v1")
    monkeypatch.setenv("QUBITTRON_API_KEY", "bk-test")
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert f"rules: {path}" in out
    assert "upstream: https://127.0.0.1:9443/v1" in out


def test_check_invalid_file_exits_1_naming_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  gpt-4o-mini: gpt-oss-20b\n  gpt-4o: 42\n")
    assert cli.main(["check", "--rules", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f'{path}: models."gpt-4o": expected a string' in captured.err
    assert "(line 3)" in captured.err


def test_check_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--rules", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_check_env_http_base_url_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_BASE_URL", "http://127.0.0.1:9443/v1")
    assert cli.main(["check", "--rules", str(SHIPPED)]) == 1
    assert "BASTION_BASE_URL: expected an https:// URL" in capsys.readouterr().err


def test_env_prints_export_lines_with_combined_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    confdir = tmp_path / "conf"
    assert cli.main(["env", "--confdir", str(confdir), "--listen-port", "18080"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9
    exports = {}
    for line in lines:
        assert line.startswith("export ")
        name, _, value = line[len("export "):].partition("=")
        exports[name] = shlex.split(value)[0]
    bundle = confdir / "ca-bundle.pem"
    proxy_ca = confdir / "mitmproxy-ca-cert.pem"
    assert exports == {
        "HTTPS_PROXY": "http://127.0.0.1:18080",
        "HTTP_PROXY": "http://127.0.0.1:18080",
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
        "NODE_EXTRA_CA_CERTS": str(proxy_ca),
        "NODE_USE_ENV_PROXY": "1",
        "NODE_OPTIONS": f"--import {preload_path()}",
    }
    combined = bundle.read_bytes()
    proxy_pem = proxy_ca.read_bytes().strip()
    system_pem = system_ca_file().read_bytes().strip()
    assert proxy_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert proxy_pem in combined
    assert system_pem in combined
    assert combined.count(b"BEGIN CERTIFICATE") == system_pem.count(b"BEGIN CERTIFICATE") + 1
    assert (confdir / "mitmproxy-ca.pem").stat().st_mode & 0o077 == 0  # private key not shared


def test_env_proxy_host_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["env", "--confdir", str(tmp_path), "--proxy-host", "edge.svc"]) == 0
    assert "export HTTPS_PROXY=http://edge.svc:8080" in capsys.readouterr().out


def test_key_hash_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-proj-abc123\n"))
    assert cli.main(["key-hash"]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(b"sk-proj-abc123").hexdigest()
    assert out.strip() == f'app_key_sha256: "{digest[:16]}"   # full: {digest}'
    assert "sk-proj-abc123" not in out


def test_key_hash_empty_stdin_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["key-hash"]) == 2
    assert "pipe the key on stdin" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: bastion-edge" in capsys.readouterr().out


def test_packaged_default_rules_are_the_repos_rules_yaml() -> None:
    assert cli.packaged_rules().read_bytes() == SHIPPED.read_bytes(), (
        "addon/bastion_edge/data/rules.yaml is the packaged copy of rules.yaml: "
        "cp rules.yaml addon/bastion_edge/data/rules.yaml")


def test_rules_path_order_flag_env_local_packaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.rules_path(None) == cli.packaged_rules()
    (tmp_path / "rules.yaml").write_text("models: {gpt-4o: x}\n")
    assert cli.rules_path(None) == Path("rules.yaml")
    monkeypatch.setenv("BASTION_RULES", "/etc/r.yaml")
    assert cli.rules_path(None) == Path("/etc/r.yaml")
    assert cli.rules_path("mine.yaml") == Path("mine.yaml")


def test_version_names_the_project_version(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    project = tomllib.loads((SHIPPED.parent / "pyproject.toml").read_text())["project"]
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"bastion-edge {project['version']} (mitmproxy ")


def _options(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action,
                                                                           str]]:
    """Every flag of every (sub)command, with its rendered --help text."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _options(sub, f"{name} {sub_name}")
        elif action.option_strings and action.help is not argparse.SUPPRESS and not isinstance(
                action, argparse._HelpAction | argparse._VersionAction):
            yield name, action, formatter._expand_help(action) if action.help else ""


def test_every_flag_has_help_with_its_default() -> None:
    missing = []
    for name, action, text in _options(cli._parser(), "bastion-edge"):
        boolean = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if not text or not (boolean or action.required or "default" in text.lower()):
            missing.append(f"{name} {'/'.join(action.option_strings)}: {text!r}")
    assert not missing, "flags without help or without their default:\n" + "\n".join(missing)


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "port the proxy listens on (0: any free port, printed at start) (default: 8080)" in out
    assert "(default: ~/.bastion-edge)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_try_shows_new_access_log_records_one_line_each(tmp_path: Path) -> None:
    from bastion_edge.cli.try_it import AccessLogTail

    log = tmp_path / "access.log"
    log.write_text('{"method": "GET", "path": "/old", "status": 200}\n')
    tail = AccessLogTail(log)  # records from before try started are not shown
    assert tail.new_lines() == []
    with log.open("a") as f:
        f.write('{"method": "POST", "path": "/v1/chat/completions", "status": 200, '
                '"original_model": "gpt-4o", "upstream_model": "gpt-oss-120b", '
                '"destination": "bastion"}\n{"method": "POST", "path": "/v1/embed')
    assert tail.new_lines() == [
        "POST /v1/chat/completions 200  gpt-4o -> gpt-oss-120b  (bastion)"]
    with log.open("a") as f:
        f.write('dings", "status": 400, "original_model": "nope", "destination": "proxy", '
                '"error": "model_not_mapped"}\n')
    assert tail.new_lines() == ["POST /v1/embeddings 400  nope  (proxy, model_not_mapped)"]



@pytest.mark.parametrize(("rules", "code"), [(SHIPPED, 0), (Path("/nonexistent/rules.yaml"), 1)])
def test_the_console_command_keeps_the_exit_code_and_every_line_it_printed(
        rules: Path, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    """`console_main` leaves by os._exit (no interpreter teardown): what it printed into a
    pipe still arrives whole, and the exit code is main's."""
    argv = ["check", "--rules-only", "--rules", str(rules)]
    assert cli.main(argv) == code
    expected = capsys.readouterr()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from bastion_edge.cli.main import console_main; "
         "console_main(sys.argv[1:])", *argv], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})  # buffered
    assert done.returncode == code, done.stderr
    assert (done.stdout, done.stderr) == (expected.out, expected.err)

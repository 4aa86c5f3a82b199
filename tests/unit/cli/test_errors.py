"""Errors that say what to do: an unset Bastion key named at `check` and at start."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mitmproxy import options, tls
from mitmproxy.proxy.context import Context
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry

from bastion_edge.cli import main as cli
from bastion_edge.cli.key_advice import key_problems, near_name
from bastion_edge.cli.port_check import port_problem
from bastion_edge.cli.run_state import (
    STATE_FILE,
    RunState,
    read_state,
    record_run,
    remove_state,
    write_state,
)
from bastion_edge.config.rules import parse_rules
from bastion_edge.proxy.model_catalog import ModelCatalog
from bastion_edge.proxy.tls_advice import TlsAdvice

SHIPPED = Path(__file__).resolve().parents[3] / "rules.yaml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BASTION_BASE_URL", "BASTION_UPSTREAM_CA", "BASTION_RULES", "QUBITTRON_API_KEY",
                 "QUBITRON_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_check_without_the_key_exits_1_naming_the_variable(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "--rules", str(SHIPPED)]) == 1
    captured = capsys.readouterr()
    assert "gpt-oss-120b" in captured.out  # the table is still printed
    assert ("bastion-edge check: QUBITTRON_API_KEY is not set: requests that use it will be "
            "answered 401 bastion_key_missing; export it in the proxy's environment"
            in captured.err)


def test_check_suggests_the_misspelled_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBITRON_API_KEY", "bk-secret-value")
    assert cli.main(["check", "--rules", str(SHIPPED)]) == 1
    err = capsys.readouterr().err
    assert "QUBITTRON_API_KEY is not set" in err
    assert "(QUBITRON_API_KEY is set: a misspelling of QUBITTRON_API_KEY?)" in err
    assert "bk-secret-value" not in err


def test_check_with_the_key_or_rules_only_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["check", "--rules-only", "--rules", str(SHIPPED)]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("QUBITTRON_API_KEY", "bk-x")
    assert cli.main(["check", "--rules", str(SHIPPED)]) == 0
    assert capsys.readouterr().err == ""


def test_key_file_and_per_app_sources_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    rules = parse_rules(f"models: {{gpt-4o: gpt-oss-120b}}\nkeys: {{default_file: {empty}}}\n")
    assert key_problems(rules, {}) == [
        f"the Bastion key file {empty} is unreadable or empty: requests that use it will be "
        "answered 401 bastion_key_missing; write the key into it"]
    empty.write_text("bk-1\n")
    assert key_problems(rules, {}) == []
    apps = parse_rules("""
models: {gpt-4o: gpt-oss-120b}
clients:
  apps:
    - {name: billing, secret_sha256: "%s", bastion_key_env: KEY_BILLING}
""" % ("a" * 64))
    # every app has its own key: the default variable is never used, so not asked for
    assert [p.split(":")[0] for p in key_problems(apps, {})] == ["KEY_BILLING is not set"]
    assert key_problems(apps, {"KEY_BILLING": "bk"}) == []


def test_near_name_ignores_far_and_empty_names() -> None:
    assert near_name("QUBITTRON_API_KEY", {"QUBITRON_API_KEY": "x"}) == "QUBITRON_API_KEY"
    assert near_name("QUBITTRON_API_KEY", {"QUBITRON_API_KEY": " "}) is None
    assert near_name("QUBITTRON_API_KEY", {"OPENAI_API_KEY": "x", "HOME": "/"}) is None


def test_catalog_says_a_missing_key_once_and_plainly(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    rules = parse_rules("models: {gpt-4o: gpt-oss-120b}\n")
    catalog = ModelCatalog()
    with caplog.at_level(logging.WARNING, logger="bastion_edge.proxy.model_catalog"):
        for _ in range(3):
            assert not asyncio.run(catalog.refresh(rules, {}, tmp_path))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["bastion-edge: no Bastion key is set ($QUBITTRON_API_KEY): Bastion's "
                        "model list is not read, every mapped model is taken as available"]


def test_catalog_failure_before_any_list_does_not_claim_a_last_good_list(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    rules = parse_rules("models: {gpt-4o: gpt-oss-120b}\n")
    catalog = ModelCatalog(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with caplog.at_level(logging.WARNING, logger="bastion_edge.proxy.model_catalog"):
        asyncio.run(catalog.refresh(rules, {"QUBITTRON_API_KEY": "bk"}, tmp_path))
    message = caplog.records[-1].getMessage()
    assert "keeping the last good list" not in message
    assert "no list read yet" in message and "HTTP 500" in message


# ------------------------------------------------------------------ an app without the CA

def _failed_handshake(peer: str, error: str) -> tls.TlsData:
    client = tflow.tclient_conn()
    client.peername = (peer, 50000)
    client.sni = "api.openai.com"
    client.error = error
    return tls.TlsData(client, Context(client, options.Options()))


UNKNOWN_CA = ("The client does not trust the proxy's certificate for api.openai.com "
              "(tlsv1 alert unknown ca)")


def test_untrusted_ca_is_advised_once_per_client_and_counted(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    advice = TlsAdvice(registry, "/opt/venv/bin/bastion-edge env")
    with taddons.context(advice) as tctx, \
            caplog.at_level(logging.WARNING, logger="bastion_edge.proxy.tls_advice"):
        tctx.options.confdir = str(tmp_path)
        for peer in ("10.0.0.5", "10.0.0.5", "10.0.0.6"):
            advice.tls_failed_client(_failed_handshake(peer, UNKNOWN_CA))
        advice.tls_failed_client(_failed_handshake("10.0.0.7", "connection closed"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith(
        "bastion-edge: the app at 10.0.0.5 does not trust the proxy's CA (tlsv1 alert "
        "unknown ca for api.openai.com). Give it the CA: eval \"$(/opt/venv/bin/bastion-edge "
        f"env --confdir {tmp_path})\"")
    assert f"SSL_CERT_FILE={tmp_path}/ca-bundle.pem" in messages[0]
    assert f"NODE_EXTRA_CA_CERTS={tmp_path}/mitmproxy-ca-cert.pem" in messages[0]
    assert "10.0.0.6" in messages[1]
    assert registry.get_sample_value("bastion_edge_client_tls_untrusted_total") == 3.0


# ------------------------------------------------------------------ port in use, run-state

def test_port_in_use_names_listen_port_and_the_recorded_holder(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_problem("127.0.0.1", port, tmp_path) == (
            f"127.0.0.1:{port} is already in use: another process holds it. Stop it, or "
            "choose another port with --listen-port")
        write_state(RunState("127.0.0.1", port, str(tmp_path), os.getpid()))
        assert port_problem("127.0.0.1", port, tmp_path) == (
            f"127.0.0.1:{port} is already in use: a bastion-edge run (pid {os.getpid()}, "
            f"confdir {tmp_path}) already listens there. Stop it, or choose another port "
            "with --listen-port")
    assert port_problem("127.0.0.1", port, tmp_path) is None  # released


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "pool"])
def test_run_on_a_taken_port_exits_1_naming_listen_port(
    workers: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBITTRON_API_KEY", "bk-x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["run", *workers, "--rules", str(SHIPPED), "--listen-port", str(port),
                         "--confdir", str(tmp_path), "--metrics-port", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert (f"127.0.0.1:{port} is already in use: another process holds it. Stop it, or "
            "choose another port with --listen-port") in err
    assert "--mode regular@" not in err


def test_the_record_is_kept_by_its_owner(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_state(RunState("127.0.0.1", 18080, str(tmp_path), owner.pid))
        assert record_run(RunState("127.0.0.1", 18081, str(tmp_path), os.getpid())) == []
        remove_state([tmp_path / STATE_FILE], os.getpid())  # the second run's exit
        assert read_state(tmp_path) == RunState("127.0.0.1", 18080, str(tmp_path), owner.pid)
    finally:
        owner.kill()
        owner.wait()
    # its owner gone, the record is the next run's
    assert record_run(RunState("127.0.0.1", 18081, str(tmp_path), os.getpid())) == [
        tmp_path / STATE_FILE]


def test_other_listen_failures_are_left_to_mitmproxy_or_named(tmp_path: Path) -> None:
    import errno

    assert port_problem("no-such-host.invalid", 8080, tmp_path) is None
    refused = OSError(errno.EACCES, "Permission denied")
    assert port_problem("127.0.0.1", 80, tmp_path, refused) == (
        "cannot listen on 127.0.0.1:80: Permission denied; choose another address with "
        "--listen-host or --listen-port")

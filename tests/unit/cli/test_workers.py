"""The `run --workers N` parent's pure parts: held port, metrics dir, worker argv."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from bastion_edge.cli.main import _parser
from bastion_edge.cli.workers import (
    Worker,
    WorkerPool,
    hold_port,
    prepare_multiproc_dir,
    worker_argv,
)
from bastion_sandbox.long_stream import stretch, wanted_events


def test_held_port_is_concrete_and_joinable_by_reuse_port_listeners() -> None:
    holder = hold_port("127.0.0.1", 0)
    try:
        port = holder.getsockname()[1]
        assert port > 0
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen(8)
        with socket.socket() as stranger, pytest.raises(OSError):
            stranger.bind(("127.0.0.1", port))  # not one of ours: refused
    finally:
        holder.close()


def test_a_given_metrics_dir_is_emptied_and_kept(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    path, made = prepare_multiproc_dir(str(tmp_path))
    assert path == tmp_path and not made
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    fresh, made = prepare_multiproc_dir(None)
    assert made and fresh.is_dir() and not any(fresh.iterdir())
    fresh.rmdir()


def test_worker_argv_carries_the_parents_settings_on_the_held_port() -> None:
    args = _parser().parse_args(
        ["run", "--workers", "3", "--listen-host", "0.0.0.0", "--listen-port", "0",
         "--confdir", "/c", "--access-log", "-", "--mode", "regular",
         "--mode", "transparent@8081", "--allow-unauthenticated",
         "--transparent-redirect-only"])
    argv = worker_argv(args, 41000, Path("/r.yaml"), 1024)
    assert argv[:5] == ["run", "--listen-host", "0.0.0.0", "--listen-port", "41000"]
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--metrics-port"] == "0" and pairs["--rules"] == "/r.yaml"
    assert pairs["--confdir"] == "/c" and pairs["--listen-backlog"] == "1024"
    assert "--reuse-port" in argv and "--allow-unauthenticated" in argv
    assert "--transparent-redirect-only" in argv
    assert argv.count("--mode") == 2 and "--workers" not in argv


def test_pool_readiness_needs_every_worker(tmp_path: Path) -> None:
    pool = WorkerPool(2, [], {}, tmp_path, lambda pid, code: None)
    pool.workers = [Worker(i, tmp_path) for i in range(2)]
    pool.workers[0].ready, pool.workers[0].detail = True, "rules abc"
    ready, detail = pool.readiness()
    assert not ready and detail.startswith("1/2 ready")
    pool.workers[1].ready = True
    assert pool.readiness()[0]
    pool.stopping = True
    assert pool.readiness() == (False, "draining")


def test_stream_events_header_values() -> None:
    assert wanted_events(None) is None and wanted_events("250") == 250
    for bad in ("0", "-1", "x", "100001"):
        with pytest.raises(ValueError):
            wanted_events(bad)
    assert stretch(["a", "b"], 5) == ["a", "b", "a", "b", "a"]


def test_workers_flag_defaults_to_one() -> None:
    args: argparse.Namespace = _parser().parse_args(["run"])
    assert args.workers == 1 and args.listen_backlog == 0 and not args.reuse_port


def test_gauge_info_reads_like_info_and_retires_the_old_labels() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bastion_edge.telemetry.pool_info import GaugeInfo

    registry = CollectorRegistry()
    info = GaugeInfo("bastion_edge_rules", "rules", ["sha256", "source"], registry)
    info.info({"sha256": "a1", "source": "r.yaml"})
    info.info({"sha256": "b2", "source": "r.yaml"})
    text = generate_latest(registry).decode()
    assert 'bastion_edge_rules_info{sha256="b2",source="r.yaml"} 1.0' in text
    assert 'bastion_edge_rules_info{sha256="a1",source="r.yaml"} 0.0' in text


def test_web_with_workers_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bastion_edge.cli.main import main

    rules = tmp_path / "rules.yaml"
    rules.write_text("models:\n  gpt-4o: gpt-oss-120b\n")
    assert main(["run", "--rules", str(rules), "--workers", "2", "--web"]) == 2
    assert "--workers 1" in capsys.readouterr().err

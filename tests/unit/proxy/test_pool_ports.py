"""A `--workers` pool's ports: each process publishes its own, a worker reads them all."""

from __future__ import annotations

from pathlib import Path

from bastion_edge.proxy import pool_ports
from bastion_edge.proxy.pool_env import WORKER_ID_ENV, WORKER_SOCKET_ENV


def test_publish_replaces_and_read_unions(tmp_path: Path) -> None:
    assert pool_ports.read(tmp_path) == frozenset()
    pool_ports.publish(tmp_path, "pool", [9090, 8080])
    pool_ports.publish(tmp_path, "w0", [4101, 4102])
    pool_ports.publish(tmp_path, "w1", [4201])
    assert pool_ports.read(tmp_path) == {8080, 9090, 4101, 4102, 4201}
    pool_ports.publish(tmp_path, "w1", [4301])  # a restarted worker replaces its entry
    assert pool_ports.read(tmp_path) == {8080, 9090, 4101, 4102, 4301}
    (tmp_path / "w2.ports").write_text("garbage")  # ignored, not fatal
    assert 4301 in pool_ports.read(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))


def test_the_pool_directory_comes_from_the_worker_environment(tmp_path: Path) -> None:
    environ = {WORKER_SOCKET_ENV: str(tmp_path / "w1.sock"), WORKER_ID_ENV: "1"}
    assert pool_ports.pool_dir(environ) == tmp_path
    assert pool_ports.own_name(environ) == "w1"
    assert pool_ports.pool_dir({}) is None
    assert pool_ports.read(tmp_path / "missing") == frozenset()

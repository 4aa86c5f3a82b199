"""The running proxy's record, as `bastion-edge env` reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bastion_edge.cli.run_state import RunState, env_target, read_state, remove_state, write_state


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_record_roundtrip_and_removal_only_by_its_writer(tmp_path: Path) -> None:
    path = write_state(RunState("127.0.0.1", 18080, str(tmp_path), os.getpid()))
    assert read_state(tmp_path) == RunState("127.0.0.1", 18080, str(tmp_path), os.getpid())
    remove_state([path], os.getpid() + 1)
    assert path.exists()
    remove_state([path], os.getpid())
    assert not path.exists() and read_state(tmp_path) is None


def test_a_dead_writers_record_is_ignored(tmp_path: Path) -> None:
    write_state(RunState("127.0.0.1", 18080, str(tmp_path), dead_pid()))
    assert read_state(tmp_path) is None
    target = env_target(str(tmp_path), None, None, tmp_path / "default")
    assert (target.host, target.port) == ("127.0.0.1", 8080)


def test_flags_win_and_any_address_means_loopback(tmp_path: Path) -> None:
    write_state(RunState("0.0.0.0", 18081, str(tmp_path), os.getpid()))
    target = env_target(None, None, None, tmp_path)
    assert (target.confdir, target.host, target.port) == (tmp_path, "127.0.0.1", 18081)
    assert env_target(None, 9000, "edge", tmp_path).port == 9000
    (tmp_path / "run-state.json").write_text("{broken")
    assert read_state(tmp_path) is None

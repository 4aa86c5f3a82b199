"""RulesWatcher: polling hot reload, robust to same-stat edits and ConfigMap symlink swaps."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from bastion_edge.config.reload import RulesWatcher, file_signature
from bastion_edge.config.rules import Rules, RulesError

GOOD_A = b"models: {gpt-4o: gpt-oss-120b}\n"
GOOD_B = b"models: {gpt-4o: gpt-oss-020b}\n"  # same size as GOOD_A
INVALID = b"models: {gpt-4o: 42}\n"


class Recorder:
    def __init__(self) -> None:
        self.loaded: list[Rules] = []
        self.failed: list[Exception] = []

    def watcher(self, path: Path, current: bytes, rehash_every: int = 3) -> RulesWatcher:
        return RulesWatcher(path, hashlib.sha256(current).hexdigest(), self.loaded.append,
                            self.failed.append, interval=0.01, rehash_every=rehash_every)

    def targets(self) -> list[str]:
        return [r.models[0].choices[0].use for r in self.loaded]


def write_keeping_stat(path: Path, data: bytes) -> None:
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:  # in place: same inode
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino, before.st_mtime_ns, before.st_size)


def test_no_change_no_callbacks(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A)
    for _ in range(10):
        watcher.poll()
    assert rec.loaded == [] and rec.failed == []


def test_changed_file_loaded_on_next_poll(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A, rehash_every=1000)
    path.write_bytes(b"models: {gpt-4o: something-longer}\n")
    watcher.poll()
    assert rec.targets() == ["something-longer"]
    assert rec.loaded[0].source == str(path)


def test_same_size_and_mtime_change_found_by_periodic_rehash(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A, rehash_every=3)
    write_keeping_stat(path, GOOD_B)
    assert file_signature(path) == watcher._signature  # stat alone cannot see it
    watcher.poll()
    watcher.poll()
    assert rec.loaded == []
    watcher.poll()  # third poll rehashes
    assert rec.targets() == ["gpt-oss-020b"]
    for _ in range(6):
        watcher.poll()
    assert len(rec.loaded) == 1  # loaded once, not on every rehash


def make_configmap(root: Path, stamp: str, data: bytes) -> None:
    version = root / stamp
    version.mkdir()
    (version / "rules.yaml").write_bytes(data)


def swap_configmap(root: Path, stamp: str) -> None:
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, root / "..data")


def test_configmap_symlink_swap_picked_up(tmp_path: Path) -> None:
    root = tmp_path / "config"
    root.mkdir()
    make_configmap(root, "..2026_01_01_00_00_00.000000001", GOOD_A)
    (root / "..data").symlink_to("..2026_01_01_00_00_00.000000001")
    (root / "rules.yaml").symlink_to("..data/rules.yaml")
    path = root / "rules.yaml"
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A, rehash_every=1000)
    watcher.poll()
    assert rec.loaded == []

    make_configmap(root, "..2026_01_02_00_00_00.000000002", GOOD_B)
    old = os.stat(root / "..2026_01_01_00_00_00.000000001" / "rules.yaml")
    os.utime(root / "..2026_01_02_00_00_00.000000002" / "rules.yaml",
             ns=(old.st_atime_ns, old.st_mtime_ns))  # kubelet may keep the mtime
    swap_configmap(root, "..2026_01_02_00_00_00.000000002")
    for leftover in (root / "..2026_01_01_00_00_00.000000001").iterdir():
        leftover.unlink()
    (root / "..2026_01_01_00_00_00.000000001").rmdir()

    assert path.is_symlink()  # the watched name itself never changed
    watcher.poll()
    assert rec.targets() == ["gpt-oss-020b"]
    assert rec.failed == []


def test_invalid_file_reported_once_and_old_rules_kept(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A, rehash_every=2)
    path.write_bytes(INVALID)
    for _ in range(10):
        watcher.poll()
    assert rec.loaded == []
    assert len(rec.failed) == 1
    assert isinstance(rec.failed[0], RulesError)
    assert 'models."gpt-4o": expected a string' in str(rec.failed[0])

    path.write_bytes(b"models: {gpt-4o: fixed-model}\n")
    watcher.poll()
    assert rec.targets() == ["fixed-model"]
    assert len(rec.failed) == 1


def test_missing_file_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A, rehash_every=2)
    path.unlink()
    for _ in range(6):
        watcher.poll()
    assert len(rec.failed) == 1
    assert isinstance(rec.failed[0], OSError)
    path.write_bytes(GOOD_B)
    watcher.poll()
    assert rec.targets() == ["gpt-oss-020b"]


def test_restoring_the_serving_content_loads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A)
    path.write_bytes(INVALID)
    watcher.poll()
    path.write_bytes(GOOD_A)
    watcher.poll()
    assert rec.loaded == []  # already serving GOOD_A
    assert len(rec.failed) == 1


def test_same_invalid_content_reported_again_after_revert(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()
    watcher = rec.watcher(path, GOOD_A)
    path.write_bytes(INVALID)
    watcher.poll()
    path.write_bytes(GOOD_A)
    watcher.poll()
    path.write_bytes(INVALID)
    watcher.poll()
    assert len(rec.failed) == 2


def test_watcher_task_polls_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD_A)
    rec = Recorder()

    async def scenario() -> None:
        watcher = rec.watcher(path, GOOD_A)
        watcher.start()
        path.write_bytes(b"models: {gpt-4o: from-task}\n")
        while not rec.loaded:  # bounded by the wait_for below
            await asyncio.sleep(0.01)
        await watcher.stop()
        assert watcher._poller._task is None

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert rec.targets() == ["from-task"]

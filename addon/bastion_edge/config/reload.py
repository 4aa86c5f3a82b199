"""Hot reload of rules.yaml by polling, robust to Kubernetes ConfigMap symlink swaps.

A ConfigMap file is `f -> ..data/f`; an update renames a new `..data` over the old
one and the mtime may not change. So every second this stats the *resolved* path
(real path, inode, mtime_ns, size) and, when anything differs -- or every
`rehash_every` polls regardless -- reads the bytes and compares their sha256. Only a
file that parses and validates completely replaces the serving rules.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from bastion_edge.config.polling import Poller
from bastion_edge.config.rules import Rules, RulesError, parse_rules

log = logging.getLogger(__name__)

Signature = tuple[str, int, int, int]


def file_signature(path: Path) -> Signature | None:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


class RulesWatcher:
    """Polls `path`; calls `on_loaded(rules)` or `on_failed(error)` after a change."""

    def __init__(
        self,
        path: Path,
        current_sha256: str,
        on_loaded: Callable[[Rules], None],
        on_failed: Callable[[Exception], None],
        interval: float = 1.0,
        rehash_every: int = 10,
    ) -> None:
        self.path = path
        self.interval = interval
        self.rehash_every = rehash_every
        self._on_loaded = on_loaded
        self._on_failed = on_failed
        self._sha256 = current_sha256
        self._failed_sha256: str | None = None
        self._signature = file_signature(path)
        self._polls = 0
        self._poller = Poller(self.poll, interval, "bastion-edge rules watcher")

    def retarget(self, path: Path, current_sha256: str) -> None:
        """Watch another file from now on (the rules option changed at runtime)."""
        self.path = path
        self._sha256 = current_sha256
        self._failed_sha256 = None
        self._signature = file_signature(path)

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()


    def poll(self) -> None:
        """One check; public so tests can drive it without waiting."""
        self._polls += 1
        signature = file_signature(self.path)
        if signature == self._signature and self._polls % self.rehash_every:
            return
        self._signature = signature
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            self._report_failure(f"missing:{e}", e)
            return
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._sha256:
            self._failed_sha256 = None  # reverted: a later bad file is news again
            return
        if digest == self._failed_sha256:
            return
        try:
            rules = parse_rules(raw, source=str(self.path), allow_empty=False)
        except RulesError as e:
            self._report_failure(digest, e)
            return
        self._sha256 = digest
        self._failed_sha256 = None
        self._on_loaded(rules)

    def _report_failure(self, digest: str, error: Exception) -> None:
        if digest != self._failed_sha256:
            self._failed_sha256 = digest
            self._on_failed(error)

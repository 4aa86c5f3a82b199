"""Bastion keys read from files (e.g. a mounted Kubernetes Secret), rotated live.

A file is read on first use, then every second its resolved path is stat'ed and its
content compared (a Secret update swaps the `..data` symlink; the mtime alone is not
trusted). A changed key is used from the next request on; a file that becomes
unreadable or empty keeps the last good key and is reported. Log lines and metrics
name the file, never the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from bastion_edge.config.polling import Poller
from bastion_edge.config.reload import Signature, file_signature

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Watched:
    key: str | None
    signature: Signature | None
    failing: bool = False


class KeyFiles:
    """Key files by path: `read(path)` answers from memory; `poll()` refreshes."""

    def __init__(self, registry: CollectorRegistry | None = None, interval: float = 1.0) -> None:
        self.interval = interval
        self._files: dict[str, _Watched] = {}
        self._poller = Poller(self.poll, interval, "bastion-edge key files")
        self.events = Counter(
            "bastion_edge_key_source_events", "Key file reads, by file and result "
            "(loaded, changed, failed); values are never exported.",
            ["source", "result"], registry=registry or CollectorRegistry())

    def read(self, path: str) -> str | None:
        """The current key in `path`, or None if it was never readable."""
        watched = self._files.get(path)
        if watched is None:
            watched = self._files[path] = _Watched(None, file_signature(Path(path)))
            self._refresh(path, watched)
            self.start()
        return watched.key

    def poll(self) -> None:
        """One check of every watched file; public so tests can drive it."""
        for path, watched in list(self._files.items()):
            watched.signature = file_signature(Path(path))
            self._refresh(path, watched)

    def _refresh(self, path: str, watched: _Watched) -> None:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
            if not key:
                raise ValueError("the file is empty")
        except (OSError, ValueError) as e:
            if not watched.failing:
                watched.failing = True
                self.events.labels(f"file:{path}", "failed").inc()
                kept = "keeping the last key read" if watched.key else "no key yet"
                log.error("bastion-edge: key file %s unreadable (%s); %s",
                          path, type(e).__name__ if isinstance(e, OSError) else e, kept)
            return
        watched.failing = False
        if key == watched.key:
            return
        result = "loaded" if watched.key is None else "changed"
        watched.key = key
        self.events.labels(f"file:{path}", result).inc()
        # A rotation is worth seeing at the default log level; the first read is not.
        (log.info if result == "loaded" else log.warning)(
            "bastion-edge: key file %s %s (now in use)", path, result)

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()


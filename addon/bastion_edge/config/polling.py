"""A background task that calls `poll()` every `interval` seconds until stopped.

The rules watcher and the key-file watcher poll files (`os.stat`, then a hash) rather
than subscribe to change events: Kubernetes ConfigMap and Secret updates are symlink
swaps whose mtimes may not change, and polling is what mitmproxy's own script reloader
does too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger("bastion_edge")


class Poller:
    def __init__(self, poll: Callable[[], None], interval: float, name: str) -> None:
        self._poll = poll
        self.interval = interval
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling on the running loop (without one, e.g. in unit tests, the
        owner polls by hand)."""
        if self._task is None:
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                    name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self._poll()
            except Exception:  # the watcher must outlive any surprise
                log.exception("%s: unexpected error", self.name)

"""SO_REUSEPORT and a listen backlog for mitmproxy's TCP listeners (`run --workers N`).

mitmproxy 12 opens its TCP listeners in `AsyncioServerInstance.listen` with
`asyncio.start_server(self.handle_stream, host, port)`: no `reuse_port`, and asyncio's
default backlog of 100. So a second process cannot share the port, and a burst of new
connections overflows the accept queue. mitmproxy has no option for either (see the
README, "Workers").

The patch: `mode_servers.asyncio` (the module's own name for asyncio) is replaced by a
proxy whose `start_server` adds `reuse_port=True` and `backlog=N`; every other attribute
is the real asyncio. Nothing else in mitmproxy changes. Because the patch depends on the
exact body of `listen`, `install` first checks it against the versions this was written
for and refuses, naming what changed, if mitmproxy's code is different.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from types import ModuleType
from typing import Any

# sha256 of `inspect.getsource(AsyncioServerInstance.listen)` (dedented) in the mitmproxy
# versions this patch was read against: 12.3.1 (the pinned range is >=12.3,<13).
_KNOWN_DIGESTS = frozenset({
    "13c0697172a3de67844d500466cfcb375b4b02dfbb79a93876d64910db92a988",  # 12.3.1
})
# The one call the patch changes; it must appear exactly once in `listen`.
PATCHED_CALL = "asyncio.start_server(self.handle_stream, host, port)"
DEFAULT_BACKLOG = 1024


class PatchRefused(RuntimeError):
    """mitmproxy's listener code is not the code this patch was written for."""


def listen_source_digest(source: str) -> str:
    return hashlib.sha256(textwrap.dedent(source).encode()).hexdigest()


def check_listen_source(source: str, version: str, known: frozenset[str]) -> None:
    """Refuse unless `listen` is a body this patch was checked against."""
    if source.count(PATCHED_CALL) != 1:
        raise PatchRefused(
            f"mitmproxy {version}: AsyncioServerInstance.listen no longer calls "
            f"`{PATCHED_CALL}` exactly once; --workers cannot share the port safely. "
            "Run with --workers 1, or update bastion_edge/proxy/reuse_port.py.")
    digest = listen_source_digest(source)
    if digest not in known:
        raise PatchRefused(
            f"mitmproxy {version}: AsyncioServerInstance.listen changed (sha256 "
            f"{digest[:16]}, not one this patch was checked against); refusing to patch. "
            "Run with --workers 1, or review the new code and add its digest to "
            "bastion_edge/proxy/reuse_port.py.")


class _ReusePortAsyncio:
    """asyncio, except that `start_server` shares the port and takes a longer queue."""

    def __init__(self, real: ModuleType, backlog: int | None, reuse_port: bool) -> None:
        self._real = real
        self.backlog = backlog
        self.reuse_port = reuse_port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def start_server(
        self, client_connected_cb: Callable[..., Any], host: Any = None, port: Any = None,
        **kwargs: Any,
    ) -> asyncio.Server:
        if self.reuse_port:
            kwargs.setdefault("reuse_port", True)
        if self.backlog:
            kwargs.setdefault("backlog", self.backlog)
        return await self._real.start_server(client_connected_cb, host, port, **kwargs)


def install(backlog: int | None = DEFAULT_BACKLOG, known: frozenset[str] | None = None,
            reuse_port: bool = True) -> None:
    """Patch mitmproxy's TCP listeners (idempotent; a second call updates the settings).
    `backlog=None` keeps asyncio's default."""
    from mitmproxy.proxy import mode_servers
    from mitmproxy.version import VERSION

    current = getattr(mode_servers, "asyncio")  # noqa: B009 - not re-exported
    if isinstance(current, _ReusePortAsyncio):
        current.backlog, current.reuse_port = backlog, reuse_port
        return
    source = inspect.getsource(mode_servers.AsyncioServerInstance.listen)
    check_listen_source(source, VERSION, _KNOWN_DIGESTS if known is None else known)
    setattr(mode_servers, "asyncio", _ReusePortAsyncio(current, backlog, reuse_port))  # noqa: B010


def uninstall() -> None:
    from mitmproxy.proxy import mode_servers

    current = getattr(mode_servers, "asyncio")  # noqa: B009 - not re-exported
    if isinstance(current, _ReusePortAsyncio):
        setattr(mode_servers, "asyncio", current._real)  # noqa: B010

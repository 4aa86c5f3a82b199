"""The SO_REUSEPORT/backlog patch of mitmproxy's listeners (proxy/reuse_port.py)."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Iterator

import pytest
from mitmproxy.proxy import mode_servers

from bastion_edge.proxy import reuse_port


@pytest.fixture(autouse=True)
def unpatched() -> Iterator[None]:
    reuse_port.uninstall()
    yield
    reuse_port.uninstall()


def listen_source() -> str:
    return inspect.getsource(mode_servers.AsyncioServerInstance.listen)


def test_the_pinned_mitmproxy_listen_is_a_known_body() -> None:
    reuse_port.check_listen_source(listen_source(), "pinned", reuse_port._KNOWN_DIGESTS)


def test_a_changed_listen_is_refused_naming_the_change() -> None:
    changed = listen_source().replace("servers: list[", "servers_renamed: list[", 1)
    with pytest.raises(reuse_port.PatchRefused, match="changed"):
        reuse_port.check_listen_source(changed, "13.0", reuse_port._KNOWN_DIGESTS)
    gone = listen_source().replace(reuse_port.PATCHED_CALL, "start(self.handle_stream)")
    with pytest.raises(reuse_port.PatchRefused, match="exactly once"):
        reuse_port.check_listen_source(gone, "13.0", reuse_port._KNOWN_DIGESTS)


def test_install_refuses_when_the_source_is_unknown_and_leaves_mitmproxy_alone() -> None:
    with pytest.raises(reuse_port.PatchRefused):
        reuse_port.install(known=frozenset({"0" * 64}))
    assert getattr(mode_servers, "asyncio") is asyncio  # noqa: B009


def test_two_listeners_share_one_port_with_the_patch() -> None:
    async def scenario() -> tuple[int, int, int]:
        patched = getattr(mode_servers, "asyncio")  # noqa: B009 - what listen() calls
        one = await patched.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = one.sockets[0].getsockname()[1]
        two = await patched.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        flags = [s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
                 for server in (one, two) for s in server.sockets]
        one.close()
        two.close()
        return port, two.sockets[0].getsockname()[1] if two.sockets else port, min(flags)

    reuse_port.install(backlog=2048)
    port, second_port, reuse_flag = asyncio.run(scenario())
    assert second_port == port and reuse_flag == 1
    assert getattr(mode_servers, "asyncio").backlog == 2048  # noqa: B009


def test_without_the_patch_a_second_listener_is_refused() -> None:
    async def scenario() -> None:
        one = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        try:
            await asyncio.start_server(
                lambda r, w: w.close(), "127.0.0.1", one.sockets[0].getsockname()[1])
        finally:
            one.close()

    with pytest.raises(OSError):
        asyncio.run(scenario())


def test_the_backlog_reaches_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    async def fake_start_server(cb: object, host: object, port: object, **kw: object) -> None:
        seen.update(kw)

    monkeypatch.setattr(asyncio, "start_server", fake_start_server)
    reuse_port.install(backlog=4096, reuse_port=False)
    asyncio.run(getattr(mode_servers, "asyncio").start_server(None, "h", 1))  # noqa: B009
    assert seen == {"backlog": 4096}

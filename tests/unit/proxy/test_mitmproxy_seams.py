"""The mitmproxy seams (proxy/mitmproxy_seams.py): each checked by digest, each doing its job."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.proxy import mode_servers

from bastion_edge.proxy import mitmproxy_seams as seams


@pytest.fixture(autouse=True)
def unpatched() -> Iterator[None]:
    seams.uninstall_reuse_port()
    yield
    seams.uninstall_reuse_port()


def listen_source() -> str:
    return inspect.getsource(mode_servers.AsyncioServerInstance.listen)


def test_the_pinned_mitmproxy_listen_is_a_known_body() -> None:
    seams.check_listen_source(listen_source(), "pinned", seams.LISTENER.known)


def test_a_changed_listen_is_refused_naming_the_change() -> None:
    changed = listen_source().replace("servers: list[", "servers_renamed: list[", 1)
    with pytest.raises(seams.SeamRefused, match=r"mitmproxy 13\.0: seam 'listener'.* changed"):
        seams.check_listen_source(changed, "13.0", seams.LISTENER.known)
    gone = listen_source().replace(seams.PATCHED_CALL, "start(self.handle_stream)")
    with pytest.raises(seams.SeamRefused, match="exactly once"):
        seams.check_listen_source(gone, "13.0", seams.LISTENER.known)


def test_install_refuses_when_the_source_is_unknown_and_leaves_mitmproxy_alone() -> None:
    with pytest.raises(seams.SeamRefused):
        seams.install_reuse_port(known=frozenset({"0" * 64}))
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

    seams.install_reuse_port(backlog=2048)
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
    seams.install_reuse_port(backlog=4096, reuse_port=False)
    asyncio.run(getattr(mode_servers, "asyncio").start_server(None, "h", 1))  # noqa: B009
    assert seen == {"backlog": 4096}


# --------------------------------------------------------------- every seam, by digest


@pytest.mark.parametrize("seam", seams.SEAMS, ids=lambda s: s.name)
def test_every_seam_matches_the_pinned_mitmproxy(seam: seams.Seam) -> None:
    seams.verify(seam)


@pytest.mark.parametrize("seam", seams.SEAMS, ids=lambda s: s.name)
def test_a_changed_seam_is_refused_with_its_name_and_the_version(seam: seams.Seam) -> None:
    changed = inspect.getsource(seam.source()) + "\n# changed upstream\n"
    with pytest.raises(seams.SeamRefused) as refused:
        seams.check_source(seam, changed, "13.0.0")
    message = str(refused.value)
    assert f"mitmproxy 13.0.0: seam {seam.name!r} ({seam.target}) changed" in message
    assert "mitmproxy seams: how to upgrade mitmproxy" in message


def test_install_refuses_before_patching_anything_when_one_seam_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mitmproxy.proxy.layers.http import _http1

    monkeypatch.setattr(seams._Installed, "done", False)
    stale = seams.Seam(seams.TRAILERS.name, seams.TRAILERS.target, seams.TRAILERS.source,
                       frozenset({"0" * 64}))
    monkeypatch.setattr(seams, "TRAILERS", stale)
    page = _http1.make_error_response
    with pytest.raises(seams.SeamRefused, match="seam 'trailers'"):
        seams.install()
    assert _http1.make_error_response is page


def test_install_patches_once_and_takes_the_latest_state() -> None:
    from mitmproxy.proxy.layers import http as http_layer
    from mitmproxy.proxy.layers.http import _http1

    from bastion_edge.config.limits_section import LimitsRules

    seen: list[str] = []
    seams.install(lambda: LimitsRules(max_header_bytes=1), seen.append)
    patched = (_http1.make_error_response, http_layer.HttpStream.check_body_size,
               _http1.Http1Server.read_headers, _http1.Http1Connection.read_body)
    seams.install(lambda: LimitsRules(max_header_bytes=2))
    assert patched == (_http1.make_error_response, http_layer.HttpStream.check_body_size,
                       _http1.Http1Server.read_headers, _http1.Http1Connection.read_body)
    assert seams.guard_state().limits().max_header_bytes == 2
    seams.guard_state().counted("x")  # the default counter: nothing to tell
    assert seen == []


def test_the_error_page_seam_answers_registered_messages_only() -> None:
    from mitmproxy.proxy.layers.http import _http1

    from bastion_edge.errors import bad_gateway
    from bastion_edge.proxy import gateway_errors

    seams.install()
    message = "bastion-edge: cannot reach the upstream"
    gateway_errors.register(message, bad_gateway(message, "upstream_unreachable"))
    ours = _http1.make_error_response(502, message)
    assert b"upstream_unreachable" in ours and b"application/json" in ours.lower()
    again = _http1.make_error_response(502, message)  # used once
    assert b"text/html" in again.lower()


def test_run_refuses_to_start_naming_the_changed_seam(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bastion_edge.cli.main import main

    rules = tmp_path / "rules.yaml"
    rules.write_text("models: {gpt-4o: gpt-oss-120b}\n")
    stale = seams.Seam(seams.HEADER_SIZE.name, seams.HEADER_SIZE.target,
                       seams.HEADER_SIZE.source, frozenset({"0" * 64}))
    monkeypatch.setattr(seams, "HEADER_SIZE", stale)
    assert main(["run", "--rules", str(rules), "--confdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"bastion-edge: mitmproxy {seams.mitmproxy_version()}: seam 'header_size'" in err


def test_installed_seams_still_verify_against_mitmproxy_s_own_code() -> None:
    seams.install()
    seams.verify_request_path()  # hashes the replaced originals, not our wrappers

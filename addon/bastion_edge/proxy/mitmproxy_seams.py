"""Every place bastion-edge replaces a piece of mitmproxy's private code: here and only here.

A seam is one replaced function or module attribute, named, with the sha256 of the source
it was read against (`inspect.getsource`, dedented) in the pinned mitmproxy. Before
patching, each seam's current source is hashed; an unknown digest refuses the start with
the mitmproxy version found and the seam's name (see docs/development/architecture.md,
"mitmproxy seams: how to upgrade mitmproxy"). What each replacement does lives with its concern:
`gateway_errors.py` (the OpenAI envelope of mitmproxy's own error pages), `http_guard.py`
(request limits mitmproxy cannot enforce itself); the listener patch (`reuse_port`) is
small enough to live here whole.

The error-page and guard seams are installed once per process (`install`, idempotent);
what they need from the running addon (the current limits, the rejection counter) is one
`GuardState` handed in, replaced by the next `install` call.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.proxy import gateway_errors, http_guard


class SeamRefused(RuntimeError):
    """mitmproxy's code at a seam is not the code bastion-edge was written against."""


PatchRefused = SeamRefused  # the listener patch's older name (cli/main.py)

UPGRADE_HINT = ("review the new code against bastion_edge/proxy/mitmproxy_seams.py and add "
                "its digest there (docs/development/architecture.md, \"mitmproxy seams: "
                "how to upgrade mitmproxy\")")


@dataclass(frozen=True, slots=True)
class Seam:
    """One replaced piece of mitmproxy: where it is, and the sources it was checked against."""

    name: str
    target: str  # dotted path of what is replaced, for the message
    source: Callable[[], Any]  # the object whose source is hashed, fetched when checked
    known: frozenset[str]  # sha256 of the dedented source, per checked mitmproxy version


def source_digest(source: str) -> str:
    return hashlib.sha256(textwrap.dedent(source).encode()).hexdigest()


def check_source(seam: Seam, source: str, version: str) -> None:
    """Refuse unless `source` is a body this seam was checked against."""
    digest = source_digest(source)
    if digest not in seam.known:
        raise SeamRefused(
            f"mitmproxy {version}: seam {seam.name!r} ({seam.target}) changed (sha256 "
            f"{digest[:16]}, not one bastion-edge was checked against); refusing to start. "
            f"Use the pinned mitmproxy (>=12.3,<13), or {UPGRADE_HINT}.")


def mitmproxy_version() -> str:
    from mitmproxy.version import VERSION

    return VERSION


def verify(seam: Seam, version: str | None = None) -> None:
    """Check mitmproxy's own code at the seam (the original, once it is replaced)."""
    replaced = _Installed.originals.get(seam.name)
    source = inspect.getsource(replaced if replaced is not None else seam.source())
    check_source(seam, source, version or mitmproxy_version())


# ------------------------------------------------------------------------------ the seams
# Each digest below is mitmproxy 12.3.1's (the pinned range is >=12.3,<13); a version
# whose code at a seam was re-read and found compatible adds its digest to that seam.

def _known(*digests: str) -> frozenset[str]:
    return frozenset(digests)


def _http1() -> ModuleType:
    from mitmproxy.proxy.layers.http import _http1

    return _http1


def _http_stream() -> Any:
    from mitmproxy.proxy.layers import http as http_layer

    return http_layer.HttpStream


def _mode_servers() -> ModuleType:
    from mitmproxy.proxy import mode_servers

    return mode_servers


ERROR_PAGE = Seam(
    "error_page", "mitmproxy.proxy.layers.http._http1.make_error_response",
    lambda: _http1().make_error_response,
    _known("03ce75ab62e8e78ba1bc19e735d55a520bf878929c32866868dd234996b4b281"))
BODY_SIZE = Seam(
    "body_size", "mitmproxy.proxy.layers.http.HttpStream.check_body_size",
    lambda: _http_stream().check_body_size,
    _known("ae602ef9fc48ca898207605320a58ff9b3566759f93f5e4f59038a92244e0bc3"))
TRAILERS = Seam(
    "trailers", "mitmproxy.proxy.layers.http._http1.Http1Connection.read_body",
    lambda: _http1().Http1Connection.read_body,
    _known("d821888c1e1512b315ff8bc4b39d27ff206ec4a69d1ac79360a4e50cbaf113ae"))
HEADER_SIZE = Seam(
    "header_size", "mitmproxy.proxy.layers.http._http1.Http1Server.read_headers",
    lambda: _http1().Http1Server.read_headers,
    _known("496f9de6da56eb2dadaeb58210c0567d0d776a1be71d7a51b6b2c7970b4e85ce"))
LISTENER = Seam(
    "listener", "mitmproxy.proxy.mode_servers.AsyncioServerInstance.listen",
    lambda: _mode_servers().AsyncioServerInstance.listen,
    _known("13c0697172a3de67844d500466cfcb375b4b02dfbb79a93876d64910db92a988"))
REQUEST_PATH = (ERROR_PAGE, BODY_SIZE, TRAILERS, HEADER_SIZE)  # installed by the addon
SEAMS = (*REQUEST_PATH, LISTENER)


def verify_request_path() -> None:
    """Check every request-path seam (the CLI does, before starting anything)."""
    version = mitmproxy_version()
    for seam in (ERROR_PAGE, BODY_SIZE, TRAILERS, HEADER_SIZE):  # looked up when called
        verify(seam, version)


# ----------------------------------------------------- error page and request guard seams

@dataclass(frozen=True, slots=True)
class GuardState:
    """What the guard seams need from the running addon."""

    limits: Callable[[], LimitsRules] = LimitsRules  # the current rules' limits
    counted: Callable[[str], None] = lambda limit: None  # told each limit hit here


class _Installed:
    state = GuardState()
    done = False
    originals: ClassVar[dict[str, Any]] = {}  # seam name -> mitmproxy's function it replaced


def install(limits: Callable[[], LimitsRules] | None = None,
            counted: Callable[[str], None] | None = None) -> None:
    """Check and install the error-page and guard seams, once per process; each call
    hands in the running addon's state (the last call's serves)."""
    _Installed.state = GuardState(limits or LimitsRules, counted or GuardState().counted)
    if _Installed.done:
        return
    verify_request_path()  # all checked before anything is patched
    from mitmproxy.proxy.layers import http as http_layer
    from mitmproxy.proxy.layers.http import _http1 as http1

    original_page: Callable[[int, str], bytes] = http1.make_error_response
    original_check = http_layer.HttpStream.check_body_size
    original_read = http1.Http1Connection.read_body
    original_headers = http1.Http1Server.read_headers
    _Installed.originals.update({
        ERROR_PAGE.name: original_page, BODY_SIZE.name: original_check,
        TRAILERS.name: original_read, HEADER_SIZE.name: original_headers})

    def make_error_response(status_code: int, message: str = "") -> bytes:
        ours = gateway_errors.take(message)
        return ours if ours is not None else original_page(status_code, message)

    def read_headers(self: Any, event: Any) -> Generator[Any, Any, None]:
        yield from original_headers(self, event)
        yield from http_guard.guard_headers(self, _Installed.state.limits(),
                                            _Installed.state.counted)

    def check_body_size(self: Any, request: bool) -> Generator[Any, Any, bool]:
        refused = yield from http_guard.guard_body(self, request, _Installed.state.limits())
        return refused or (yield from original_check(self, request))

    def read_body(self: Any, event: Any) -> Generator[Any, Any, None]:
        try:
            yield from original_read(self, event)
        except NotImplementedError:  # trailers: mitmproxy cannot carry them on HTTP/1
            yield from http_guard.refuse_trailers(self)

    http1.make_error_response = make_error_response
    http_layer.HttpStream.check_body_size = check_body_size  # type: ignore[method-assign]
    http1.Http1Server.read_headers = read_headers  # type: ignore[method-assign]
    http1.Http1Connection.read_body = read_body  # type: ignore[method-assign]
    _Installed.done = True


def guard_state() -> GuardState:
    return _Installed.state


# ------------------------------------------------------------- listener seam (--workers)
# mitmproxy 12 opens its TCP listeners in `AsyncioServerInstance.listen` with
# `asyncio.start_server(self.handle_stream, host, port)`: no `reuse_port`, and asyncio's
# default backlog of 100; mitmproxy has no option for either (docs/operate/workers.md). The
# module's own name for asyncio is replaced by a proxy whose `start_server` adds both;
# every other attribute is the real asyncio.

PATCHED_CALL = "asyncio.start_server(self.handle_stream, host, port)"
DEFAULT_BACKLOG = 1024


def check_listen_source(source: str, version: str, known: frozenset[str]) -> None:
    """Refuse unless `listen` calls the patched call once and is a checked body."""
    if source.count(PATCHED_CALL) != 1:
        raise SeamRefused(
            f"mitmproxy {version}: seam {LISTENER.name!r} ({LISTENER.target}) no longer "
            f"calls `{PATCHED_CALL}` exactly once; --workers cannot share the port "
            "safely. Run with --workers 1, or update bastion_edge/proxy/mitmproxy_seams.py.")
    try:
        check_source(Seam(LISTENER.name, LISTENER.target, LISTENER.source, known),
                     source, version)
    except SeamRefused as e:
        raise SeamRefused(f"{e} Or run with --workers 1.") from None


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


def install_reuse_port(backlog: int | None = DEFAULT_BACKLOG,
                       known: frozenset[str] | None = None, reuse_port: bool = True) -> None:
    """Patch mitmproxy's TCP listeners (idempotent; a second call updates the settings).
    `backlog=None` keeps asyncio's default."""
    mode_servers = _mode_servers()
    current = getattr(mode_servers, "asyncio")  # noqa: B009 - not re-exported
    if isinstance(current, _ReusePortAsyncio):
        current.backlog, current.reuse_port = backlog, reuse_port
        return
    source = inspect.getsource(LISTENER.source())
    check_listen_source(source, mitmproxy_version(), LISTENER.known if known is None else known)
    setattr(mode_servers, "asyncio", _ReusePortAsyncio(current, backlog, reuse_port))  # noqa: B010


def uninstall_reuse_port() -> None:
    mode_servers = _mode_servers()
    current = getattr(mode_servers, "asyncio")  # noqa: B009 - not re-exported
    if isinstance(current, _ReusePortAsyncio):
        setattr(mode_servers, "asyncio", current._real)  # noqa: B010


# ------------------------------------------------- key screen seam (mitmweb, flow files)
# With flows kept on screen, the Bastion key is never on a flow (proxy/key_screen.py puts
# a redacted value there); it is written into the request head only as mitmproxy
# serialises it: `http1.assemble_request_head` (HTTP/1) and `format_h2_request_headers`
# (HTTP/2 and HTTP/3). `revealed(request)` is the real `authorization` value, or None.

def _assemble() -> ModuleType:
    from mitmproxy.net.http import http1

    return http1


def _http2_layer() -> ModuleType:
    from mitmproxy.proxy.layers.http import _http2

    return _http2


H1_REQUEST_HEAD = Seam(
    "h1_request_head", "mitmproxy.net.http.http1.assemble_request_head",
    lambda: _assemble().assemble_request_head,
    _known("e034304c8d8989d1aea0bc0171c9604af4974cf14f294f5505a6e466f5bc47ae"))
H2_REQUEST_HEADERS = Seam(
    "h2_request_headers", "mitmproxy.proxy.layers.http._http2.format_h2_request_headers",
    lambda: _http2_layer().format_h2_request_headers,
    _known("0bbc986d90823fbed50d0aa9fba3b4e6f051ef5c58cda705cda419771254c39b"))


def install_key_screen(revealed: Callable[[Any], str | None]) -> None:
    """Check and install the key screen seams, once per process."""
    if H1_REQUEST_HEAD.name in _Installed.originals:
        return
    version = mitmproxy_version()
    verify(H1_REQUEST_HEAD, version)
    verify(H2_REQUEST_HEADERS, version)
    from mitmproxy.proxy.layers.http import _http3

    http1, http2 = _assemble(), _http2_layer()
    original_head = http1.assemble_request_head
    original_h2 = http2.format_h2_request_headers
    _Installed.originals.update({H1_REQUEST_HEAD.name: original_head,
                                 H2_REQUEST_HEADERS.name: original_h2})

    def assemble_request_head(request: Any) -> bytes:
        real = revealed(request)
        if real is None:
            return bytes(original_head(request))
        shown = request.headers["authorization"]
        request.headers["authorization"] = real  # for these bytes only: no await here
        try:
            return bytes(original_head(request))
        finally:
            request.headers["authorization"] = shown

    def format_h2_request_headers(
        context: Any, event: Any
    ) -> Generator[Any, Any, list[tuple[bytes, bytes]]]:
        headers: list[tuple[bytes, bytes]] = yield from original_h2(context, event)
        real = revealed(event.request)
        if real is None:
            return headers
        return [(name, real.encode() if name.lower() == b"authorization" else value)
                for name, value in headers]

    setattr(http1, "assemble_request_head", assemble_request_head)  # noqa: B010
    setattr(http2, "format_h2_request_headers", format_h2_request_headers)  # noqa: B010
    # _http3 imported it by name
    setattr(_http3, "format_h2_request_headers", format_h2_request_headers)  # noqa: B010

"""Starting and stopping the sandbox: in a running event loop, blocking, or in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from bastion_sandbox.app import build_app, build_redirect_app
from bastion_sandbox.config import SandboxConfig
from bastion_sandbox.journal import Journal
from bastion_sandbox.tls import SandboxTls, ensure_tls

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def _url_host(host: str) -> str:
    host = _WILDCARDS.get(host, host)
    return f"[{host}]" if ":" in host else host


@dataclass(slots=True)
class RunningSandbox:
    """A started sandbox. `port`/`http_port` are the bound ports (never 0)."""

    config: SandboxConfig
    tls: SandboxTls
    journal: Journal
    port: int
    http_port: int | None
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)

    @property
    def origin(self) -> str:
        return f"https://{_url_host(self.config.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. https://127.0.0.1:8443/v1."""
        return f"{self.origin}/v1"

    @property
    def http_origin(self) -> str | None:
        if self.http_port is None:
            return None
        return f"http://{_url_host(self.config.host)}:{self.http_port}"

    @property
    def ca_path(self) -> str:
        return str(self.tls.ca_cert)

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()


async def _serve(
    app: web.Application, host: str, port: int, tls: SandboxTls | None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        context = tls.ssl_context() if tls else None
        await web.TCPSite(runner, host, port, ssl_context=context, backlog=512).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def start_sandbox(config: SandboxConfig) -> RunningSandbox:
    """Serve HTTPS on config.host:config.port (and the HTTP redirector on http_port)."""
    tls = await asyncio.to_thread(ensure_tls, config.tls_dir)
    journal = Journal(config.journal_size, config.journal_body_limit)
    runner, port = await _serve(build_app(config, journal), config.host, config.port, tls)
    running = RunningSandbox(config, tls, journal, port, None, [runner])
    if config.http_port is not None:
        try:
            redirector = build_redirect_app(journal, port)
            http_runner, running.http_port = await _serve(
                redirector, config.host, config.http_port, None
            )
        except BaseException:
            await running.stop()
            raise
        running._runners.append(http_runner)
    return running


def banner(running: RunningSandbox) -> str:
    line = f"bastion-edge sandbox on {running.base_url} (CA: {running.ca_path})"
    if running.http_origin:
        line += f"; http redirect on {running.http_origin}"
    return line


async def serve_until_signalled(config: SandboxConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    running = await start_sandbox(config)
    print(banner(running), flush=True)
    try:
        await stop.wait()
    finally:
        await running.stop()


def run_sandbox(config: SandboxConfig) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_signalled(config))


class SandboxThread:
    """The sandbox on its own event loop in a daemon thread (tests, demo, benchmark).

    with SandboxThread(SandboxConfig(port=0, tls_dir=tmp)) as sandbox:
        httpx.get(sandbox.base_url + "/models", verify=sandbox.ca_path, ...)
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bastion-edge-sandbox", daemon=True
        )
        self._running: RunningSandbox | None = None

    def start(self, timeout: float = 30.0) -> RunningSandbox:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_sandbox(self.config), self._loop)
        try:
            self._running = future.result(timeout)
        except BaseException:
            self._shutdown_loop()
            raise
        return self._running

    def stop(self, timeout: float = 10.0) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            asyncio.run_coroutine_threadsafe(running.stop(), self._loop).result(timeout)
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> RunningSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

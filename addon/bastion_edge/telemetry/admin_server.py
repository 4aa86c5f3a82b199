"""The observability endpoint: /metrics, /healthz, /readyz on --metrics-port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class AdminServer:
    def __init__(
        self, registry: CollectorRegistry, is_ready: Callable[[], tuple[bool, str]]
    ) -> None:
        self._registry = registry
        self._is_ready = is_ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _setup(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        return self._runner

    async def start_unix(self, path: str) -> None:
        """On a Unix socket: how a `--workers` pool's parent asks one worker."""
        await web.UnixSite(await self._setup(), path).start()

    async def start(self, host: str, port: int) -> None:
        site = web.TCPSite(await self._setup(), host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, why = self._is_ready()
        return web.json_response({"ready": ready, "detail": why}, status=200 if ready else 503)

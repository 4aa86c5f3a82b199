"""Client connections: how many at once, and how long one may sit without a request.

A connection must deliver complete request headers within `header_timeout_seconds` of
opening (or of its CONNECT: the TLS handshake and the first request must follow), and
may then sit idle between requests for at most `idle_timeout_seconds`. Connections over
`max_client_connections` are refused at accept. Each close or refusal counts in
`bastion_edge_limit_rejections_total{limit}`; `bastion_edge_client_connections` is the
gauge. Tunnels (TCP passthrough, WebSocket) are left to mitmproxy's `tcp_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import connection, ctx, http, tcp
from mitmproxy.proxy import layer, layers

from bastion_edge.config.limits import LimitsRules
from bastion_edge.core.limits import (
    LIMIT_CONNECTIONS,
    LIMIT_HEADER_TIMEOUT,
    LIMIT_IDLE_TIMEOUT,
)
from bastion_edge.proxy.memory import release_free_memory
from bastion_edge.telemetry.metrics import Metrics

log = logging.getLogger("bastion_edge")

SWEEP_SECONDS = 1.0
TRIM_AFTER_DROP = 64  # connections gone (at least half of a peak this large): trim the heap


@dataclass(slots=True)
class _Client:
    deadline: float | None  # None: busy with a request, or a tunnel
    limit: str  # which timeout the deadline enforces


class ConnectionGuard:
    def __init__(self, limits: Callable[[], LimitsRules], metrics: Metrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._clients: dict[str, _Client] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    # ---------------------------------------------------------------- hooks

    async def running(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def client_connected(self, client: connection.Client) -> None:
        limits = self._limits()
        if len(self._clients) >= limits.max_client_connections:
            client.error = (f"bastion-edge: over limits.max_client_connections "
                            f"({limits.max_client_connections})")
            self._metrics.limit_rejected(LIMIT_CONNECTIONS)
            return
        self._clients[client.id] = _Client(
            time.monotonic() + limits.header_timeout_seconds, LIMIT_HEADER_TIMEOUT)
        self._metrics.client_connections.set(len(self._clients))

    def client_disconnected(self, client: connection.Client) -> None:
        if self._clients.pop(client.id, None) is not None:
            self._metrics.client_connections.set(len(self._clients))

    def http_connect(self, flow: http.HTTPFlow) -> None:  # TLS and a request must follow
        self._wait(flow.client_conn, LIMIT_HEADER_TIMEOUT)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._busy(flow.client_conn)

    def response(self, flow: http.HTTPFlow) -> None:
        self._wait(flow.client_conn, LIMIT_IDLE_TIMEOUT)

    def error(self, flow: http.HTTPFlow) -> None:
        self._wait(flow.client_conn, LIMIT_IDLE_TIMEOUT)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self._busy(flow.client_conn)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """A tunnel to a host that is not intercepted (`ignore`: no tcp_start hook) is
        not ours to time; mitmproxy's own `tcp_timeout` applies. Runs after
        mitmproxy's NextLayer addon has chosen the layer."""
        if isinstance(nextlayer.layer, layers.TCPLayer | layers.UDPLayer):
            self._busy(nextlayer.context.client)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._busy(flow.client_conn)

    # ---------------------------------------------------------------- timers

    def _busy(self, client: connection.Client) -> None:
        entry = self._clients.get(client.id)
        if entry is not None:
            entry.deadline = None

    def _wait(self, client: connection.Client, limit: str) -> None:
        entry = self._clients.get(client.id)
        if entry is None:
            return
        limits = self._limits()
        seconds = limits.header_timeout_seconds if limit == LIMIT_HEADER_TIMEOUT \
            else limits.idle_timeout_seconds
        entry.deadline, entry.limit = time.monotonic() + seconds, limit

    async def _sweep_forever(self) -> None:
        peak = 0
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep(time.monotonic())
            peak = max(peak, len(self._clients))
            if peak >= TRIM_AFTER_DROP and len(self._clients) <= peak // 2:
                release_free_memory()  # a burst of connections has gone: return its memory
                peak = len(self._clients)

    def sweep(self, now: float) -> None:
        """Close every connection whose deadline has passed."""
        late = [(cid, c.limit) for cid, c in self._clients.items()
                if c.deadline is not None and c.deadline <= now]
        if not late:
            return
        server = ctx.master.addons.get("proxyserver")
        for client_id, limit in late:
            handler = server.connections.get(client_id) if server is not None else None
            self._clients[client_id].deadline = None  # closed once
            if handler is None:
                continue
            self._metrics.limit_rejected(limit)
            log.info("bastion-edge: closing client %s: limits.%s",
                     handler.client.peername, limit)
            task = asyncio.ensure_future(handler.on_timeout())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

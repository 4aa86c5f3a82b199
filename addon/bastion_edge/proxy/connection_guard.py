"""Client connections: how many at once, and how long one may sit without a request.

A connection must deliver complete request headers within `header_timeout_seconds` of
opening (or of its CONNECT: the TLS handshake and the first request must follow), and
may then sit idle between requests for at most `idle_timeout_seconds`; a request body
that stops arriving (buffered or streamed) is idle too, from its last byte, so a client
cannot hold a slot by never sending it whole. Connections over
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
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import connection, ctx, http, tcp
from mitmproxy.proxy import layer, layers

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.core.limits import (
    LIMIT_CONNECTIONS,
    LIMIT_HEADER_TIMEOUT,
    LIMIT_IDLE_TIMEOUT,
)
from bastion_edge.proxy.http_guard import BodyBudgetRelease
from bastion_edge.proxy.memory import release_free_memory
from bastion_edge.telemetry.metrics import Metrics

log = logging.getLogger("bastion_edge")

SWEEP_SECONDS = 1.0
TRIM_AFTER_DROP = 64  # connections gone (at least half of a peak this large): trim the heap


@dataclass(slots=True)
class _Client:
    deadline: float | None  # None: busy with a request, or a tunnel
    limit: str  # which timeout the deadline enforces
    receiving: set[str] = field(default_factory=set)  # flows whose request body is arriving


class ConnectionGuard:
    def __init__(self, limits: Callable[[], LimitsRules], metrics: Metrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._clients: dict[str, _Client] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self.addons = [BodyBudgetRelease()]  # mitmproxy runs a child addon's hooks too

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
        self._close_socket(client)

    @staticmethod
    def _close_socket(client: connection.Client) -> None:
        """After a refused request body (413, 503) mitmproxy 12 reported the client
        disconnected but never closed its socket (the connection handler was cancelled
        before it reached `writer.close()`): the socket stayed open, unread, until a
        garbage collection, and the client waited for an EOF that never came. It is
        closed here; after a normal close the writer is closing already."""
        server = ctx.master.addons.get("proxyserver")
        handler = server.connections.get(client.id) if server is not None else None
        transport = getattr(handler, "transports", {}).get(client)
        writer = getattr(transport, "writer", None)
        is_closing = getattr(writer, "is_closing", None)  # a StreamWriter (TCP)
        if writer is not None and callable(is_closing) and not is_closing():
            writer.close()

    def http_connect(self, flow: http.HTTPFlow) -> None:  # TLS and a request must follow
        self._wait(flow.client_conn, LIMIT_HEADER_TIMEOUT)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._busy(flow.client_conn)
        entry = self._clients.get(flow.client_conn.id)
        if entry is not None:
            entry.receiving.add(flow.id)

    def request(self, flow: http.HTTPFlow) -> None:  # the whole body has arrived
        self._received(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._received(flow)
        self._wait(flow.client_conn, LIMIT_IDLE_TIMEOUT)

    def error(self, flow: http.HTTPFlow) -> None:
        self._received(flow)
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

    def _received(self, flow: http.HTTPFlow) -> None:
        entry = self._clients.get(flow.client_conn.id)
        if entry is not None:
            entry.receiving.discard(flow.id)

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

    def sweep(self, now: float, wall: float | None = None) -> None:
        """Close every connection whose deadline has passed, and every one whose request
        body has not moved for `idle_timeout_seconds` (mitmproxy's own record of the
        connection's last event, in wall-clock time `wall`)."""
        late = [(cid, c.limit) for cid, c in self._clients.items()
                if c.deadline is not None and c.deadline <= now]
        if not late and not any(c.receiving for c in self._clients.values()):
            return
        server = ctx.master.addons.get("proxyserver")
        late += self._stalled(server, time.time() if wall is None else wall)
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

    def _stalled(self, server: Any, wall: float) -> list[tuple[str, str]]:
        """Connections with a request body under way and no event for the idle timeout."""
        receiving = [cid for cid, c in self._clients.items() if c.receiving]
        if server is None:
            return []
        idle = self._limits().idle_timeout_seconds
        stalled = []
        for client_id in receiving:
            handler = server.connections.get(client_id)
            watchdog = getattr(handler, "timeout_watchdog", None)
            if watchdog is not None and watchdog.last_activity + idle <= wall:
                self._clients[client_id].receiving.clear()  # closed once
                stalled.append((client_id, LIMIT_IDLE_TIMEOUT))
        return stalled

"""Upstream response timeouts, which mitmproxy does not have per request.

A timer per flow runs from the end of the request to the response headers. When it
fires, the upstream connection is closed through mitmproxy's connection handler; the
flow then fails, and the `error` hook answers 504 because `exchange.timed_out` is set.
"""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, http

from bastion_edge.proxy.exchange import Exchange


class ResponseTimeouts:
    def __init__(self) -> None:
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def start(self, flow: http.HTTPFlow, exchange: Exchange, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers[flow.id] = loop.call_later(seconds, self._fire, flow, exchange)

    def stop(self, flow: http.HTTPFlow) -> None:
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _fire(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        self._timers.pop(flow.id, None)
        if flow.response is not None or flow.error is not None:
            return
        exchange.timed_out = True
        server = ctx.master.addons.get("proxyserver")
        handler = server.connections.get(flow.client_conn.id) if server else None
        if handler is not None and flow.server_conn in handler.transports:
            handler.close_connection(flow.server_conn)

"""Issue 23 rows 7 and 8 at the hook level: the body budget seam and the connection guard
on a request body that stops arriving (mitmproxy's `tflow`, a stand-in proxyserver)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from types import SimpleNamespace
from typing import Any

from mitmproxy.test import taddons, tflow

from bastion_edge.config.limits_section import LimitsRules
from bastion_edge.core.limits import LIMIT_BUFFERED_TOTAL, LIMIT_IDLE_TIMEOUT
from bastion_edge.proxy import http_guard
from bastion_edge.proxy.connection_guard import ConnectionGuard
from bastion_edge.telemetry.metrics import Metrics

BUDGET = LimitsRules(max_json_body_bytes=1000, max_buffered_body_bytes_total=1000)


def _drive(gen: Generator[Any, Any, bool]) -> tuple[list[Any], bool]:
    commands = []
    try:
        while True:
            commands.append(next(gen))
    except StopIteration as stop:
        return commands, bool(stop.value)


def _stream(size: int) -> SimpleNamespace:
    flow = tflow.tflow()
    return SimpleNamespace(flow=flow, request_body_buf=bytearray(size), stream_id=1,
                           context=SimpleNamespace(client=flow.client_conn),
                           state_errored="errored", client_state="consuming")


def test_bodies_reserve_the_shared_budget_and_the_one_that_does_not_fit_is_refused() -> None:
    first, second = _stream(600), _stream(300)
    try:
        assert _drive(http_guard.guard_body(first, True, BUDGET)) == ([], False)
        assert _drive(http_guard.guard_body(second, True, BUDGET)) == ([], False)
        second.request_body_buf.extend(bytes(200))  # 600 + 500 > 1000
        commands, refused = _drive(http_guard.guard_body(second, True, BUDGET))
        assert refused and commands  # the error hook, then the 503 to the client
        error = http_guard.limit_error_of(second.flow)
        assert error is not None and error.status == 503 and error.limit == LIMIT_BUFFERED_TOTAL
        assert ("retry-after", "1") in error.headers
        assert not second.request_body_buf  # dropped at once
        assert http_guard.BUDGET.total == 600  # and its reservation with it
        http_guard.BodyBudgetRelease().response(first.flow)  # the held body's flow ends
        assert http_guard.BUDGET.total == 0
        third = _stream(900)
        assert _drive(http_guard.guard_body(third, True, BUDGET)) == ([], False)
        http_guard.BodyBudgetRelease().client_disconnected(third.flow.client_conn)
        assert http_guard.BUDGET.total == 0
    finally:
        http_guard.BUDGET.held.clear()
        http_guard.BUDGET.total = 0


class _Writer:
    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Handler:
    def __init__(self, client: Any, last_activity: float) -> None:
        self.client = client
        self.timeout_watchdog = SimpleNamespace(last_activity=last_activity)
        self.transports = {client: SimpleNamespace(writer=_Writer())}
        self.timed_out = 0

    async def on_timeout(self) -> None:
        self.timed_out += 1


class _ProxyServer:
    name = "proxyserver"

    def __init__(self) -> None:
        self.connections: dict[str, _Handler] = {}


def _connect(guard: ConnectionGuard, server: _ProxyServer,
             last_activity: float) -> tuple[Any, _Handler]:
    """A flow on a new client connection mitmproxy last heard from at `last_activity`."""
    flow = tflow.tflow()
    handler = _Handler(flow.client_conn, last_activity)
    server.connections[flow.client_conn.id] = handler
    guard.client_connected(flow.client_conn)
    return flow, handler


async def test_a_request_body_idle_past_the_timeout_closes_its_connection() -> None:
    guard = ConnectionGuard(lambda: LimitsRules(idle_timeout_seconds=3), Metrics())
    server = _ProxyServer()
    with taddons.context(guard, server):
        flow, handler = _connect(guard, server, 1000.0)
        guard.requestheaders(flow)  # the body starts arriving, then stops
        guard.sweep(0.0, wall=1002.9)
        await asyncio.sleep(0)
        assert handler.timed_out == 0  # idle for less than the timeout
        guard.sweep(0.0, wall=1003.0)
        await asyncio.sleep(0)
        assert handler.timed_out == 1
        assert f'limit="{LIMIT_IDLE_TIMEOUT}"' in _metrics_text(guard)
        guard.sweep(0.0, wall=2000.0)
        await asyncio.sleep(0)
        assert handler.timed_out == 1  # closed once

        finished, other = _connect(guard, server, 1000.0)  # a body that arrived whole
        guard.requestheaders(finished)
        guard.request(finished)
        guard.sweep(0.0, wall=2000.0)
        await asyncio.sleep(0)
        assert other.timed_out == 0


def test_a_disconnected_client_s_socket_is_closed_if_mitmproxy_left_it_open() -> None:
    guard = ConnectionGuard(LimitsRules, Metrics())
    server = _ProxyServer()
    with taddons.context(guard, server):
        flow, handler = _connect(guard, server, 0.0)
        guard.client_disconnected(flow.client_conn)
        assert handler.transports[flow.client_conn].writer.closed


def _metrics_text(guard: ConnectionGuard) -> str:
    from prometheus_client import generate_latest

    return generate_latest(guard._metrics.registry).decode()


def test_mitmproxy_still_keeps_what_the_guard_reads() -> None:
    """The guard reads (never patches) two things of mitmproxy's connection handler: the
    watchdog's clock of the last event, and the client's transport. A mitmproxy that
    renames them would turn both checks into silent no-ops; this test says so first."""
    import inspect

    from mitmproxy.proxy import server

    assert "self.timeout_watchdog.register_activity()" in inspect.getsource(
        server.ConnectionHandler.server_event)
    assert "self.last_activity = time.time()" in inspect.getsource(
        server.TimeoutWatchdog.register_activity)
    assert {"transports", "timeout_watchdog"} <= set(server.ConnectionHandler.__annotations__)
    assert "writer" in server.ConnectionIO.__annotations__

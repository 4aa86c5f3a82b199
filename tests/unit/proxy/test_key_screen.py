"""The key screen: a kept flow shows a redacted key; the bytes sent carry the real one."""

from __future__ import annotations

from typing import Any

from mitmproxy import http
from mitmproxy.addons import save
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http2
from mitmproxy.proxy.layers.http._events import RequestHeaders
from mitmproxy.test import taddons, tflow

from bastion_edge.proxy import mitmproxy_seams
from bastion_edge.proxy.exchange import METADATA_KEY
from bastion_edge.proxy.key_screen import KeyScreen, revealed
from bastion_edge.proxy.shared import REDACTED


def ours(key: str = "Bearer bk-real") -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.metadata[METADATA_KEY] = object()
    flow.request.headers["authorization"] = key
    return flow


def test_kept_flows_show_the_redacted_key_and_send_the_real_one() -> None:
    screen = KeyScreen()
    with taddons.context(save.Save(), screen) as tctx:
        tctx.options.update(save_stream_file="/dev/null")
        screen.running()
        flow = ours()
        screen.requestheaders(flow)
        assert flow.request.headers["authorization"] == REDACTED
        assert revealed(flow.request) == "Bearer bk-real"
        head = http1.assemble_request_head(flow.request)
        assert b"authorization: Bearer bk-real" in head
        assert flow.request.headers["authorization"] == REDACTED  # only the bytes had it
        headers = drive(_http2.format_h2_request_headers(None, RequestHeaders(  # type: ignore[arg-type]
            1, flow.request, end_stream=True)))
        assert (b"authorization", b"Bearer bk-real") in headers
        screen.response(flow)
        assert revealed(flow.request) is None


def test_without_kept_flows_nothing_is_moved() -> None:
    screen = KeyScreen()
    with taddons.context(screen):
        screen.running()
        flow = ours()
        screen.request(flow)
        assert flow.request.headers["authorization"] == "Bearer bk-real"
        plain = tflow.tflow()  # not a flow bastion-edge handles
        screen.active = True
        screen.request(plain)
        assert revealed(plain.request) is None


def test_the_seams_are_checked_against_mitmproxys_code() -> None:
    mitmproxy_seams.verify(mitmproxy_seams.H1_REQUEST_HEAD)
    mitmproxy_seams.verify(mitmproxy_seams.H2_REQUEST_HEADERS)


def drive(generator: Any) -> Any:
    try:
        while True:
            next(generator)
    except StopIteration as done:
        return done.value

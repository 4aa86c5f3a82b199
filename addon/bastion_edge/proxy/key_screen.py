"""The Bastion key never sits on a flow that mitmweb or a flow file can show.

With flows kept (`--web`, a flow file), this addon runs LAST in the chain, after each
hook that may put the key into a request (`requestheaders`, `request`): it moves the
`authorization` value of every flow bastion-edge handles into a side table and leaves
`REDACTED` on the flow. The real value is written into the request head only while
mitmproxy serialises it (`mitmproxy_seams.install_key_screen`), so a flow in flight
shows the redacted value from the moment the key is set, not just once it finished.
Without kept flows nothing is moved and no seam is installed.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping

from mitmproxy import ctx, http

from bastion_edge.proxy import mitmproxy_seams
from bastion_edge.proxy.exchange import METADATA_KEY
from bastion_edge.proxy.shared import REDACTED, keeps_flows

_REAL: MutableMapping[http.Request, str] = weakref.WeakKeyDictionary()


def revealed(request: http.Request) -> str | None:
    """The real `authorization` value of a screened request, for the bytes sent."""
    return _REAL.get(request)


class KeyScreen:
    name = "bastion_key_screen"

    def __init__(self) -> None:
        self.active = False

    def running(self) -> None:
        self.active = keeps_flows(ctx.options)
        if self.active:
            mitmproxy_seams.install_key_screen(revealed)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.screen(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        self.screen(flow)

    def screen(self, flow: http.HTTPFlow) -> None:
        if not self.active or METADATA_KEY not in flow.metadata:
            return
        value = flow.request.headers.get("authorization")
        if value is not None and value != REDACTED:
            _REAL[flow.request] = value
            flow.request.headers["authorization"] = REDACTED

    def response(self, flow: http.HTTPFlow) -> None:
        _REAL.pop(flow.request, None)  # sent: the real value is needed no more

    def error(self, flow: http.HTTPFlow) -> None:
        _REAL.pop(flow.request, None)

"""The trust boundary as a mitmproxy addon; it runs before `BastionEdge` in the chain.

- Who: with `clients.apps` declared, a CONNECT or request without valid proxy
  credentials gets 407 and goes nowhere. Like mitmproxy's proxyauth addon, a CONNECT
  that authenticated marks its client connection, so the requests inside the tunnel
  belong to that app. Transparent listeners carry no credentials: their traffic is
  `clients.transparent_app` (refused if apps are declared and none is named).
  The app name is left in `flow.metadata[APP_METADATA_KEY]`.
- Where: CONNECT targets and plain-http forwards that are not intercepted are checked
  against the egress policy (egress.py) with a clean 403, and every server connection
  a regular-mode client causes is checked again at connect time and pinned to the
  address that was checked, so DNS cannot point it elsewhere afterwards. The proxy's
  own upstreams (Bastion, Riva, the TTS adapter, OpenAI in cutover modes) are exempt.
- What shows: `Proxy-Authorization` is removed before anything goes upstream, and a
  finished flow keeps no Bastion key on screen (mitmweb, flow files).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import Coroutine, MutableMapping
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import mode_specs, server_hooks

from bastion_edge.core.egress import EgressPolicy, Verdict, egress_refused, own_upstream
from bastion_edge.core.proxy_auth import (
    PROXY_AUTHENTICATE,
    Refusal,
    authenticate,
    proxy_auth_required,
)
from bastion_edge.core.routing import classify_host
from bastion_edge.errors import ApiError
from bastion_edge.proxy.exchange import METADATA_KEY
from bastion_edge.proxy.shared import REDACTED, Shared, keeps_flows

log = logging.getLogger("bastion_edge")

APP_METADATA_KEY = "bastion_edge.app"
PROXY_AUTHORIZATION = "proxy-authorization"
PROXY_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode)


class ProxyGate:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared  # the rules snapshot, metrics, internal listener ports
        self.keeps_flows = False  # mitmweb or a flow file: redact what stays on screen
        self.authenticated: MutableMapping[connection.Client, str] = weakref.WeakKeyDictionary()

    def running(self) -> None:
        self.keeps_flows = keeps_flows(ctx.options)

    # ------------------------------------------------------------------ who

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if not self._attribute(flow):
            return
        app = flow.metadata.get(APP_METADATA_KEY)
        if app is not None:
            self.authenticated[flow.client_conn] = app
        request = flow.request
        if classify_host(self.shared.rules, request.host) is None:
            await self._check_egress(flow, request.host, request.port)

    def requestheaders(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        """Sync for intercepted API traffic; a coroutine (awaited by mitmproxy) only for a
        plain-http forward whose destination must be resolved and checked."""
        if flow.response or flow.error or not flow.live:
            return None
        if not self._attribute(flow):
            return None
        request = flow.request
        if (isinstance(flow.client_conn.proxy_mode, mode_specs.RegularMode)
                and classify_host(self.shared.rules, request.host) is None):
            return self._check_egress(flow, request.host, request.port)
        return None

    def _attribute(self, flow: http.HTTPFlow) -> bool:
        """Find the flow's app; answer 407/403 and return False if it has none but needs one."""
        header = flow.request.headers.get(PROXY_AUTHORIZATION)
        if header is not None:
            del flow.request.headers[PROXY_AUTHORIZATION]  # never upstream, never shown
        clients = self.shared.rules.clients
        if not isinstance(flow.client_conn.proxy_mode, PROXY_MODES):
            app = clients.transparent_app
            if app is None and clients.apps:
                _refuse(flow, ApiError(
                    403, "bastion-edge: traffic from a transparent listener belongs to no "
                    "app; name one in rules.yaml under clients.transparent_app.",
                    "transparent_app_missing", "permission_error"))
                return False
        elif flow.client_conn in self.authenticated:
            app = self.authenticated[flow.client_conn]  # authenticated by its CONNECT
        elif not clients.apps or flow.is_replay:
            app = None
        else:
            found = authenticate(clients.apps, header)
            if isinstance(found, Refusal):
                self.shared.metrics.proxy_errors.labels("proxy_authentication_required").inc()
                log.info("bastion-edge: 407 for %s (%s credentials)",
                         _peer(flow), found.reason)
                _refuse(flow, proxy_auth_required(found), dict([PROXY_AUTHENTICATE]))
                return False
            app = found
        if app is not None:
            flow.metadata[APP_METADATA_KEY] = app
        return True

    # ------------------------------------------------------------------ where

    def policy(self) -> EgressPolicy:
        return EgressPolicy(self.shared.rules.egress.allow, self.own_ports())

    def own_ports(self) -> frozenset[int]:
        ports = {port for port in (*self.shared.internal_ports(),
                                   getattr(ctx.options, "web_port", None)) if port}
        server = ctx.master.addons.get("proxyserver")
        if server is not None:
            ports.update(addr[1] for addr in server.listen_addrs())
        return frozenset(ports)

    def own_upstreams(self) -> frozenset[tuple[str, int]]:
        rules = self.shared.rules
        upstreams = {(rules.upstream.host.lower(), rules.upstream.port)}
        for port in self.shared.dialed_ports():  # TTS adapter, /v1/files and /v1/batches
            upstreams.add(("127.0.0.1", port))
        if rules.cutover.mode != "rewrite":
            from urllib.parse import urlsplit

            base = urlsplit(rules.cutover.openai_base_url)
            upstreams.add(((base.hostname or "").lower(),
                           base.port or (443 if base.scheme == "https" else 80)))
        return frozenset(upstreams)

    async def _check_egress(self, flow: http.HTTPFlow, host: str, port: int) -> None:
        if own_upstream((host, port), self.own_upstreams()):
            return
        verdict = self.policy().decide(host, port, await resolve(host, port))
        if not verdict.allowed:
            self._refused(host, port, verdict)
            _refuse(flow, egress_refused(host, port, verdict.reason))

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The dial itself: check the resolved address again and dial exactly that."""
        server = data.server
        if (not isinstance(data.client.proxy_mode, mode_specs.RegularMode)
                or server.address is None or server.error
                or own_upstream(server.address, self.own_upstreams())):
            return
        host, port = server.address
        addresses = await resolve(host, port)
        verdict = self.policy().decide(host, port, addresses)
        if not verdict.allowed:
            self._refused(host, port, verdict)
            server.error = f"bastion-edge egress policy: {verdict.reason}"
            return
        server.address = (addresses[0], port)

    def _refused(self, host: str, port: int, verdict: Verdict) -> None:
        self.shared.metrics.proxy_errors.labels("egress_refused").inc()
        log.warning("bastion-edge: egress to %s:%s refused: %s", host, port, verdict.reason)

    # ------------------------------------------------------------------ what shows

    def response(self, flow: http.HTTPFlow) -> None:
        if self.keeps_flows:  # mitmweb, flow files: what stays on screen
            redact(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if self.keeps_flows:
            redact(flow)


def redact(flow: http.HTTPFlow) -> None:
    """Once a flow is finished its request was sent: keep the Bastion key off screens."""
    flow.request.headers.pop(PROXY_AUTHORIZATION, None)
    if METADATA_KEY in flow.metadata and "authorization" in flow.request.headers:
        flow.request.headers["authorization"] = REDACTED


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal is itself); [] if none."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refuse(flow: http.HTTPFlow, error: ApiError, headers: dict[str, str] | None = None) -> None:
    flow.response = http.Response.make(error.status, error.body(), {
        "content-type": "application/json", "x-bastion-edge-error": error.code,
        **(headers or {})})


def _peer(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return f"{peer[0]}:{peer[1]}" if peer else "unknown client"

"""The trust boundary as a mitmproxy addon; it runs before `BastionEdge` in the chain.

- Who: with `clients.apps` declared, a CONNECT or request without valid proxy
  credentials gets 407 and goes nowhere. Like mitmproxy's proxyauth addon, a CONNECT
  that authenticated marks its client connection, so the requests inside the tunnel
  belong to that app. Transparent listeners carry no credentials: their traffic is
  `clients.transparent_app` (refused if apps are declared and none is named).
  The app name is left in `flow.metadata[APP_METADATA_KEY]`. Failed authentications
  are logged and, per address and app name, cooled down (core/auth_failures.py).
- Whose authority: an absolute-form request line inside a tunnel goes on in origin
  form if it names the tunnel's host, else 400 (core/request_target.py).
- Where: CONNECT targets and plain-http forwards that are not intercepted are checked
  against the egress policy (egress.py) with a clean 403, and every server connection
  a regular-mode client causes is checked again at connect time and pinned to the
  address that was checked, so DNS cannot point it elsewhere afterwards. The proxy's
  own dials (Bastion, Riva, the TTS adapter, OpenAI in cutover modes) are exempt; an
  app's CONNECT or forward to an in-process listener never is. In a `--workers` pool
  the own ports are every process's (pool_ports.py).
- What shows: `Proxy-Authorization` is removed before anything goes upstream, and a
  finished flow keeps no Bastion key on screen (mitmweb, flow files; while in flight,
  key_screen.py keeps it off the flow).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import weakref
from collections.abc import Coroutine, MutableMapping
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import mode_specs, server_hooks

from bastion_edge.core.auth_failures import (
    AuthFailures,
    auth_throttled,
    failure_key,
    retry_after_header,
    shown_name,
    source_of,
)
from bastion_edge.core.egress import EgressPolicy, Verdict, egress_refused, own_upstream
from bastion_edge.core.proxy_auth import (
    PROXY_AUTHENTICATE,
    Refusal,
    authenticate,
    parse_basic,
    proxy_auth_required,
)
from bastion_edge.core.request_target import foreign_authority, foreign_authority_refused
from bastion_edge.core.routing import classify_host
from bastion_edge.errors import ApiError
from bastion_edge.proxy import pool_ports
from bastion_edge.proxy.exchange import METADATA_KEY
from bastion_edge.proxy.shared import REDACTED, Shared, keeps_flows

log = logging.getLogger("bastion_edge")

APP_METADATA_KEY = "bastion_edge.app"
PROXY_AUTHORIZATION = "proxy-authorization"
PROXY_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode)
POOL_PUBLISH_SECONDS = 0.1  # how soon a pool worker's new ports reach the others


class ProxyGate:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared  # the rules snapshot, metrics, internal listener ports
        self.keeps_flows = False  # mitmweb or a flow file: redact what stays on screen
        self.authenticated: MutableMapping[connection.Client, str] = weakref.WeakKeyDictionary()
        self.failures = AuthFailures()  # per address and app name: failed authentications
        self.noisy = AuthFailures()  # per address: past its threshold, failures go unlogged
        self.pool = pool_ports.pool_dir(shared.environ)  # a `--workers` pool's, or None
        self._published: frozenset[int] | None = None
        self._publisher: asyncio.Task[None] | None = None

    def running(self) -> None:
        self.keeps_flows = keeps_flows(ctx.options)
        if self.pool is not None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_ports())

    async def done(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

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
        if not self._attribute(flow) or not self._origin_form(flow):
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
            found = self._authenticate(flow, header)
            if found is None:
                return False
            app = found
        if app is not None:
            flow.metadata[APP_METADATA_KEY] = app
        return True

    def _authenticate(self, flow: http.HTTPFlow, header: str | None) -> str | None:
        """The app named by valid credentials; None after answering 407 or 429."""
        address, now = source_of(flow.client_conn.peername), time.monotonic()
        tried = parse_basic(header)
        name = shown_name(tried[0] if tried else None)
        key = failure_key(address, name)
        wait = self.failures.blocked_for(key, now)
        if wait:  # cooling down: the credentials are not even checked
            self.shared.metrics.proxy_errors.labels("proxy_auth_throttled").inc()
            _refuse(flow, auth_throttled(wait), retry_after_header(wait))
            return None
        found = authenticate(self.shared.rules.clients.apps, header)
        if not isinstance(found, Refusal):
            return found
        self.shared.metrics.proxy_errors.labels("proxy_authentication_required").inc()
        if found.reason == "missing":
            log.info("bastion-edge: 407 for %s (no credentials)", _peer(flow))
        else:
            self._failed(address, name, found.reason, now)
            if self.failures.failed(key, now):
                log.warning("bastion-edge: %s failed proxy authentication as app %r %s times "
                            "within %.0f s; refused for %.0f s", address, name,
                            self.failures.threshold, self.failures.window_seconds,
                            self.failures.cooldown_seconds)
        _refuse(flow, proxy_auth_required(found), dict([PROXY_AUTHENTICATE]))
        return None

    def _failed(self, address: str, name: str, reason: str, now: float) -> None:
        """Log a failure (never the secret), until the address has logged its threshold."""
        if self.noisy.blocked_for(address, now):
            return
        log.warning("bastion-edge: failed proxy authentication from %s (app %r, %s "
                    "credentials)", address, name, reason)
        if self.noisy.failed(address, now):
            log.warning("bastion-edge: further failed proxy authentications from %s are "
                        "counted, not logged, for %.0f s", address,
                        self.noisy.cooldown_seconds)

    def _origin_form(self, flow: http.HTTPFlow) -> bool:
        """An absolute-form request line inside a tunnel (or on a transparent listener)
        is sent on in origin form if it names the tunnel's host, refused otherwise."""
        request = flow.request
        if (not request.authority or request.method == "CONNECT"
                or request.is_http2 or request.is_http3):  # h2's :authority is Host
            return True
        if foreign_authority(request.authority, request.scheme, request.host, request.port):
            self.shared.metrics.proxy_errors.labels("foreign_authority").inc()
            _refuse(flow, foreign_authority_refused(request.authority))
            return False
        upstream_proxy = isinstance(flow.client_conn.proxy_mode, mode_specs.UpstreamMode)
        if not (upstream_proxy and not flow.client_conn.tls):  # that one forwards as is
            request.authority = ""
        return True

    # ------------------------------------------------------------------ where

    def policy(self) -> EgressPolicy:
        return EgressPolicy(self.shared.rules.egress.allow, self.own_ports())

    def own_ports(self) -> frozenset[int]:
        """Every port this proxy listens on; in a `--workers` pool, every process's."""
        ports = self._ports_here()
        if self.pool is None:
            return ports
        return ports | pool_ports.read(self.pool)

    def _ports_here(self) -> frozenset[int]:
        ports = {port for port in (*self.shared.internal_ports(),
                                   getattr(ctx.options, "web_port", None)) if port}
        server = ctx.master.addons.get("proxyserver")
        if server is not None:
            ports.update(addr[1] for addr in server.listen_addrs())
        return frozenset(ports)

    async def _publish_ports(self) -> None:
        assert self.pool is not None
        name = pool_ports.own_name(self.shared.environ)
        while True:
            ports = self._ports_here()
            if ports != self._published:
                pool_ports.publish(self.pool, name, ports)
                self._published = ports
            await asyncio.sleep(POOL_PUBLISH_SECONDS)

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
        """Where an app asked to go. The own-upstream exemption is for Bastion and OpenAI
        only: the in-process listeners the proxy dials itself are never an app's."""
        own_ports = self.own_ports()
        if port not in own_ports and own_upstream((host, port), self.own_upstreams()):
            return
        policy = EgressPolicy(self.shared.rules.egress.allow, own_ports)
        verdict = policy.decide(host, port, await resolve(host, port))
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

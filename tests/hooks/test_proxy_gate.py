"""ProxyGate, hook by hook: 407s, per-connection identity, transparent apps, egress, redaction."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mitmproxy import connection, http
from mitmproxy.addons import proxyserver
from mitmproxy.flow import Error
from mitmproxy.proxy import mode_specs, server_hooks
from mitmproxy.test import taddons, tflow

from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.proxy.gate import APP_METADATA_KEY, REDACTED, ProxyGate

SHIPPED_RULES = (Path(__file__).resolve().parents[2] / "rules.yaml").read_text()
SECRET = "billing-secret-1"
ENV = {"QUBITTRON_API_KEY": "bk-default", "KEY_BILLING": "bk-billing",
       "BASTION_BASE_URL": "https://127.0.0.1:9443/v1"}
APPS = f"""
egress:
  allow: ["localhost:8443"]
clients:
  apps:
    - name: billing
      secret_sha256: {hashlib.sha256(SECRET.encode()).hexdigest()}
      bastion_key_env: KEY_BILLING
"""


def hook(result: Any) -> None:
    """Run a hook's result as mitmproxy does: await it if it is a coroutine."""
    if result is not None:
        asyncio.run(result)


@contextlib.contextmanager
def gate(tmp_path: Path, extra: str = APPS) -> Iterator[tuple[ProxyGate, BastionEdge]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SHIPPED_RULES + extra)
    edge = BastionEdge(environ=dict(ENV))
    front = ProxyGate(edge.shared)
    with taddons.context(proxyserver.Proxyserver(), front, edge) as tctx:
        tctx.configure(edge, bastion_rules=str(rules), bastion_metrics_port=0)
        yield front, edge


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def connect_flow(host: str, port: int, credentials: str | None = None) -> http.HTTPFlow:
    flow = tflow.tflow()
    request = flow.request
    request.method, request.host, request.port, request.path = "CONNECT", host, port, ""
    request.headers = http.Headers()
    if credentials:
        request.headers["proxy-authorization"] = credentials
    return flow


def api_flow(client: connection.Client | None = None, **headers: str) -> http.HTTPFlow:
    flow = tflow.tflow(client_conn=client)
    request = flow.request
    request.method, request.scheme, request.host, request.port = "POST", "https", \
        "api.openai.com", 443
    request.path = "/v1/embeddings"
    request.headers = http.Headers(host="api.openai.com", authorization="Bearer sk-app",
                                   content_type="application/json", **headers)
    request.content = json.dumps({"model": "text-embedding-3-small", "input": "x"}).encode()
    return flow


def test_connect_without_or_with_wrong_credentials_gets_407(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, _):
        for credentials in (None, basic("billing", "nope"), "Bearer x"):
            flow = connect_flow("api.openai.com", 443, credentials)
            asyncio.run(front.http_connect(flow))
            assert flow.response is not None and flow.response.status_code == 407
            assert flow.response.headers["proxy-authenticate"] == 'Basic realm="bastion-edge"'
            body = json.loads(flow.response.content or b"")
            assert body["error"]["code"] == "proxy_authentication_required"
            assert "proxy-authorization" not in flow.request.headers


def test_an_authenticated_connect_identifies_the_requests_in_its_tunnel(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, edge):
        tunnel = connect_flow("api.openai.com", 443, basic("billing", SECRET))
        asyncio.run(front.http_connect(tunnel))
        assert tunnel.response is None
        assert "proxy-authorization" not in tunnel.request.headers  # not on screen either
        inner = api_flow(tunnel.client_conn, proxy_authorization="Basic smuggled")
        hook(front.requestheaders(inner))
        assert inner.metadata[APP_METADATA_KEY] == "billing"
        assert "proxy-authorization" not in inner.request.headers  # never upstream
        edge.requests.requestheaders(inner)
        assert inner.request.headers["authorization"] == "Bearer bk-billing"  # its own key


def test_a_plain_request_without_credentials_gets_407(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, edge):
        flow = api_flow()
        hook(front.requestheaders(flow))
        assert flow.response is not None and flow.response.status_code == 407
        edge.requests.requestheaders(flow)
        assert flow.request.headers["authorization"] == "Bearer sk-app"  # untouched, unsent
        ok = api_flow(proxy_authorization=basic("billing", SECRET))
        hook(front.requestheaders(ok))
        assert ok.response is None and ok.metadata[APP_METADATA_KEY] == "billing"


def test_no_apps_declared_means_no_authentication(tmp_path: Path) -> None:
    with gate(tmp_path, extra="") as (front, _):
        flow = api_flow(proxy_authorization="Basic whatever")
        hook(front.requestheaders(flow))
        assert flow.response is None and APP_METADATA_KEY not in flow.metadata
        assert "proxy-authorization" not in flow.request.headers


def transparent_flow() -> http.HTTPFlow:
    client = tflow.tclient_conn()
    client.proxy_mode = mode_specs.ProxyMode.parse("transparent")
    return api_flow(client)


def test_transparent_traffic_is_the_named_app(tmp_path: Path) -> None:
    with gate(tmp_path, APPS + "  transparent_app: billing\n") as (front, edge):
        flow = transparent_flow()
        hook(front.requestheaders(flow))
        assert flow.response is None and flow.metadata[APP_METADATA_KEY] == "billing"
        edge.requests.requestheaders(flow)
        assert flow.request.headers["authorization"] == "Bearer bk-billing"


def test_transparent_traffic_without_a_named_app_is_refused(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, _):
        flow = transparent_flow()
        hook(front.requestheaders(flow))
        assert flow.response is not None and flow.response.status_code == 403
        assert b"clients.transparent_app" in (flow.response.content or b"")


def test_connect_to_loopback_or_metadata_gets_403(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, _):
        for host, port in (("127.0.0.1", 5432), ("localhost", 22), ("::1", 80),
                           ("169.254.169.254", 80), ("0.0.0.0", 80)):
            flow = connect_flow(host, port, basic("billing", SECRET))
            asyncio.run(front.http_connect(flow))
            assert flow.response is not None, host
            assert flow.response.status_code == 403
            assert json.loads(flow.response.content or b"")["error"]["code"] == "egress_refused"
        allowed = connect_flow("localhost", 8443, basic("billing", SECRET))
        asyncio.run(front.http_connect(allowed))
        assert allowed.response is None


def test_plain_forward_to_loopback_gets_403(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, _):
        flow = tflow.tflow()
        flow.request.host, flow.request.port = "127.0.0.1", 9090
        flow.request.headers["proxy-authorization"] = basic("billing", SECRET)
        hook(front.requestheaders(flow))
        assert flow.response is not None and flow.response.status_code == 403


def test_server_connect_checks_and_pins_the_dialled_address(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, _):
        def dial(address: tuple[str, int]) -> connection.Server:
            server = connection.Server(address=address)
            data = server_hooks.ServerConnectionHookData(server, tflow.tclient_conn())
            asyncio.run(front.server_connect(data))
            return server

        assert dial(("localhost", 5432)).error
        assert dial(("127.0.0.1", 9443)).error is None  # Bastion itself (BASTION_BASE_URL)
        public = dial(("93.184.216.34", 443))
        assert public.error is None and public.address == ("93.184.216.34", 443)
        allowed = dial(("localhost", 8443))
        assert allowed.error is None and allowed.address[0] in ("127.0.0.1", "::1")


def test_finished_flows_show_no_key(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, edge):
        flow = api_flow(proxy_authorization=basic("billing", SECRET))
        hook(front.requestheaders(flow))
        edge.requests.requestheaders(flow)
        assert flow.request.headers["authorization"] == "Bearer bk-billing"  # what is sent
        flow.error = Error("connection refused")
        front.error(flow)  # no mitmweb or flow file: nothing kept, nothing to redact
        assert flow.request.headers["authorization"] == "Bearer bk-billing"
        front.keeps_flows = True  # mitmweb: the finished flow stays on screen
        front.error(flow)
        assert flow.request.headers["authorization"] == REDACTED


def test_the_gate_reads_the_shared_snapshot_not_the_root() -> None:
    """No addon<->gate import cycle: the gate imports nothing of the root addon, not
    even for type checking."""
    import ast

    from bastion_edge.proxy import gate as gate_module

    tree = ast.parse(Path(gate_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "bastion_edge.proxy.addon" not in imported
    assert "bastion_edge.proxy.shared" in imported


def test_own_ports_and_upstreams_come_from_the_listeners_owners(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, edge):
        ports = {"tts": 4101, "admin": 4102}
        edge.shared.listener(lambda: ports["tts"], dialed=True)
        edge.shared.listener(lambda: ports["admin"], dialed=False)
        assert {4101, 4102} <= front.own_ports()
        assert ("127.0.0.1", 4101) in front.own_upstreams()
        assert ("127.0.0.1", 4102) not in front.own_upstreams()  # /metrics is not dialed


def test_an_absolute_form_line_in_a_tunnel_goes_on_in_origin_form_or_is_refused(
    tmp_path: Path
) -> None:
    with gate(tmp_path, "") as (front, _):
        own = api_flow()
        own.request.authority = "api.openai.com:443"
        hook(front.requestheaders(own))
        assert own.response is None and own.request.authority == ""  # origin form upstream
        foreign = api_flow()
        foreign.request.authority = "evil.example"
        hook(front.requestheaders(foreign))
        assert foreign.response is not None and foreign.response.status_code == 400
        assert json.loads(foreign.response.content or b"")["error"]["code"] == \
            "foreign_authority"


def test_an_apps_connect_cannot_ride_the_own_upstream_exemption(tmp_path: Path) -> None:
    with gate(tmp_path, "egress:\n  allow: [\"127.0.0.1/32\"]\n") as (front, edge):
        edge.shared.listener(lambda: 4101, dialed=True)  # the TTS adapter, dialed by us
        assert ("127.0.0.1", 4101) in front.own_upstreams()
        flow = connect_flow("127.0.0.1", 4101)
        asyncio.run(front.http_connect(flow))
        assert flow.response is not None and flow.response.status_code == 403


def test_a_pool_workers_egress_check_knows_every_processs_ports(tmp_path: Path) -> None:
    from bastion_edge.proxy import pool_ports

    with gate(tmp_path, "egress:\n  allow: [\"127.0.0.1/32\"]\n") as (front, _):
        front.pool = tmp_path
        pool_ports.publish(tmp_path, "w1", [4999])  # another worker's TTS adapter
        assert 4999 in front.own_ports()
        flow = connect_flow("127.0.0.1", 4999)
        asyncio.run(front.http_connect(flow))
        assert flow.response is not None and flow.response.status_code == 403


def test_guessing_secrets_is_refused_per_source_after_the_threshold(tmp_path: Path) -> None:
    with gate(tmp_path) as (front, edge):
        codes = []
        for i in range(front.failures.threshold + 2):
            flow = connect_flow("api.openai.com", 443, basic("billing", f"guess{i}"))
            asyncio.run(front.http_connect(flow))
            assert flow.response is not None
            codes.append(flow.response.status_code)
        assert codes == [407] * front.failures.threshold + [429, 429]
        right = connect_flow("api.openai.com", 443, basic("billing", SECRET))
        asyncio.run(front.http_connect(right))
        assert right.response is not None and right.response.status_code == 429
        assert int(right.response.headers["retry-after"]) > 0
        throttled = edge.shared.metrics.proxy_errors.labels("proxy_auth_throttled")
        assert throttled._value.get() == 3
        # Keyed by address and app name: another app from the same address still gets in.
        other = connect_flow("api.openai.com", 443, basic("someone-else", "x"))
        asyncio.run(front.http_connect(other))
        assert other.response is not None and other.response.status_code == 407

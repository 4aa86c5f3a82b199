"""The mitmproxy addon, driven hook by hook with mitmproxy's own test helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection, exceptions, hooks, http
from mitmproxy.addons import proxyserver
from mitmproxy.flow import Error
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.test import taddons, tflow
from prometheus_client import generate_latest

from bastion_edge.core.planner import STREAM_UPLOADS_OVER
from bastion_edge.core.routing import HostKind
from bastion_edge.proxy.addon import REDACTED, BastionEdge
from bastion_edge.proxy.exchange import METADATA_KEY, Exchange

SHIPPED_RULES = (Path(__file__).resolve().parents[2] / "rules.yaml").read_text()
APP_KEY = "sk-proj-APPKEY-must-never-leave-0123456789"
BASTION_KEY = "bk-test-bastion-key-abcdef"
ENV = {"QUBITTRON_API_KEY": BASTION_KEY, "BASTION_BASE_URL": "https://127.0.0.1:9443/v1"}
BOUNDARY = "8f3c2a9e41d07b6c5e1f2a3b4c5d6e7f"  # httpx-style: lower-case hex


def write_rules(tmp_path: Path, text: str, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@contextlib.contextmanager
def edge(
    rules: Path, environ: dict[str, str] | None = None, **options: Any
) -> Iterator[tuple[BastionEdge, taddons.context]]:
    addon = BastionEdge(environ=dict(ENV if environ is None else environ))
    # proxyserver declares `connection_strategy`, which the addon sets.
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx:
        tctx.configure(addon, bastion_rules=str(rules), bastion_metrics_port=0, **options)
        yield addon, tctx


def app_flow(
    path: str = "/v1/chat/completions",
    body: dict[str, Any] | bytes | None = None,
    *,
    host: str = "api.openai.com",
    scheme: str = "https",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> http.HTTPFlow:
    flow = tflow.tflow()
    request = flow.request
    request.method, request.scheme, request.host = method, scheme, host
    request.port = 443 if scheme == "https" else 80
    request.path = path
    request.headers = http.Headers(
        host=host,
        authorization=f"Bearer {APP_KEY}",
        openai_organization="org-app",
        openai_project="proj_app",
        user_agent="OpenAI/Python 1.99",
        content_type="application/json",
    )
    for name, value in (headers or {}).items():
        request.headers[name] = value
    if isinstance(body, dict):
        request.content = json.dumps(body).encode()
    else:
        request.content = body or b""
    return flow


def send(addon: BastionEdge, flow: http.HTTPFlow) -> None:
    addon.requests.requestheaders(flow)
    addon.requests.request(flow)


def respond(
    addon: BastionEdge,
    flow: http.HTTPFlow,
    body: bytes,
    content_type: str = "application/json",
    status: int = 200,
    chunk: int = 13,
) -> bytes:
    """Upstream answers: headers, then the body (through `response.stream` if set)."""
    flow.response = http.Response.make(status, b"", {"content-type": content_type})
    flow.response.data.content = None  # as mitmproxy has it at responseheaders time
    addon.replies.responseheaders(flow)
    stream = flow.response.stream
    if callable(stream):
        sent = [stream(body[i:i + chunk]) for i in range(0, len(body), chunk)]
        assert b"" not in sent, "an empty chunk would end a chunked reply"
        out = b"".join(s if isinstance(s, bytes) else b"".join(s) for s in sent)
        out += stream(b"")
        addon.replies.response(flow)
        return out
    flow.response.content = body
    addon.replies.response(flow)
    return flow.response.content or b""


def exchange_of(flow: http.HTTPFlow) -> Exchange:
    found = flow.metadata[METADATA_KEY]
    assert isinstance(found, Exchange)
    return found


def all_header_text(flow: http.HTTPFlow) -> str:
    return repr(flow.request.headers.fields)


def never_connected(flow: http.HTTPFlow) -> None:
    """The upstream connection failed to open: the flow's server never got set up."""
    flow.server_conn = connection.Server(address=("127.0.0.1", 9443))


def chat(model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def envelope(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    assert flow.response.headers["content-type"] == "application/json"
    body = json.loads(flow.response.content or b"")
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# ------------------------------------------------------------------ configuration


async def test_addon_sets_mitmproxy_options(rules_path: Path) -> None:
    with edge(rules_path) as (addon, tctx):
        assert tctx.options.connection_strategy == "lazy"
        assert tctx.options.http2 is False
        assert tctx.options.allow_hosts == [addon.rules.allow_hosts_regex()]
        assert tctx.options.allow_hosts == [r"^(?:api\.openai\.com|api\.qubittron\.ai)(?::\d+)?$"]
        assert addon.rules.upstream.base_url == "https://127.0.0.1:9443/v1"  # env override
        assert addon.shared.rules_loaded


async def test_mitmweb_shows_the_comment_column_unless_the_user_chose_columns(
    rules_path: Path,
) -> None:
    from mitmproxy.tools.web.webaddons import WebAddon

    addon = BastionEdge(environ=dict(ENV))
    with taddons.context(proxyserver.Proxyserver(), WebAddon(), addon) as tctx:
        tctx.configure(addon, bastion_rules=str(rules_path), bastion_metrics_port=0)
        addon.recorder.running()
        assert tctx.options.web_columns[-1] == "comment"
        assert "path" in tctx.options.web_columns  # mitmweb's defaults kept
    addon = BastionEdge(environ=dict(ENV))
    with taddons.context(proxyserver.Proxyserver(), WebAddon(), addon) as tctx:
        tctx.configure(addon, bastion_rules=str(rules_path), bastion_metrics_port=0,
                       web_columns=["path", "status"])
        addon.recorder.running()
        assert tctx.options.web_columns == ["path", "status"]


async def test_allow_hosts_follow_rules_swap(rules_path: Path, tmp_path: Path) -> None:
    other = write_rules(tmp_path, "intercept: {openai_hosts: [oai.internal], bastion_hosts: []}\n"
                                  "models: {gpt-4o: gpt-oss-120b}\n")
    with edge(rules_path) as (addon, tctx):
        tctx.configure(addon, bastion_rules=str(other))
        assert tctx.options.allow_hosts == [r"^(?:oai\.internal)(?::\d+)?$"]
        assert addon.rules.source == str(other)


async def test_swap_to_invalid_rules_raises_options_error_and_keeps_rules(
    rules_path: Path, tmp_path: Path
) -> None:
    bad = write_rules(tmp_path, "models:\n  gpt-4o: [\n", "bad-yaml.yaml")
    worse = write_rules(tmp_path, "models:\n  gpt-4o: 42\n", "bad.yaml")
    with edge(rules_path) as (addon, tctx):
        serving = addon.rules
        with pytest.raises(exceptions.OptionsError, match=r'models\."gpt-4o": expected a string'):
            tctx.configure(addon, bastion_rules=str(worse))
        with pytest.raises(exceptions.OptionsError, match="invalid YAML"):
            tctx.configure(addon, bastion_rules=str(bad))
        assert addon.rules == serving
        assert tctx.options.bastion_rules == str(rules_path)  # rolled back
        failures = generate_latest(addon.metrics.registry).decode()
        assert 'bastion_edge_rules_reloads_total{result="failure"} 2.0' in failures


async def test_env_http_base_url_rejected_as_options_error(rules_path: Path) -> None:
    environ = {**ENV, "BASTION_BASE_URL": "http://127.0.0.1:9443/v1"}
    with (pytest.raises(exceptions.OptionsError, match="BASTION_BASE_URL"),
          edge(rules_path, environ)):
        pass


async def test_readiness_needs_rules_and_a_listening_proxy(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        assert addon.readiness() == (False, "proxy not listening")  # proxyserver not started
    assert BastionEdge(environ=dict(ENV)).readiness() == (False, "rules not loaded")


# ------------------------------------------------------------------ request rewriting


async def test_chat_request_sent_to_bastion_with_bastion_key(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        request = flow.request
        assert flow.response is None
        assert (request.scheme, request.host, request.port) == ("https", "127.0.0.1", 9443)
        assert request.path == "/v1/chat/completions"
        assert request.headers["host"] == "127.0.0.1:9443"
        assert request.headers["authorization"] == f"Bearer {BASTION_KEY}"
        assert "openai-organization" not in request.headers
        assert "openai-project" not in request.headers
        assert request.headers["user-agent"] == "OpenAI/Python 1.99"
        assert APP_KEY not in all_header_text(flow)
        body = json.loads(request.content)
        assert body == chat("gpt-oss-120b")
        assert request.headers["content-length"] == str(len(request.content))
        exchange = exchange_of(flow)
        assert exchange.rewrites == ["host", "key", "model"]
        assert exchange.key_env == "QUBITTRON_API_KEY"
        assert (exchange.original_model, exchange.upstream_model) == ("gpt-4o", "gpt-oss-120b")


async def test_base_url_path_prefix_applied(tmp_path: Path, rules_path: Path) -> None:
    environ = {**ENV, "BASTION_BASE_URL": "https://gw.example/bastion/v1"}
    with edge(rules_path, environ) as (addon, _):
        flow = app_flow("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})
        send(addon, flow)
        assert (flow.request.host, flow.request.port) == ("gw.example", 443)
        assert flow.request.path == "/bastion/v1/embeddings"
        assert flow.request.headers["host"] == "gw.example"
        assert json.loads(flow.request.content)["model"] == "bge-m3"


async def test_plain_http_openai_request_upgraded(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat("gpt-4o-mini"), scheme="http")
        send(addon, flow)
        assert flow.request.scheme == "https"
        assert flow.request.port == 9443
        assert exchange_of(flow).rewrites == ["https-upgrade", "host", "key", "model"]


async def test_bastion_model_id_forwarded_byte_identical(rules_path: Path) -> None:
    raw = b'{"model":  "gpt-oss-20b", "messages": []}'
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=raw)
        send(addon, flow)
        assert flow.request.content == raw
        assert flow.response is None


async def test_small_multipart_model_replaced_in_buffered_body(rules_path: Path) -> None:
    audio = b"RIFF\x00\x01\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n\x00"
    with edge(rules_path) as (addon, _):
        flow = app_flow("/v1/audio/transcriptions", multipart_body(audio, "whisper-1"),
                        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
        send(addon, flow)
        assert flow.request.stream is False
        assert flow.request.content == multipart_body(audio, "whisper-large-v3")
        assert flow.request.headers["content-length"] == str(len(flow.request.content))
        assert exchange_of(flow).upstream_model == "whisper-large-v3"


def multipart_body(file_data: bytes, model: str, boundary: str = BOUNDARY) -> bytes:
    b = boundary.encode()
    return (
        b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + file_data + b"\r\n"
        b"--" + b + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        + model.encode() + b"\r\n--" + b + b"--\r\n"
    )


async def test_large_multipart_streamed_with_model_replaced(rules_path: Path) -> None:
    audio = (b"\x00\xff\r\n--" + BOUNDARY.encode()[:5]) * (STREAM_UPLOADS_OVER // 8)
    original = multipart_body(audio, "gpt-4o-transcribe")
    with edge(rules_path) as (addon, _):
        flow = app_flow("/v1/audio/transcriptions", headers={
            "content-type": f"multipart/form-data; boundary={BOUNDARY}"})
        flow.request.headers["content-length"] = str(len(original))
        flow.request.data.content = None  # the body is still on the wire
        addon.requests.requestheaders(flow)
        assert len(original) > STREAM_UPLOADS_OVER
        assert callable(flow.request.stream)
        assert flow.request.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in flow.request.headers
        assert flow.request.headers["authorization"] == f"Bearer {BASTION_KEY}"
        sent = b"".join(_bytes(flow.request.stream(original[i:i + 65536]))
                        for i in range(0, len(original), 65536))
        sent += _bytes(flow.request.stream(b""))
        assert sent == multipart_body(audio, "whisper-large-v3")
        addon.requests.request(flow)
        assert flow.response is None
        respond(addon, flow, b'{"text": "hi"}')
        assert flow.response.headers["x-bastion-edge-upstream-model"] == "whisper-large-v3"
        exchange = exchange_of(flow)
        assert exchange.streamed_request
        assert exchange.bytes_in == len(original)


# ------------------------------------------------------------------ refusals


async def test_missing_key_answers_401_and_never_reaches_openai(rules_path: Path) -> None:
    environ = {"BASTION_BASE_URL": ENV["BASTION_BASE_URL"]}
    with edge(rules_path, environ) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        error = envelope(flow)
        assert flow.response.status_code == 401
        assert error["code"] == "bastion_key_missing"
        assert error["type"] == "authentication_error"
        assert "QUBITTRON_API_KEY" in error["message"]
        assert flow.request.host != "api.openai.com"
        assert flow.request.host == "127.0.0.1"
        assert "authorization" not in flow.request.headers
        assert APP_KEY not in all_header_text(flow)
        assert APP_KEY not in flow.response.text
        assert flow.response.headers["x-bastion-edge-error"] == "bastion_key_missing"


async def test_unmapped_model_answers_400_naming_rules(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        addon.recorder.keeps_flows = True  # annotations are for mitmweb
        flow = app_flow(body=chat("claude-3-opus"))
        send(addon, flow)
        error = envelope(flow)
        assert flow.response.status_code == 400
        assert error["code"] == "model_not_mapped"
        assert error["param"] == "model"
        assert str(rules_path) in error["message"]
        addon.replies.response(flow)
        assert "refused: model_not_mapped (answered by the proxy, nothing sent)" in flow.comment
        # mitmweb's list tells it apart from a request that went to Bastion
        assert flow.marked == ":no_entry:"
        metrics = generate_latest(addon.metrics.registry).decode()
        assert 'bastion_edge_proxy_errors_total{code="model_not_mapped"} 1.0' in metrics


async def test_unmapped_model_passed_through_by_policy(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "unmapped_models: pass_through\nmodels: {gpt-4o: x}\n")
    with edge(rules) as (addon, _):
        flow = app_flow(body=chat("claude-3-opus"))
        send(addon, flow)
        assert flow.response is None
        assert json.loads(flow.request.content)["model"] == "claude-3-opus"


# ------------------------------------------------------------------ other hosts


async def test_non_openai_host_untouched(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat(), host="api.example.com")
        before_headers = flow.request.headers.copy()
        before_content = flow.request.content
        send(addon, flow)
        respond(addon, flow, b'{"ok": true}')
        assert METADATA_KEY not in flow.metadata
        assert flow.request.host == "api.example.com"
        assert flow.request.headers == before_headers
        assert flow.request.content == before_content
        assert "x-bastion-edge-upstream-model" not in flow.response.headers
        assert flow.comment == ""


async def test_bastion_host_over_http_upgraded_keeping_app_key(rules_path: Path) -> None:
    raw = json.dumps(chat("gpt-4o")).encode()
    with edge(rules_path) as (addon, _):
        flow = app_flow("/v1/chat/completions", raw, host="api.qubittron.ai", scheme="http",
                        headers={"authorization": "Bearer qk-app-own-bastion-key"})
        send(addon, flow)
        assert flow.request.scheme == "https"
        assert (flow.request.host, flow.request.port) == ("127.0.0.1", 9443)
        assert flow.request.headers["authorization"] == "Bearer qk-app-own-bastion-key"
        assert flow.request.headers["openai-organization"] == "org-app"
        assert flow.request.content == raw  # no model mapping for Bastion's own traffic
        assert exchange_of(flow).rewrites == ["https-upgrade"]
        assert exchange_of(flow).kind is HostKind.BASTION
        assert exchange_of(flow).key_env is None


async def test_flows_with_response_or_not_live_skipped(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        answered = app_flow(body=chat())
        answered.response = http.Response.make(204)
        dead = app_flow(body=chat())
        dead.live = False
        for flow in (answered, dead):
            addon.requests.requestheaders(flow)
            assert flow.request.host == "api.openai.com"
            assert METADATA_KEY not in flow.metadata


# ------------------------------------------------------------------ responses


async def test_response_headers_name_upstream_model_and_redact_key(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        addon.recorder.keeps_flows = True  # as under mitmweb: flows stay on screen
        flow = app_flow(body=chat())
        send(addon, flow)
        assert flow.request.headers["authorization"] == f"Bearer {BASTION_KEY}"
        body = json.dumps({"object": "chat.completion", "model": "gpt-oss-120b"}).encode()
        out = respond(addon, flow, body)
        assert out == body  # reply_model: upstream keeps Bastion's id
        assert flow.request.headers["authorization"] == REDACTED
        assert BASTION_KEY not in all_header_text(flow)
        assert flow.response.headers["x-bastion-edge-upstream-model"] == "gpt-oss-120b"
        assert flow.response.headers["x-bastion-edge-rewrites"] == "host,key,model"
        assert exchange_of(flow).bytes_out == len(body)


async def test_sse_reply_model_original_restored_in_chunks(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, SHIPPED_RULES.replace("reply_model: upstream",
                                                        "reply_model: original"))
    events = b"".join(
        b"data: " + json.dumps({"object": "chat.completion.chunk", "model": "gpt-oss-120b",
                                "choices": [{"delta": {"content": f"t{i}"}}]}).encode() + b"\n\n"
        for i in range(5)
    ) + b": comment\n\ndata: [DONE]\n\n"
    with edge(rules) as (addon, _):
        flow = app_flow(body=chat(stream=True))
        send(addon, flow)
        out = respond(addon, flow, events, "text/event-stream; charset=utf-8", chunk=11)
        assert b"gpt-oss-120b" not in out
        assert out.count(b'"model":"gpt-4o"') == 5
        assert out.endswith(b": comment\n\ndata: [DONE]\n\n")
        assert flow.response.headers["x-bastion-edge-upstream-model"] == "gpt-oss-120b"
        assert exchange_of(flow).stream is True


async def test_json_reply_model_original_restored(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, SHIPPED_RULES.replace("reply_model: upstream",
                                                        "reply_model: original"))
    with edge(rules) as (addon, _):
        flow = app_flow(body=chat("gpt-4o-mini"))
        send(addon, flow)
        out = respond(addon, flow, b'{"object": "chat.completion", "model": "gpt-oss-20b"}')
        assert json.loads(out) == {"object": "chat.completion", "model": "gpt-4o-mini"}
        assert flow.response.headers["x-bastion-edge-upstream-model"] == "gpt-oss-20b"


async def test_upstream_error_passes_through_unchanged(rules_path: Path) -> None:
    upstream_error = b'{"error": {"message": "rate limited", "code": "rate_limit_exceeded"}}'
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        out = respond(addon, flow, upstream_error, status=429)
        assert out == upstream_error
        assert flow.response.status_code == 429


# ------------------------------------------------------------------ gateway errors


async def test_connect_failure_answered_with_json_envelope(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        never_connected(flow)
        flow.error = Error("[Errno 111] Connect call failed ('127.0.0.1', 9443)")
        addon.replies.error(flow)
        raw = _http1.make_error_response(502, flow.error.msg)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502")
        assert b"content-type: application/json" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "upstream_unreachable"
        assert error["type"] == "server_error"
        assert "127.0.0.1:9443" in error["message"]
        assert exchange_of(flow).upstream_error == "upstream_unreachable"

        foreign = _http1.make_error_response(502, "some other proxy failure")
        assert b"text/html" in foreign.partition(b"\r\n\r\n")[0].lower()
        assert b"some other proxy failure" in foreign


@pytest.mark.parametrize(
    ("message", "connected", "code"),
    [
        ("TLS handshake failed: certificate verify failed", False, "upstream_tls_error"),
        ("getaddrinfo failed for gw.example", False, "upstream_unreachable"),
        ("peer reset the stream", True, "upstream_connection_error"),
        ("server closed connection", True, "upstream_connection_error"),  # mitmproxy's text
    ],
)
async def test_error_classification(
    rules_path: Path, message: str, connected: bool, code: str
) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        if not connected:
            never_connected(flow)
        flow.error = Error(message)
        addon.replies.error(flow)
        assert exchange_of(flow).upstream_error == code
        error = json.loads(_http1.make_error_response(502, flow.error.msg)
                           .partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == code


async def test_client_disconnect_gets_no_envelope(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        flow.error = Error("Client disconnected.")
        addon.replies.error(flow)
        assert exchange_of(flow).upstream_error is None
        page = _http1.make_error_response(502, flow.error.msg)
        assert b"text/html" in page.partition(b"\r\n\r\n")[0].lower()


async def test_no_response_headers_in_time_is_504(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "upstream: {response_timeout_seconds: 0.05}\n"
                                  "models: {gpt-4o: gpt-oss-120b}\n")
    with edge(rules) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        await asyncio.sleep(0.15)
        assert exchange_of(flow).timed_out
        flow.error = Error("Connection killed.")
        addon.replies.error(flow)
        error = json.loads(_http1.make_error_response(502, flow.error.msg)
                           .partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "upstream_timeout"
        assert error["type"] == "server_error"
        assert "did not answer within 0.05 s" in error["message"]


async def test_response_in_time_cancels_timeout(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "upstream: {response_timeout_seconds: 0.05}\n"
                                  "models: {gpt-4o: gpt-oss-120b}\n")
    with edge(rules) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        respond(addon, flow, b"{}")
        await asyncio.sleep(0.1)
        assert not exchange_of(flow).timed_out
        assert addon.replies.timeouts._timers == {}


# ------------------------------------------------------------------ observability


ACCESS_FIELDS = {
    "time", "request_id", "client", "app", "method", "path", "endpoint", "original_host",
    "upstream_host", "original_model", "upstream_model", "destination", "decision", "status",
    "duration_ms", "ttfb_ms", "bytes_in", "bytes_out", "stream", "rewrites", "key_env", "error",
    "notes", "tokens", "tokens_source",
}


async def test_access_log_has_fields_and_no_keys(rules_path: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "access.jsonl"
    with edge(rules_path, bastion_access_log=str(log_path)) as (addon, tctx):
        flow = app_flow(body=chat())
        send(addon, flow)
        respond(addon, flow, b'{"model": "gpt-oss-120b"}')
        refused = app_flow(body=chat("nope"))
        send(addon, refused)
        addon.replies.response(refused)
        tctx.configure(addon, bastion_access_log="")  # closes the file
    text = log_path.read_text()
    assert APP_KEY not in text
    assert BASTION_KEY not in text
    assert "Bearer" not in text
    ok, rejected = (json.loads(line) for line in text.splitlines())
    assert set(ok) == ACCESS_FIELDS
    assert ok["status"] == 200
    assert ok["method"] == "POST"
    assert ok["path"] == "/v1/chat/completions"
    assert ok["endpoint"] == "chat.completions"
    assert ok["original_host"] == "api.openai.com"
    assert ok["upstream_host"] == "127.0.0.1:9443"
    assert (ok["original_model"], ok["upstream_model"]) == ("gpt-4o", "gpt-oss-120b")
    assert ok["decision"] == "rewrite" and ok["destination"] == "bastion"
    assert ok["rewrites"] == ["host", "key", "model"]
    assert ok["key_env"] == "QUBITTRON_API_KEY"
    assert ok["client"] == "127.0.0.1"
    assert ok["bytes_in"] == len(json.dumps(chat()))
    assert ok["bytes_out"] == len(b'{"model": "gpt-oss-120b"}')
    assert ok["ttfb_ms"] is not None and ok["duration_ms"] >= ok["ttfb_ms"]
    assert rejected["status"] == 400
    assert rejected["decision"] == "refused" and rejected["destination"] == "proxy"
    assert rejected["error"] == "model_not_mapped"


async def test_metrics_count_requests_with_bounded_labels(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        for model in ("gpt-4o", "gpt-4o-2024-08-06"):
            flow = app_flow(body=chat(model))
            send(addon, flow)
            respond(addon, flow, b"{}")
        text = generate_latest(addon.metrics.registry).decode()
    assert ('bastion_edge_requests_total{app="none",destination="bastion",'
            'endpoint="chat.completions",original_model="gpt-4o",status_class="2xx",stream="false",'
            'upstream_model="gpt-oss-120b"} 1.0') in text
    assert ('original_model="other",status_class="2xx",stream="false",'
            'upstream_model="gpt-oss-120b"} 1.0') in text
    assert 'bastion_edge_rewrites_total{kind="model"} 2.0' in text


async def test_flow_annotated_for_mitmweb(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        addon.recorder.keeps_flows = True  # as in mitmweb; plain mitmdump skips the annotation
        flow = app_flow(body=chat())
        send(addon, flow)
        respond(addon, flow, b'{"usage":{"prompt_tokens":12,"completion_tokens":5,'
                             b'"prompt_tokens_details":{"cached_tokens":4}}}')
        assert flow.comment == ("bastion-edge: host, key, model; model gpt-4o -> gpt-oss-120b; "
                                "tokens in 12 / out 5 (cached 4)")
        assert flow.marked == ":arrows_counterclockwise:"


# ------------------------------------------------------------------ known bugs


async def test_model_choice_by_app_key_hash(tmp_path: Path) -> None:
    prefix = hashlib.sha256(APP_KEY.encode()).hexdigest()[:16]
    rules = write_rules(tmp_path, "models:\n  gpt-4o:\n"
                        f"    - {{when: {{app_key_sha256: '{prefix}'}}, use: team-model}}\n"
                        "    - use: gpt-oss-120b\n")
    with edge(rules) as (addon, _):
        flow = app_flow(body=chat())
        send(addon, flow)
        assert json.loads(flow.request.content)["model"] == "team-model"


async def test_responses_cancel_without_body_forwarded(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow("/v1/responses/resp_123/cancel", b"")
        send(addon, flow)
        assert flow.response is None
        assert flow.request.path == "/v1/responses/resp_123/cancel"


async def test_model_object_id_restored_with_reply_model_original(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, SHIPPED_RULES.replace("reply_model: upstream",
                                                        "reply_model: original"))
    with edge(rules) as (addon, _):
        flow = app_flow("/v1/models/gpt-4o", method="GET")
        send(addon, flow)
        out = respond(addon, flow, b'{"id": "gpt-oss-120b", "object": "model"}')
        assert json.loads(out)["id"] == "gpt-4o"


async def test_models_path_mapped_under_custom_base_path(rules_path: Path) -> None:
    environ = {**ENV, "BASTION_BASE_URL": "https://gw.example/bastion/v1"}
    with edge(rules_path, environ) as (addon, _):
        flow = app_flow("/v1/models/gpt-4o-mini", method="GET")
        send(addon, flow)
        assert flow.request.path == "/bastion/v1/models/gpt-oss-20b"


async def test_small_multipart_unmapped_model_refused(rules_path: Path) -> None:
    with edge(rules_path) as (addon, _):
        flow = app_flow("/v1/audio/transcriptions", multipart_body(b"RIFF", "whisper-9"),
                        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
        send(addon, flow)
        assert flow.response is not None
        assert envelope(flow)["code"] == "model_not_mapped"


async def test_watcher_follows_rules_option_change(rules_path: Path, tmp_path: Path) -> None:
    second = write_rules(tmp_path, "models: {gpt-4o: from-second-file}\n", "second.yaml")
    with edge(rules_path) as (addon, tctx):
        await tctx.master.addons.invoke_addon(addon, hooks.RunningHook())
        try:
            tctx.configure(addon, bastion_rules=str(second))
            assert addon.rules.source == str(second)
            rules_path.write_text("models: {gpt-4o: from-old-file}\n")
            watcher = addon.rules_source.watcher
            assert watcher is not None
            watcher.poll()
            assert addon.rules.source == str(second)
        finally:
            await tctx.master.addons.invoke_addon(addon, hooks.DoneHook())


async def test_small_multipart_mixed_case_boundary_model_replaced(rules_path: Path) -> None:
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    with edge(rules_path) as (addon, _):
        flow = app_flow("/v1/audio/transcriptions", multipart_body(b"RIFF", "whisper-1", boundary),
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        send(addon, flow)
        assert flow.request.content == multipart_body(b"RIFF", "whisper-large-v3", boundary)


def _bytes(out: bytes | Iterable[bytes]) -> bytes:
    """What mitmproxy sends for a stream callable's result (bytes or chunks)."""
    return out if isinstance(out, bytes) else b"".join(out)

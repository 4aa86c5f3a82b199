"""Bad input and abusive clients (issue 13): each case through a real `bastion-edge run`.

Raw cases (paths httpx would normalise, trailers, NUL bytes, slow clients) speak bytes
through a CONNECT tunnel with TLS to the proxy's CA, as a hand-written client would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import BIN, Proxy, Sandbox, proxy_env, start_proxy, wait_until

HOST = "api.openai.com"
BOUNDARY = "hardening-boundary-7d1c"
LIMITED_RULES = """\
models:
  gpt-4o: gpt-oss-120b
  whisper-1: whisper-large-v3
  gpt-4o-transcribe: whisper-large-v3
limits:
  max_json_body_bytes: 1048576
  header_timeout_seconds: 1
  idle_timeout_seconds: 2
  max_client_connections: 8
"""


@pytest.fixture(scope="module")
def limited(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("limited")
    rules = tmp / "rules.yaml"
    rules.write_text(LIMITED_RULES)
    running = start_proxy(tmp, proxy_env(sandbox), rules=rules)
    yield running
    assert running.process.stop() == 0, running.process.log()


def _http(proxy: Proxy) -> httpx.Client:
    env = proxy.app_env()
    return httpx.Client(proxy=env["HTTPS_PROXY"], verify=env["SSL_CERT_FILE"], timeout=60)


def _tunnel(proxy: Proxy) -> ssl.SSLSocket:
    """A TLS connection to api.openai.com through the proxy's CONNECT."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    raw.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    context = ssl.create_default_context(cafile=proxy.app_env()["SSL_CERT_FILE"])
    return context.wrap_socket(raw, server_hostname=HOST)


def _exchange(proxy: Proxy, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; read one response (Content-Length framed).

    The bytes go in 16 KiB pieces, and sending stops as soon as an answer has arrived: a
    proxy that refuses an oversized head answers and closes while the client is still
    sending, and writing on would turn its answer into a connection reset. (A readable
    socket alone proves nothing: TLS 1.3 session tickets arrive after the handshake.)"""
    with _tunnel(proxy) as tls:
        early = b""
        for start in range(0, len(request), 16384):
            try:
                tls.sendall(request[start:start + 16384])
            except (BrokenPipeError, ConnectionResetError):
                break
            early = _answer_waiting(tls)
            if early:
                break
        return _read_response(tls, early)


def _answer_waiting(tls: ssl.SSLSocket) -> bytes:
    """Application data already received, without waiting for any."""
    tls.setblocking(False)
    try:
        return tls.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return b""
    finally:
        tls.setblocking(True)
        tls.settimeout(30)


def _read_response(sock: ssl.SSLSocket, data: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def _form(fields: list[tuple[str, str]], file_bytes: bytes) -> bytes:
    out = b""
    for name, value in fields:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                ).encode() + value.encode() + b"\r\n"
    out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
    return out + file_bytes + f"\r\n--{BOUNDARY}--\r\n".encode()


FORM_TYPE = {"content-type": f"multipart/form-data; boundary={BOUNDARY}",
             "authorization": "Bearer sk-app"}


# ------------------------------------------------------------------ header injection


def test_streamed_upload_model_with_crlf_injects_no_header(proxy: Proxy) -> None:
    body = _form([("model", "whisper-9\r\nSet-Cookie: pwned=1")], b"\x00" * (2 * 1024 * 1024))
    with _http(proxy) as http:
        reply = http.post(f"https://{HOST}/v1/audio/transcriptions", content=body,
                          headers=FORM_TYPE)
    assert "set-cookie" not in reply.headers
    assert reply.headers["x-bastion-edge-upstream-model"] == "whisper-9%0D%0ASet-Cookie: pwned=1"


# ------------------------------------------------------------------ rules files


def test_empty_or_comment_only_rules_file_is_rejected(tmp_path: Path) -> None:
    for text in ("", "# only a comment\n\n"):
        rules = tmp_path / "rules.yaml"
        rules.write_text(text)
        checked = subprocess.run([str(BIN / "bastion-edge"), "check", "--rules", str(rules)],
                                 capture_output=True, text=True)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert "empty" in checked.stdout + checked.stderr


def test_hot_reload_of_comment_only_file_keeps_last_good_rules(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(LIMITED_RULES)
    proxy = start_proxy(tmp_path, proxy_env(sandbox), rules=rules)
    try:
        rules.write_text("# emptied by a bad deploy\n")
        wait_until(lambda: 'bastion_edge_rules_reloads_total{result="failure"} 1.0'
                   in proxy.metrics(), timeout=10, what="reload failure counted")
        with _http(proxy) as http:
            reply = http.post(f"https://{HOST}/v1/chat/completions",
                              json={"model": "gpt-4o", "messages": [{"role": "user",
                                                                     "content": "hi"}]},
                              headers={"authorization": "Bearer sk-app"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "gpt-oss-120b"
        ready = httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/readyz")
        assert ready.status_code == 200
    finally:
        assert proxy.process.stop() == 0, proxy.process.log()


# ------------------------------------------------------------------ JSON


@pytest.mark.parametrize("body", [
    b'{"model":"gpt-4o","messages":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model":"gpt-4o","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"model":"gpt-4o","x":' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}",
    b'{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}',
], ids=["deep-5k", "deep-100k", "deep-600-objects", "lone-surrogate"])
def test_deep_or_non_text_json_is_400_without_traceback(proxy: Proxy, body: bytes) -> None:
    with _http(proxy) as http:
        reply = http.post(f"https://{HOST}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json",
                                   "authorization": "Bearer sk-app"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "invalid_json"
    assert "Traceback" not in proxy.process.log()
    assert 'bastion_edge_limit_rejections_total{limit="json_structure"}' in proxy.metrics()


# ------------------------------------------------------------------ body size


def test_json_body_over_limit_is_413_before_it_is_buffered(limited: Proxy) -> None:
    big = b'{"model":"gpt-4o","input":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    with _http(limited) as http:
        reply = http.post(f"https://{HOST}/v1/embeddings", content=big,
                          headers={"content-type": "application/json",
                                   "authorization": "Bearer sk-app"})
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
            for _ in range(64):
                yield b"x" * 65536

        reply = http.post(f"https://{HOST}/v1/embeddings", content=chunks(),
                          headers={"content-type": "application/json",
                                   "authorization": "Bearer sk-app"})
        assert reply.status_code == 413, reply.text
        small = http.post(f"https://{HOST}/v1/embeddings",
                          json={"model": "text-embedding-3-small", "input": "hi"},
                          headers={"authorization": "Bearer sk-app"})
        assert small.status_code in (200, 400), small.text  # still serving
    assert 'bastion_edge_limit_rejections_total{limit="max_json_body_bytes"} 2.0' \
        in limited.metrics()


# ------------------------------------------------------------------ slow and idle clients


def _closed_by_proxy(sock: socket.socket) -> bool:
    """True once the proxy closes `sock` (read returns EOF or a reset)."""
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_slowloris_and_idle_connections_are_closed(limited: Proxy) -> None:
    slow = socket.create_connection(("127.0.0.1", limited.port))
    slow.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.open")  # never finished
    assert _closed_by_proxy(slow)
    with _tunnel(limited) as tls:  # one request, then idle on the kept-alive connection
        tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n"
                    b"Authorization: Bearer sk-app\r\n\r\n")
        status, _, _ = _read_response(tls)
        assert status == 200
        assert _closed_by_proxy(tls)
    metrics = limited.metrics()
    assert 'bastion_edge_limit_rejections_total{limit="header_timeout_seconds"}' in metrics
    assert 'bastion_edge_limit_rejections_total{limit="idle_timeout_seconds"}' in metrics


def test_connections_over_the_cap_are_refused_and_counted(limited: Proxy) -> None:
    held = []
    try:
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", limited.port))
            sock.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            held.append(sock)
        extra = socket.create_connection(("127.0.0.1", limited.port))
        extra.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            assert extra.recv(4096) == b""
        extra.close()
    finally:
        for sock in held:
            sock.close()
    assert 'bastion_edge_limit_rejections_total{limit="max_client_connections"}' \
        in limited.metrics()
    assert "bastion_edge_client_connections" in limited.metrics()


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize("path", ["/v1/../x", "/v1/%2e%2e/x", "/v1/%2E%2e/%2e%2e/admin",
                                  "/x", "/v1/files/a%2fb", "/v1/./models"])
def test_paths_outside_the_api_are_refused_without_the_key(
    proxy: Proxy, sandbox: Sandbox, path: str
) -> None:
    sandbox.clear_journal()
    status, _, body = _exchange(proxy, (
        f"GET {path} HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-app\r\n"
        f"Connection: close\r\n\r\n").encode())
    assert status == 400, body
    assert _code(body) == "invalid_path"
    assert sandbox.journal() == []  # never forwarded, never with the Bastion key


# ------------------------------------------------------------------ multipart


def test_buffered_form_with_two_model_fields_is_400(proxy: Proxy) -> None:
    body = _form([("model", "whisper-1"), ("model", "gpt-4o-transcribe")], b"RIFF" * 100)
    with _http(proxy) as http:
        reply = http.post(f"https://{HOST}/v1/audio/transcriptions", content=body,
                          headers=FORM_TYPE)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "duplicate_field"


def test_streamed_form_maps_every_model_field(limited: Proxy, sandbox: Sandbox) -> None:
    body = _form([("model", "whisper-1"), ("model", "gpt-4o-transcribe")],
                 b"\r\n--" + b"z" * (2 * 1024 * 1024))
    with _http(limited) as http:
        reply = http.post(f"https://{HOST}/v1/audio/transcriptions", content=body,
                          headers=FORM_TYPE)
    assert reply.status_code == 200, reply.text
    assert sandbox.last("/v1/audio/transcriptions")["form"]["model"] == "whisper-large-v3"


# ------------------------------------------------------------------ trailers


def test_chunked_request_with_trailer_gets_an_answer_and_does_not_leak(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    proxy = start_proxy(tmp_path, proxy_env(sandbox))
    try:
        payload = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
        status, _, body = _exchange(proxy, (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Authorization: Bearer sk-app\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
            + f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\nx-checksum: 1\r\n\r\n"))
        assert status == 400
        assert _code(body) == "unsupported_trailers"
        with _http(proxy) as http:  # still serving
            assert http.get(f"https://{HOST}/v1/models",
                            headers={"authorization": "Bearer sk-app"}).status_code == 200
    finally:
        assert proxy.process.stop() == 0, proxy.process.log()
    assert "still running after the grace period" not in proxy.process.log()


# ------------------------------------------------------------------ header limits


@pytest.mark.parametrize(("extra", "status", "code"), [
    (b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n", 431, "request_header_fields_too_large"),
    (b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)), 431,
     "request_header_fields_too_large"),
    (b"X-Nul: a\x00b\r\n", 400, "invalid_header"),
], ids=["1MB-header", "10k-headers", "NUL"])
def test_header_limits_answer_with_an_envelope(
    proxy: Proxy, sandbox: Sandbox, extra: bytes, status: int, code: str
) -> None:
    sandbox.clear_journal()
    got, _, body = _exchange(proxy, (
        b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-app\r\n"
        + extra + b"Connection: close\r\n\r\n"))
    assert got == status, body
    assert _code(body) == code
    assert sandbox.journal() == []


def test_an_endless_request_head_is_cut_off_with_431(proxy: Proxy) -> None:
    """mitmproxy buffers an unfinished head without bound; the proxy stops at the limit."""
    with _tunnel(proxy) as tls:
        tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nX-Endless: ")
        with contextlib.suppress(OSError):
            for _ in range(64):  # 4 MiB, never a line end
                tls.sendall(b"a" * 65536)
        status, _, body = _read_response(tls)
    assert status == 431
    assert _code(body) == "request_header_fields_too_large"


def test_a_tunnel_to_a_host_not_intercepted_is_not_timed_out(
    limited: Proxy, sandbox: Sandbox
) -> None:
    """Passthrough tunnels are not request/response traffic: the timers leave them be."""
    raw = socket.create_connection(("127.0.0.1", limited.port), timeout=30)
    raw.sendall(f"CONNECT 127.0.0.1:{sandbox.port} HTTP/1.1\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(sandbox.ca))
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        time.sleep(4)  # past header_timeout_seconds (1) and idle_timeout_seconds (2)
        tls.sendall(b"GET /sandbox/journal HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Connection: close\r\n\r\n")
        status, _, _ = _read_response(tls)
    assert status == 200

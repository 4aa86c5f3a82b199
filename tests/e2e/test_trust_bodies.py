"""Issue 23, rows 7 and 8: request bodies cannot hold a slot or the process's memory.

Row 7: a body that stops halfway (in the TLS tunnel, plain http, a `/v1/files` upload,
a streamed transcription) is closed by the proxy once it has been idle for
`idle_timeout_seconds` since its last byte. Row 8: buffered bodies share one process-wide
budget (`max_buffered_body_bytes_total`); past it a body is refused with 503, OpenAI's
envelope and `retry-after`, and once the held body is gone the same request succeeds.
Each through a real `bastion-edge run`, raw sockets as a hostile client would write them.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Proxy, Sandbox, proxy_env, start_proxy, wait_until
from test_hardening import _tunnel  # CONNECT, then TLS to api.openai.com

HOST = "api.openai.com"
BOUNDARY = "bodies-boundary-3f9e"
KiB = 1024
MiB = 1024 * KiB
MODELS = """\
models:
  gpt-4o: gpt-oss-120b
  whisper-1: whisper-large-v3
"""
TIMEOUT_LIMITS = """\
limits:
  header_timeout_seconds: 2
  idle_timeout_seconds: 3
"""
BUDGET_LIMITS = """\
limits:
  max_json_body_bytes: 1048576
  max_buffered_body_bytes_total: 1572864
"""


def _proxy_with(sandbox: Sandbox, tmp: Path, limits: str) -> Proxy:
    rules = tmp / "rules.yaml"
    rules.write_text(MODELS + limits)
    return start_proxy(tmp, proxy_env(sandbox), rules=rules)


@pytest.fixture(scope="module")
def timed(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = _proxy_with(sandbox, tmp_path_factory.mktemp("timed"), TIMEOUT_LIMITS)
    yield running
    assert running.process.stop() == 0, running.process.log()


@pytest.fixture(scope="module")
def budget(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = _proxy_with(sandbox, tmp_path_factory.mktemp("budget"), BUDGET_LIMITS)
    yield running
    assert running.process.stop() == 0, running.process.log()


def _closed_by_proxy(sock: socket.socket) -> bool:
    """True once the proxy closes `sock` (EOF or a reset); False if it stays open.
    The 60 s ceiling only ends a test whose proxy never closes (the bug)."""
    sock.settimeout(60)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def _head(method_target: str, content_type: str, length: int) -> bytes:
    return (f"{method_target} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer sk-app\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n").encode()


def _chat_half(target: str = "/v1/chat/completions") -> bytes:
    body = json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "x" * 4000}]}).encode()
    return _head(f"POST {target}", "application/json", len(body)) + body[:len(body) // 2]


def _form_half(path: str, fields: list[tuple[str, str]], declared_file: int) -> bytes:
    """A multipart upload whose head announces `declared_file` bytes of file; only the
    fields and the first 64 KiB of the file are sent."""
    parts = b"".join(
        (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
         f"{value}\r\n").encode() for name, value in fields)
    parts += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
              f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(parts) + declared_file + len(tail)
    head = _head(f"POST {path}", f"multipart/form-data; boundary={BOUNDARY}", length)
    return head + parts + b"RIFF" * (16 * KiB)


# ------------------------------------------------------------------ row 7

@pytest.mark.parametrize("case", ["tunnel_chat", "plain_http_chat", "files_upload",
                                  "streamed_transcription"])
def test_a_body_that_stops_halfway_is_closed_after_the_idle_timeout(
    timed: Proxy, case: str
) -> None:
    if case == "plain_http_chat":
        sock: socket.socket = socket.create_connection(("127.0.0.1", timed.port), timeout=30)
        sock.sendall(_chat_half(f"http://{HOST}/v1/chat/completions"))
    else:
        sock = _tunnel(timed)
        sock.sendall({
            "tunnel_chat": _chat_half(),
            "files_upload": _form_half("/v1/files", [("purpose", "batch")], 40 * MiB),
            "streamed_transcription": _form_half(
                "/v1/audio/transcriptions", [("model", "whisper-1")], 4 * MiB),
        }[case])
    with sock:
        assert _closed_by_proxy(sock), f"{case}: a half-sent body kept its connection open"
    assert 'bastion_edge_limit_rejections_total{limit="idle_timeout_seconds"}' \
        in timed.metrics()


# ------------------------------------------------------------------ row 8

def _send_until_refused(sock: ssl.SSLSocket, data: bytes) -> None:
    """Send in 64 KiB pieces until done or the proxy closes (it refuses mid-body)."""
    for start in range(0, len(data), 64 * KiB):
        try:
            sock.sendall(data[start:start + 64 * KiB])
        except OSError:
            return


def _http(proxy: Proxy) -> httpx.Client:
    env = proxy.app_env()
    return httpx.Client(proxy=env["HTTPS_PROXY"], timeout=60,
                        verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]))


def _chat_of(size: int) -> bytes:
    """A chat request of about `size` bytes, short in tokens (padded in `user`)."""
    return json.dumps({"model": "gpt-4o", "user": "y" * size, "messages": [
        {"role": "user", "content": "hi"}]}).encode()


def test_buffered_bodies_share_one_budget_and_past_it_get_503_retry_after(
    budget: Proxy,
) -> None:
    held_body = _chat_of(900 * KiB)
    other = _chat_of(800 * KiB)  # each fits max_json_body_bytes; both do not fit the budget
    headers = {"content-type": "application/json", "authorization": "Bearer sk-app"}
    replies: list[httpx.Response] = []

    def refused(http: httpx.Client) -> bool:
        replies.append(http.post(f"https://{HOST}/v1/chat/completions", content=other,
                                 headers=headers))
        return replies[-1].status_code == 503

    with _tunnel(budget) as held, _http(budget) as http:
        held.sendall(_head("POST /v1/chat/completions", "application/json", len(held_body))
                     + held_body[:-1])  # all but the last byte, held
        wait_until(lambda: refused(http), what="a 503 while another body holds the budget")
        reply = replies[-1]
        assert reply.headers.get("retry-after", "").isdigit(), reply.headers
        error = reply.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "server_overloaded", error
        assert "max_buffered_body_bytes_total" in error["message"]
        with _tunnel(budget) as refused_raw:  # the refused client's socket is closed too
            _send_until_refused(refused_raw, _head(
                "POST /v1/chat/completions", "application/json", len(other)) + other)
            assert _closed_by_proxy(refused_raw)
    with _http(budget) as http:  # the held body's client is gone: its bytes are released
        wait_until(lambda: not refused(http), what="the budget released")
        assert replies[-1].status_code == 200, replies[-1].text
    assert 'bastion_edge_limit_rejections_total{limit="max_buffered_body_bytes_total"}' \
        in budget.metrics()

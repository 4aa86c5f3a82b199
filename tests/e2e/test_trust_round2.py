"""Trust boundary, round 2 (issue 23): each row the second audit reproduced, run as an
attacker would against a real `bastion-edge run` on loopback."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import make_client
from harness import APP_KEY, BASTION_EDGE, REPO, Proxy, Sandbox, free_port, proxy_env, start_proxy
from test_batches import chat_line, finished, rules_file
from trust_support import BILLING_KEY, REPORTS_SECRET, curl, rules_with_apps, with_credentials


@pytest.fixture(scope="module")
def authed(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("round2")
    running = start_proxy(tmp, proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BILLING_KEY),
                          rules_with_apps(tmp))
    yield running
    assert running.process.stop() == 0, running.process.log()


SECURITY = REPO / "docs" / "operate" / "security.md"


def reports_url(proxy: Proxy) -> str:
    return with_credentials(proxy.url, "reports", REPORTS_SECRET)


# Row 6: metadata services outside link-local, and IPv6 forms that carry a refused IPv4.
@pytest.mark.parametrize("target", [
    "[fd00:ec2::254]:80",  # AWS IPv6 instance metadata
    "100.100.100.200:80",  # Alibaba Cloud metadata
    "168.63.129.16:80",  # Azure wire server
    "[64:ff9b::a9fe:a9fe]:80",  # NAT64 of 169.254.169.254
    "[64:ff9b:1::7f00:1]:80",  # local-use NAT64 of 127.0.0.1
    "[::ffff:a9fe:a9fe]:80",  # IPv4-mapped, hex spelling
    "[2002:a9fe:a9fe::1]:80",  # 6to4
])
def test_metadata_services_and_translated_forms_are_refused(authed: Proxy, target: str) -> None:
    tunnel = curl("-m", "20", "-x", reports_url(authed), "-p", "-o", "/dev/null",
                  f"http://{target}/latest/meta-data/")
    assert tunnel.returncode != 0 and "403" in tunnel.stderr, (target, tunnel.stderr)
    forwarded = curl("-m", "20", "-x", reports_url(authed), "-i",
                     f"http://{target}/latest/meta-data/")
    assert forwarded.stdout.startswith("HTTP/1.1 403"), (target, forwarded.stdout)
    body = forwarded.stdout.replace("\r\n", "\n").partition("\n\n")[2]
    assert json.loads(body)["error"]["code"] == "egress_refused"


# Rows 12, 13: every `model` part of a transcription form is mapped, quoted or not,
# small (buffered) or large (streamed).
FORM_BOUNDARY = "round2-boundary-41c9"
SMALL, LARGE = b"RIFF" * 64, b"\x00" * (3 * 1024 * 1024)


def form(models: list[tuple[str, str]], audio: bytes) -> bytes:
    out = b""
    for disposition, value in models:
        out += (f"--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n"
                f"{value}\r\n").encode()
    out += (f"--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
    return out + audio + f"\r\n--{FORM_BOUNDARY}--\r\n".encode()


def transcribe(proxy: Proxy, content: bytes) -> httpx.Response:
    env = proxy.app_env()
    with httpx.Client(proxy=reports_url(proxy),
                      verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]),
                      timeout=60) as http:
        return http.post("https://api.openai.com/v1/audio/transcriptions", content=content,
                         headers={"authorization": f"Bearer {APP_KEY}", "content-type":
                                  f"multipart/form-data; boundary={FORM_BOUNDARY}"})


def test_a_streamed_upload_maps_every_model_field(authed: Proxy, sandbox: Sandbox) -> None:
    sandbox.clear_journal()
    reply = transcribe(authed, form([('name="model"', "whisper-1"), ('name="model"', "tts-1")],
                                    LARGE))
    # The sandbox keeps the last `model` part it read: it must be mapped too.
    assert reply.status_code == 200, reply.text
    assert sandbox.last("/v1/audio/transcriptions")["form"]["model"] == "whisper-large-v3"
    # The buffered path refuses the same form.
    small = transcribe(authed, form([('name="model"', "whisper-1"), ('name="model"', "tts-1")],
                                    SMALL))
    assert small.status_code == 400 and small.json()["error"]["code"] == "duplicate_field"


@pytest.mark.parametrize("audio", [SMALL, LARGE], ids=["buffered", "streamed"])
@pytest.mark.parametrize("disposition", ["name=model", "name = model", 'NAME="model"',
                                         "name*=UTF-8''model", "name*0=mo; name*1=del"])
def test_an_unquoted_model_part_is_mapped(
    authed: Proxy, sandbox: Sandbox, audio: bytes, disposition: str
) -> None:
    sandbox.clear_journal()
    reply = transcribe(authed, form([(disposition, "whisper-1")], audio))
    assert reply.status_code == 200, reply.text
    assert sandbox.last("/v1/audio/transcriptions")["form"]["model"] == "whisper-large-v3"


# Row 11: an oversized `purpose` part is answered in OpenAI's error envelope.
def test_files_upload_with_a_huge_purpose_gets_an_openai_error(authed: Proxy) -> None:
    env = authed.app_env()
    with httpx.Client(proxy=reports_url(authed),
                      verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]),
                      timeout=60) as http:
        reply = http.post("https://api.openai.com/v1/files",
                          headers={"authorization": f"Bearer {APP_KEY}"},
                          data={"purpose": "batch" * (70 * 1024 // 5)},
                          files={"file": ("in.jsonl", b'{"custom_id": "a"}\n')})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "purpose" and error["code"] == "invalid_value"


# Rows 9, 10: a batch input file is validated in bounded memory.
@pytest.fixture
def batch_proxy(sandbox: Sandbox, tmp_path: Path) -> Iterator[Proxy]:
    running = start_proxy(tmp_path, proxy_env(sandbox),
                          rules=rules_file(tmp_path, "  max_lines: 1000\n"))
    yield running
    assert running.process.stop() == 0, running.process.log()


def uploaded_batch(client: openai.OpenAI, path: Path) -> Any:
    with open(path, "rb") as f:
        uploaded = client.files.create(file=("input.jsonl", f), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    return finished(client, batch.id)


def test_a_batch_line_over_the_body_limit_fails_validation(
    batch_proxy: Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = make_client(monkeypatch, batch_proxy)
    big = tmp_path / "one-line.jsonl"
    big.write_bytes(json.dumps(chat_line("huge", "x" * (17 * 1024 * 1024))).encode() + b"\n")
    batch = uploaded_batch(client, big)
    assert batch.status == "failed", batch
    assert batch.errors is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [("line_too_large", 1)]


def test_validation_stops_reading_past_max_lines(
    batch_proxy: Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = make_client(monkeypatch, batch_proxy)
    many = tmp_path / "many.jsonl"
    with open(many, "wb") as f:
        for i in range(200_000):
            f.write(json.dumps(chat_line(f"l{i}", "hi")).encode() + b"\n")
    batch = uploaded_batch(client, many)
    assert batch.status == "failed", batch
    assert batch.errors is not None
    error = batch.errors.data[0]
    assert error.code == "too_many_lines"
    # It read up to line 1001 and stopped: the file's full count was never taken.
    assert "more than 1000" in (error.message or "") and "200000" not in (error.message or "")


# Rows 2, 3: every listener has an owner, or the proxy does not start.
def run_exit(tmp: Path, *extra: str) -> tuple[int, str]:
    """`bastion-edge run` with apps declared; its exit code, or -1 if it kept running."""
    rules = rules_with_apps(tmp)
    rules.write_text(rules.read_text().replace(
        "clients:\n  apps:", "clients:\n  transparent_app: reports\n  apps:"))
    process = subprocess.Popen(
        [BASTION_EDGE, "run", "--listen-port", str(free_port()), "--metrics-port", "0",
         "--rules", str(rules), "--confdir", str(tmp / "confdir"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=proxy_env(None, QUBITTRON_API_KEY_BILLING=BILLING_KEY))
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate()
        return -1, output
    return process.returncode, output


@pytest.mark.parametrize("modes", [
    ["--listen-host", "0.0.0.0", "--mode", "transparent@{port}"],
    ["--mode", "regular", "--mode", "transparent@0.0.0.0:{port}"],
], ids=["listen-host", "mode-host"])
def test_a_transparent_listener_beyond_loopback_is_refused_at_start(
    tmp_path: Path, modes: list[str]
) -> None:
    code, output = run_exit(tmp_path, *(m.format(port=free_port()) for m in modes))
    assert code == 2, output
    assert "--transparent-redirect-only" in output


@pytest.mark.parametrize("mode", ["socks5@{port}", "upstream:http://127.0.0.1:{port}",
                                  "reverse:http://127.0.0.1:{port}", "dns@{port}",
                                  "regular", "nonsense@{port}"])
def test_a_mode_without_apps_and_egress_enforced_is_refused_at_start(
    tmp_path: Path, mode: str
) -> None:
    # "regular" beside the refused mode: one policed listener does not excuse another.
    modes = ["--mode", "regular"] if mode == "regular" else [
        "--mode", "regular", "--mode", mode.format(port=free_port())]
    if mode == "regular":
        modes += ["--mode", f"socks5@127.0.0.1:{free_port()}"]
    code, output = run_exit(tmp_path, *modes)
    assert code == 2, output
    assert "refusing --mode" in output or "nonsense" in output


# Row 16: what the docs' Security page promises keyless clients is what they get.
def keyless_upload(proxy: Proxy, name: str) -> str:
    env = proxy.app_env()
    with httpx.Client(proxy=env["HTTPS_PROXY"], timeout=60,
                      verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"])) as http:
        reply = http.post("https://api.openai.com/v1/files", data={"purpose": "batch"},
                          files={"file": (name, b'{"custom_id": "a"}\n')})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["id"])


def keyless_file_ids(proxy: Proxy) -> set[str]:
    env = proxy.app_env()
    with httpx.Client(proxy=env["HTTPS_PROXY"], timeout=60,
                      verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"])) as http:
        return {f["id"] for f in http.get("https://api.openai.com/v1/files").json()["data"]}


def test_keyless_clients_on_one_address_share_a_partition_as_the_docs_say(
    proxy: Proxy
) -> None:
    # Two clients, two connections, no key, no app: only the address tells them apart.
    first, second = keyless_upload(proxy, "one.jsonl"), keyless_upload(proxy, "two.jsonl")
    assert {first, second} <= keyless_file_ids(proxy)
    security = SECURITY.read_text()
    promise = " ".join(security.split())
    assert "keyless clients never share one" not in promise
    assert ("keyless clients on one address (one host, or everything behind one NAT) "
            "share one partition") in promise

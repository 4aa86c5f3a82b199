"""The sandbox rehearses model availability: vanished models and missing capabilities."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sandbox_support import AUTH, KEY, client_for, run_sandbox_thread

from bastion_edge.cli.main import main
from bastion_edge.config.rules import ModelCapabilities
from bastion_sandbox import ModelSupport, RunningSandbox
from bastion_sandbox.availability import ModelAvailability, unimplemented_feature

SMALL = "Llama-3.1-8B-Instruct"
MID = "gpt-oss-20b"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(
        tmp_path_factory.mktemp("tls"), unavailable_models=frozenset({"gpt-oss-120b"}),
        capabilities={SMALL: ModelCapabilities(tools=False, json_schema=False, vision=False)})


@pytest.fixture()
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client_for(sandbox, headers=AUTH) as c:
        yield c
        assert c.delete("/sandbox/models").status_code == 200  # back to the configured state


def _chat(client: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def _listed(client: httpx.Client) -> set[str]:
    return {m["id"] for m in client.get("/v1/models").json()["data"]}


def test_configured_unavailable_model_is_unlisted_and_404_model_not_found(
        client: httpx.Client) -> None:
    assert "gpt-oss-120b" not in _listed(client)
    assert MID in _listed(client)
    reply = _chat(client, "gpt-oss-120b")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    assert reply.json()["error"]["param"] == "model"
    assert client.get("/v1/models/gpt-oss-120b").status_code == 404


def test_model_made_unavailable_at_run_time_then_restored(client: httpx.Client) -> None:
    assert _chat(client, MID).status_code == 200
    state = client.patch(f"/sandbox/models/{MID}", json={"available": False}).json()
    assert MID in state["unavailable"]
    assert MID not in _listed(client)
    assert _chat(client, MID).json()["error"]["code"] == "model_not_found"
    client.patch(f"/sandbox/models/{MID}", json={"available": True})
    assert _chat(client, MID).status_code == 200
    assert MID in _listed(client)


def test_unavailable_transcription_model_404s_a_multipart_upload(
        client: httpx.Client) -> None:
    client.patch("/sandbox/models/whisper-large-v3", json={"available": False})
    audio = io.BytesIO()
    with wave.open(audio, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 1600)
    reply = client.post("/v1/audio/transcriptions", data={"model": "whisper-large-v3"},
                        files={"file": ("a.wav", audio.getvalue(), "audio/wav")})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("extra", [
    {"tools": TOOLS},
    {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
    {"response_format": SCHEMA},
])
def test_field_the_model_lacks_is_502_upstream_error(client: httpx.Client,
                                                     extra: dict[str, object]) -> None:
    reply = _chat(client, SMALL, **extra)
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"
    assert reply.json()["error"]["type"] == "server_error"
    assert _chat(client, MID, **extra).status_code == 200  # MID declares nothing: supported


def test_image_input_the_model_lacks_is_502(client: httpx.Client) -> None:
    client.patch("/sandbox/models/Qwen2.5-VL-72B-Instruct", json={"vision": False})
    reply = client.post("/v1/responses", json={
        "model": "Qwen2.5-VL-72B-Instruct", "store": False,
        "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]})
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"


def test_responses_json_schema_text_format_is_gated(client: httpx.Client) -> None:
    body = {"model": SMALL, "store": False, "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "s",
                                "schema": {"type": "object"}}}}
    assert client.post("/v1/responses", json=body).status_code == 502
    body["text"] = {"format": {"type": "text"}}
    assert client.post("/v1/responses", json=body).status_code == 200


def test_capabilities_declared_at_run_time_and_reset(client: httpx.Client) -> None:
    client.patch(f"/sandbox/models/{MID}", json={"tools": False})
    assert _chat(client, MID, tools=TOOLS).status_code == 502
    state = client.delete("/sandbox/models").json()
    assert MID not in state["capabilities"]
    assert state["unavailable"] == ["gpt-oss-120b"]
    assert _chat(client, MID, tools=TOOLS).status_code == 200


@pytest.mark.parametrize("body", [{"available": "no"}, {"tools": 1}, {"streaming": False},
                                  {"context_tokens": 0}, ["available"]])
def test_bad_admin_patch_is_400_and_changes_nothing(client: httpx.Client,
                                                    body: object) -> None:
    before = client.get("/sandbox/models").json()
    reply = client.patch(f"/sandbox/models/{MID}", json=body)
    assert reply.status_code == 400
    assert client.get("/sandbox/models").json() == before


def test_real_sdk_sees_not_found_and_internal_server_error(sandbox: RunningSandbox) -> None:
    with httpx.Client(verify=sandbox.tls.client_ssl_context()) as http:
        sdk = openai.OpenAI(api_key=KEY, base_url=sandbox.base_url, http_client=http,
                            max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.chat.completions.create(model="gpt-oss-120b",
                                        messages=[{"role": "user", "content": "hi"}])
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.InternalServerError) as lacking:
            sdk.chat.completions.create(model=SMALL, tools=TOOLS,  # type: ignore[arg-type]
                                        messages=[{"role": "user", "content": "hi"}])
        assert lacking.value.status_code == 502


def test_update_applies_nothing_on_error() -> None:
    state = ModelAvailability()
    with pytest.raises(ValueError, match="vision"):
        state.update(MID, {"available": False, "vision": "no"})
    assert state.unavailable == set() and state.capabilities == {}
    state.update(MID, {"available": False, "context_tokens": 1000})
    assert state.unavailable == {MID}
    assert state.capabilities[MID] == ModelSupport(context_tokens=1000)


def test_proxy_rules_capabilities_are_copied_into_the_sandboxs_own_type() -> None:
    state = ModelAvailability.configured(frozenset(), {MID: ModelCapabilities(vision=False)})
    assert state.capabilities == {MID: ModelSupport(vision=False)}
    assert type(state.capabilities[MID]) is ModelSupport


LACKS_ALL = ModelSupport(tools=False, json_schema=False, vision=False)
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}


@pytest.mark.parametrize(("path", "body", "lacking"), [
    ("/v1/chat/completions", {"tools": TOOLS}, "tool calling"),
    ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "tool calling"),
    ("/v1/chat/completions", {"tools": []}, None),
    ("/v1/chat/completions", {"response_format": SCHEMA}, "json_schema structured output"),
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [IMAGE]}]},
     "image input"),
    ("/v1/responses", {"tools": TOOLS}, "tool calling"),
    ("/v1/responses", {"functions": [{"name": "f"}]}, None),  # not a Responses field
    ("/v1/responses", {"text": {"format": {"type": "json_schema", "name": "s"}}},
     "json_schema structured output"),
    ("/v1/responses", {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x/y.png"}]}]}, "image input"),
    ("/v1/completions", {"prompt": "hi", "tools": TOOLS}, None),
    ("/v1/completions", {"prompt": "hi"}, None),
])
def test_which_feature_a_request_uses_that_its_model_lacks(
        path: str, body: dict[str, object], lacking: str | None) -> None:
    assert unimplemented_feature(path, body, LACKS_ALL) == lacking
    assert unimplemented_feature(path, body, ModelSupport()) is None


def test_the_first_lacking_feature_is_named() -> None:
    body = {"tools": TOOLS, "response_format": SCHEMA}
    assert unimplemented_feature("/v1/chat/completions", body, LACKS_ALL) == "tool calling"
    only_schema = ModelSupport(json_schema=False)
    assert unimplemented_feature("/v1/chat/completions", body, only_schema) == (
        "json_schema structured output")


def test_cli_refuses_an_invalid_capabilities_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "caps.yaml"
    bad.write_text("capabilities:\n  gpt-oss-20b: {tools: maybe}\n")
    assert main(["sandbox", "--port", "0", "--capabilities", str(bad)]) == 1
    assert 'capabilities."gpt-oss-20b".tools: expected true or false (line 2)' in (
        capsys.readouterr().err)

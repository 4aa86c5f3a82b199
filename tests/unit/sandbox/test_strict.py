"""The sandbox refuses what real Bastion cannot take, and answers structured output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sandbox_support import AUTH, client_for, run_sandbox_thread, sse_events

from bastion_sandbox import RunningSandbox

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "people": {"type": "integer", "minimum": 1}},
          "required": ["city", "people"], "additionalProperties": False}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    sandboxes: Iterator[RunningSandbox] = run_sandbox_thread(tmp_path_factory.mktemp("tls"))
    with client_for(next(sandboxes), headers=AUTH) as c:
        yield c
    next(sandboxes, None)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def chat(client: httpx.Client, model: str = "gpt-oss-20b", **extra: object) -> httpx.Response:
    return client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def responses(client: httpx.Client, **extra: object) -> httpx.Response:
    return client.post("/v1/responses", json={"model": "gpt-oss-120b", "store": False, **extra})


def test_item_reference_is_refused_as_bastion_keeps_nothing(client: httpx.Client) -> None:
    reply = responses(client, input=[{"role": "user", "content": "hi"},
                                     {"type": "item_reference", "id": "msg_1"}])
    assert reply.status_code == 400
    assert error_of(reply)["code"] == "item_reference_not_supported"
    assert error_of(reply)["param"] == "input[1]"


@pytest.mark.parametrize("tokens", [[15339, 1917], [[15339, 1917], [5686]]])
def test_token_id_embeddings_are_refused(client: httpx.Client, tokens: object) -> None:
    reply = client.post("/v1/embeddings", json={"model": "bge-m3", "input": tokens})
    assert reply.status_code == 400
    assert error_of(reply)["param"] == "input" and "token-id" in error_of(reply)["message"]


def test_reasoning_fields_only_where_a_model_takes_them(client: httpx.Client) -> None:
    assert chat(client, reasoning_effort="low").status_code == 200  # gpt-oss reasons
    assert error_of(chat(client, reasoning_effort="minimal"))["param"] == "reasoning_effort"
    llama = chat(client, "Llama-3.1-8B-Instruct", reasoning_effort="low")
    assert (llama.status_code, error_of(llama)["code"]) == (502, "upstream_error")
    assert chat(client, max_completion_tokens=5).status_code == 502
    assert chat(client, max_tokens=5).status_code == 200
    assert responses(client, input="hi", reasoning={"effort": "high"}).status_code == 200


def test_chat_json_schema_answer_fits_the_schema(client: httpx.Client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA, "strict": True}}
    content = chat(client, response_format=fmt).json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"city": "", "people": 1}


def test_responses_text_format_answer_fits_the_schema_streamed_too(
    client: httpx.Client
) -> None:
    text = {"format": {"type": "json_schema", "name": "t", "schema": SCHEMA, "strict": True}}
    body = responses(client, input="hi", text=text).json()
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"city": "", "people": 1}
    streamed = responses(client, input="hi", text=text, stream=True)
    deltas = "".join(data["delta"] for name, data in sse_events(streamed.text)
                     if name == "response.output_text.delta")
    assert json.loads(deltas) == {"city": "", "people": 1}

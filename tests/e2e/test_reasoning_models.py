"""Newer OpenAI ids and their reasoning-only fields, through the proxy to the sandbox,
which (like a Bastion model that does not implement a field) refuses
`max_completion_tokens` everywhere and reasoning effort on models that do not reason."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from harness import Sandbox


def sent(sandbox: Sandbox, path: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(sandbox.last(path)["body"])
    return body


@pytest.mark.parametrize(("model", "upstream"), [
    ("o3-mini", "gpt-oss-120b"), ("o4-mini-2025-04-16", "gpt-oss-120b"),
    ("gpt-5", "gpt-oss-120b"), ("gpt-5.1", "gpt-oss-120b"), ("gpt-5-nano", "gpt-oss-20b"),
    ("gpt-4.1-mini-2025-04-14", "gpt-oss-20b"),
])
def test_reasoning_chat_fields_reach_bastion_in_a_form_it_accepts(
    client: openai.OpenAI, sandbox: Sandbox, model: str, upstream: str
) -> None:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "think briefly"}],
        reasoning_effort="minimal", max_completion_tokens=64)
    assert completion.model == upstream
    body = sent(sandbox, "/v1/chat/completions")
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
    assert body["reasoning_effort"] == "low"  # gpt-oss takes low/medium/high


def test_reasoning_effort_dropped_for_a_model_that_does_not_reason(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "code please"}],
        reasoning_effort="high", extra_headers={"X-Bastion-Route": "coding"})
    assert completion.model == "Qwen3-Coder-30B-A3B-Instruct"
    assert "reasoning_effort" not in sent(sandbox, "/v1/chat/completions")


def test_responses_reasoning_object_kept_as_an_effort(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    response = client.responses.create(model="o3", input="think",
                                       reasoning={"effort": "high", "summary": "auto"})
    assert response.model == "gpt-oss-120b"
    assert sent(sandbox, "/v1/responses")["reasoning"] == {"effort": "high"}


def test_the_sandbox_really_refuses_the_unadapted_fields(sandbox: Sandbox) -> None:
    """The control: what would have reached Bastion without the proxy's adaptation."""
    from harness import BASTION_KEY

    with sandbox.client() as c:
        reply = c.post(f"{sandbox.base_url}/chat/completions",
                       headers={"Authorization": f"Bearer {BASTION_KEY}"},
                       json={"model": "gpt-oss-120b", "max_completion_tokens": 64,
                             "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "upstream_error"

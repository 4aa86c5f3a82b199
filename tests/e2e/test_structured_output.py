"""openai's `.parse()` (structured output) rehearsed offline: through the proxy to the
sandbox, which answers json_schema requests with JSON that fits the schema."""

from __future__ import annotations

import json
import subprocess
from enum import Enum
from pathlib import Path

import openai
from harness import Proxy, Sandbox
from pydantic import BaseModel, Field


class Priority(Enum):
    LOW = "low"
    HIGH = "high"


class Task(BaseModel):
    title: str
    priority: Priority
    estimate_hours: float
    tags: list[str]


class Plan(BaseModel):
    goal: str
    tasks: list[Task] = Field(min_length=1)
    owner: str | None


def test_chat_completions_parse_with_a_pydantic_model(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    sandbox.clear_journal()
    completion = client.chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "plan a launch"}],
        response_format=Plan)
    plan = completion.choices[0].message.parsed
    assert isinstance(plan, Plan) and len(plan.tasks) == 1
    assert plan.tasks[0].priority is Priority.LOW
    sent = json.loads(sandbox.last("/v1/chat/completions")["body"])
    assert sent["model"] == "gpt-oss-120b"
    assert sent["response_format"]["type"] == "json_schema"


def test_responses_parse_with_a_pydantic_text_format(client: openai.OpenAI) -> None:
    response = client.responses.parse(model="gpt-4o", input="plan a launch", text_format=Plan)
    plan = response.output_parsed
    assert isinstance(plan, Plan) and plan.tasks[0].title == ""


def test_streamed_chat_parse(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a task"}],
        response_format=Task,
    ) as stream:
        final = stream.get_final_completion()
    task = final.choices[0].message.parsed
    assert isinstance(task, Task) and task.tags == []


AI_SDK_OBJECT_APP = """\
import { generateObject, jsonSchema } from "ai";
import { openai } from "@ai-sdk/openai";
const { object } = await generateObject({
  model: openai("gpt-4o"), maxRetries: 0, prompt: "a recipe",
  schema: jsonSchema({ type: "object", additionalProperties: false,
    required: ["name", "servings", "steps"],
    properties: { name: { type: "string" }, servings: { type: "integer", minimum: 1 },
                  steps: { type: "array", items: { type: "string" }, minItems: 2 } } }),
});
console.log(JSON.stringify(object));
"""


def test_vercel_ai_sdk_generate_object(proxy: Proxy, tmp_path: Path) -> None:
    """The AI SDK's generateObject (Responses with text.format json_schema) via the preload."""
    from test_transparent import app_env, node_app, require_node

    require_node()
    app = node_app(tmp_path / "ai-sdk-object", AI_SDK_OBJECT_APP)
    done = subprocess.run(["node", str(app)], env=app_env(tmp_path, **proxy.app_env()),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "name": "", "servings": 1, "steps": ["", ""]}

"""openai's `.parse()` (structured output) rehearsed offline: through the proxy to the
sandbox, which answers json_schema requests with JSON that fits the schema."""

from __future__ import annotations

import json
from enum import Enum

import openai
from harness import Sandbox
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

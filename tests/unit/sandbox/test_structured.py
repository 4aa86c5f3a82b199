"""The sandbox's structured output: a minimal instance valid against the schema."""

from __future__ import annotations

import json
from enum import Enum
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from bastion_sandbox.errors import BastionError
from bastion_sandbox.structured import (
    UnsupportedSchema,
    chat_structured_text,
    minimal_instance,
    responses_structured_text,
)


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Step(BaseModel):
    explanation: str = Field(min_length=3)
    output: float


class Answer(BaseModel):
    steps: list[Step] = Field(min_length=2)
    final: int = Field(ge=5)
    colour: Colour
    mood: Literal["calm", "busy"]
    note: str | None
    done: bool
    ratio: float = Field(gt=1.5)
    tags: list[str]


def test_pydantic_model_schema_instance_validates() -> None:
    value = minimal_instance(Answer.model_json_schema())
    parsed = Answer.model_validate(value)  # raises if the instance does not fit
    assert len(parsed.steps) == 2 and parsed.final == 5 and parsed.colour is Colour.RED


def test_plain_schema_forms() -> None:
    assert minimal_instance({"type": "object", "properties": {"a": {"type": "string"}}}) == {}
    assert minimal_instance({"type": ["null", "integer"], "minimum": 3}) == 3
    assert minimal_instance({"anyOf": [{"type": "boolean"}, {"type": "null"}]}) is False
    assert minimal_instance({"const": "x"}) == "x"
    assert minimal_instance({"type": "array", "prefixItems": [{"type": "integer"}],
                             "items": {"type": "string"}, "minItems": 2}) == [0, ""]
    assert minimal_instance({"type": "string", "format": "date-time"}) == "2025-01-01T00:00:00Z"
    assert minimal_instance({"type": "number", "maximum": -2}) == -2.0
    assert minimal_instance({"allOf": [{"type": "object", "properties": {"a": {"type": "null"}},
                                        "required": ["a"]}]}) == {"a": None}


def test_broken_or_endless_refs_are_refused() -> None:
    with pytest.raises(UnsupportedSchema):
        minimal_instance({"$ref": "#/$defs/missing"})
    with pytest.raises(UnsupportedSchema):
        minimal_instance({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})


def test_request_shapes_for_chat_and_responses() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    chat = {"type": "json_schema", "json_schema": {"name": "N", "schema": schema, "strict": True}}
    assert json.loads(chat_structured_text(chat) or "") == {"n": 0}
    assert chat_structured_text({"type": "json_object"}) == "{}"
    assert chat_structured_text({"type": "text"}) is None and chat_structured_text(None) is None
    text = {"format": {"type": "json_schema", "name": "N", "schema": schema, "strict": True}}
    assert json.loads(responses_structured_text(text) or "") == {"n": 0}
    assert responses_structured_text({"format": {"type": "text"}}) is None
    broken = {"type": "json_schema", "json_schema": {"name": "b", "schema": {"$ref": "#/x"}}}
    with pytest.raises(BastionError) as raised:
        chat_structured_text(broken)
    assert (raised.value.status, raised.value.param) == (400, "response_format")

"""What the sandbox's models "say": deterministic replies derived from the request.

A reply echoes the model and the start of the last user text
(`sandbox:<model>: <first 40 chars>`); after a tool result it echoes that instead
(`sandbox:<model>: tool result: <first 40 chars>`). With function tools offered and a
last user text mentioning "weather", the model calls the first function tool (one whose
name contains "weather" preferred) with arguments filled from its JSON schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion_sandbox.errors import invalid_request
from bastion_sandbox.models import BastionModel

ECHO_CHARS = 40
CHARS_PER_TOKEN = 4
PIECE_CHARS = 8
TOOL_TRIGGER = "weather"
IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_NOT_TEXT = frozenset({"type", "role", "id", "call_id", "tool_call_id", "status"})


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str  # JSON text


def echo_text(model_id: str, source: str) -> str:
    return f"sandbox:{model_id}: {source[:ECHO_CHARS]}"


def tool_result_text(model_id: str, output: str) -> str:
    return echo_text(model_id, f"tool result: {output}")


def stream_pieces(text: str) -> list[str]:
    """The text cut into small pieces, one per streamed delta (at least one)."""
    return [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]


def text_of(content: object) -> str:
    """The text of a message's content: a string, or text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in _TEXT_PART_TYPES
            and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def has_image(value: object) -> bool:
    if isinstance(value, list):
        return any(has_image(item) for item in value)
    if isinstance(value, dict):
        if value.get("type") in IMAGE_PART_TYPES:
            return True
        return any(has_image(item) for item in value.values() if isinstance(item, list | dict))
    return False


def count_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(count_chars(item) for item in value)
    if isinstance(value, dict):
        if value.get("type") in IMAGE_PART_TYPES:
            return 0
        return sum(count_chars(item) for key, item in value.items() if key not in _NOT_TEXT)
    return 0


def estimate_tokens(chars: int) -> int:
    return max(1, chars // CHARS_PER_TOKEN)


def check_prompt(model: BastionModel, prompt: object, param: str) -> int:
    """Vision and context-window rules for a prompt; returns its estimated tokens."""
    if not model.vision and has_image(prompt):
        raise invalid_request(
            f"The model `{model.id}` does not accept image input; "
            "use a vision model such as Qwen2.5-VL-72B-Instruct.",
            "image_input_not_supported",
            param,
        )
    tokens = estimate_tokens(count_chars(prompt))
    if model.context_window is not None and tokens > model.context_window:
        raise invalid_request(
            f"This model's maximum context length is {model.context_window} tokens. "
            f"However, your {param} resulted in {tokens} tokens.",
            "context_length_exceeded",
            param,
        )
    return tokens


def function_tools(tools: object) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, parameters schema) of the function tools, in chat or Responses form."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    if not isinstance(tools, list):
        return found
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        function = tool.get("function")
        spec: dict[str, Any] = function if isinstance(function, dict) else tool
        name = spec.get("name")
        params = spec.get("parameters")
        if isinstance(name, str) and name:
            found.append((name, params if isinstance(params, dict) else {}))
    return found


def choose_tool_call(tools: object, user_text: str) -> ToolCall | None:
    """The function call the sandbox model makes for this turn, if any."""
    if TOOL_TRIGGER not in user_text.lower():
        return None
    candidates = function_tools(tools)
    if not candidates:
        return None
    name, params = next(((n, p) for n, p in candidates if TOOL_TRIGGER in n.lower()), candidates[0])
    digest = hashlib.sha256(f"{name}\0{user_text}".encode()).hexdigest()
    return ToolCall(f"call_{digest[:24]}", name, json.dumps(_arguments_for(params)))


_SAMPLE_VALUES: dict[str, object] = {
    "string": "Paris",
    "integer": 1,
    "number": 1.0,
    "boolean": True,
    "array": [],
    "object": {},
}


def _arguments_for(params: Mapping[str, Any]) -> dict[str, object]:
    properties = params.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = params.get("required")
    names = required if isinstance(required, list) and required else list(properties)
    arguments: dict[str, object] = {}
    for name in names:
        schema = properties.get(name)
        if not isinstance(name, str) or not isinstance(schema, dict):
            continue
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            arguments[name] = enum[0]
        else:
            arguments[name] = _SAMPLE_VALUES.get(str(schema.get("type")))
    return arguments

"""Mirror agreement beyond shape: do OpenAI's and Bastion's answers say the same (pure).

For a chat or Responses pair, the access log's `agreement` holds what applies:

  similarity    cosine of the two answers' embeddings (bge-m3, asked by the proxy);
                None when either answer has no text (a pure tool call)
  tools_match   both called the same tools (as a multiset of names), and each of
                Bastion's calls has arguments that parse and validate against the
                tool's JSON schema in the request
  schema_valid  the request asked for a json_schema answer: Bastion's text parses and
                validates against it

Validation implements the subset of JSON Schema that OpenAI's strict structured
outputs allow (the `jsonschema` library is not a dependency): type (one or a list),
properties, required, items, enum, const, additionalProperties (false or a schema),
anyOf, and local `$ref` into `$defs`/`definitions`. Other keywords are not checked.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SIMILARITY_AGREES = 0.85  # a pair with at least this cosine says the same (agrees())
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()


# ------------------------------------------------------------------ similarity

def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine similarity; None for vectors of different sizes or a zero vector."""
    if len(a) != len(b) or not a:
        return None
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else None


# ------------------------------------------------------------------ answers

def answer_of(body: bytes, endpoint: str, stream: bool) -> Answer | None:
    """The answer in a chat or Responses reply (JSON, or SSE when `stream`); None when
    the body is not one."""
    if stream:
        events = list(sse_data(body))
        return _chat_stream(events) if endpoint == "chat.completions" \
            else _responses_stream(events)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return chat_answer(value) if endpoint == "chat.completions" else responses_answer(value)


def sse_data(body: bytes) -> Iterable[dict[str, Any]]:
    """The JSON objects of an event stream's `data:` lines ([DONE] and junk skipped)."""
    for raw in body.decode("utf-8", "replace").splitlines():
        if not raw.startswith("data:"):
            continue
        data = raw[5:].strip()
        if not data or data == "[DONE]":
            continue
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            yield value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content
                       if isinstance(p, dict) and p.get("type") in ("text", "output_text"))
    return ""


def chat_answer(reply: Mapping[str, Any]) -> Answer | None:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    calls = tuple(ToolCall(str(f.get("name", "")), str(f.get("arguments", "")))
                  for c in message.get("tool_calls") or [] if isinstance(c, dict)
                  and isinstance(f := c.get("function"), dict))
    return Answer(_text(message.get("content")), calls)


def responses_answer(reply: Mapping[str, Any]) -> Answer | None:
    output = reply.get("output")
    if not isinstance(output, list):
        return None
    text, calls = [], []
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            text.append(_text(item.get("content")))
        elif item.get("type") == "function_call":
            calls.append(ToolCall(str(item.get("name", "")), str(item.get("arguments", ""))))
    return Answer("".join(text), tuple(calls))


def _chat_stream(events: list[dict[str, Any]]) -> Answer | None:
    if not events:
        return None
    text: list[str] = []
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for event in events:
        for choice in event.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                    continue
                index = call.get("index", 0) if isinstance(call.get("index"), int) else 0
                function = call["function"]
                if function.get("name"):
                    names[index] = str(function["name"])
                arguments.setdefault(index, []).append(str(function.get("arguments") or ""))
    calls = tuple(ToolCall(names.get(i, ""), "".join(arguments.get(i, [])))
                  for i in sorted(names.keys() | arguments.keys()))
    return Answer("".join(text), calls)


def _responses_stream(events: list[dict[str, Any]]) -> Answer | None:
    for event in reversed(events):  # response.completed carries the whole response
        response = event.get("response")
        if event.get("type") == "response.completed" and isinstance(response, dict):
            return responses_answer(response)
    deltas = [str(e.get("delta", "")) for e in events
              if e.get("type") == "response.output_text.delta"]
    return Answer("".join(deltas)) if events else None


# ------------------------------------------------------------------ schemas

def validate(instance: Any, schema: Any, root: Any = None, depth: int = 0) -> bool:
    """Whether `instance` satisfies `schema` (the strict structured-outputs subset)."""
    root = schema if root is None else root
    if depth > MAX_DEPTH or not isinstance(schema, dict):
        return isinstance(schema, dict) or schema is True
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        return target is not None and validate(instance, target, root, depth + 1)
    if "anyOf" in schema and not any(validate(instance, s, root, depth + 1)
                                     for s in schema["anyOf"] or []):
        return False
    if "enum" in schema and instance not in schema["enum"]:
        return False
    if "const" in schema and instance != schema["const"]:
        return False
    types = schema.get("type")
    if types is not None and not any(_is_type(instance, t)
                                     for t in (types if isinstance(types, list) else [types])):
        return False
    if isinstance(instance, dict):
        return _object_ok(instance, schema, root, depth)
    if isinstance(instance, list) and "items" in schema:
        return all(validate(item, schema["items"], root, depth + 1) for item in instance)
    return True


def _object_ok(instance: dict[str, Any], schema: dict[str, Any], root: Any, depth: int) -> bool:
    properties = schema.get("properties") or {}
    if any(name not in instance for name in schema.get("required") or []):
        return False
    extra = schema.get("additionalProperties", True)
    for key, value in instance.items():
        if key in properties:
            if not validate(value, properties[key], root, depth + 1):
                return False
        elif extra is False or (isinstance(extra, dict)
                                and not validate(value, extra, root, depth + 1)):
            return False
    return True


def _is_type(value: Any, name: Any) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    return False


def _resolve(root: Any, ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# ------------------------------------------------------------------ verdicts

def tool_schemas(request: Mapping[str, Any]) -> dict[str, Any]:
    """Tool name -> its parameters schema (chat and Responses forms)."""
    out: dict[str, Any] = {}
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        spec: dict[str, Any] = function if isinstance(function, dict) else tool
        if isinstance(spec.get("name"), str):
            out[spec["name"]] = spec.get("parameters", {})
    return out


def tools_match(request: Mapping[str, Any], openai: Answer, bastion: Answer) -> bool | None:
    """None when neither called a tool."""
    if not openai.tool_calls and not bastion.tool_calls:
        return None
    if Counter(c.name for c in openai.tool_calls) != Counter(c.name for c in bastion.tool_calls):
        return False
    schemas = tool_schemas(request)
    for call in bastion.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except (ValueError, RecursionError):
            return False
        if not validate(arguments, schemas.get(call.name, {})):
            return False
    return True


def answer_schema(request: Mapping[str, Any]) -> Any:
    """The json_schema a request asks the answer to follow (chat or Responses), if any."""
    formats = [request.get("response_format")]
    text = request.get("text")
    if isinstance(text, dict):
        formats.append(text.get("format"))
    for f in formats:
        if isinstance(f, dict) and f.get("type") == "json_schema":
            nested = f.get("json_schema")
            inner: dict[str, Any] = nested if isinstance(nested, dict) else f
            return inner.get("schema", {})
    return None


def schema_valid(request: Mapping[str, Any], bastion: Answer) -> bool | None:
    schema = answer_schema(request)
    if schema is None:
        return None
    try:
        value = json.loads(bastion.text)
    except (ValueError, RecursionError):
        return False
    return validate(value, schema)


def agreement(request: Mapping[str, Any], openai: Answer, bastion: Answer,
              similarity: float | None) -> dict[str, object]:
    """The access-log `agreement` object: only the figures that apply."""
    out: dict[str, object] = {}
    if similarity is not None:
        out["similarity"] = round(similarity, 4)
    for name, value in (("tools_match", tools_match(request, openai, bastion)),
                        ("schema_valid", schema_valid(request, bastion))):
        if value is not None:
            out[name] = value
    return out


def agrees(figures: Mapping[str, object], threshold: float = SIMILARITY_AGREES) -> bool | None:
    """One pair's verdict for the canary's agreement gate; None when nothing applied."""
    if not figures:
        return None
    similarity = figures.get("similarity")
    if isinstance(similarity, int | float) and similarity < threshold:
        return False
    return figures.get("tools_match") is not False and figures.get("schema_valid") is not False


def embedding_texts(openai: Answer, bastion: Answer) -> tuple[str, str] | None:
    """What to embed for `similarity`: both answers' text, when both have some."""
    if not openai.text.strip() or not bastion.text.strip():
        return None
    return openai.text, bastion.text

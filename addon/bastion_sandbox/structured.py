"""Structured output for the sandbox: a small JSON value that validates against a schema.

`minimal_instance` walks the JSON Schema subset that OpenAI's structured outputs
accept (and that pydantic/zod emit): objects with their required properties, arrays
(`minItems`, `prefixItems`), `enum`, `const`, string/number/integer/boolean/null,
`anyOf`/`oneOf`/`allOf`, type lists and local `$ref`s (`#/$defs/...`). Pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from bastion_sandbox.errors import invalid_request

MAX_DEPTH = 64
_FORMATS = {"date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01", "time": "00:00:00Z",
            "email": "user@example.com", "uri": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "192.0.2.1",
            "ipv6": "2001:db8::1", "hostname": "example.com", "duration": "P1D"}


class UnsupportedSchema(ValueError):
    """A schema the sandbox cannot produce an instance for (a broken `$ref`, a cycle)."""


def minimal_instance(schema: object, root: Mapping[str, Any] | None = None,
                     depth: int = 0) -> Any:
    """A small value valid against `schema` (`root` resolves `$ref`s; default: `schema`)."""
    if depth > MAX_DEPTH:
        raise UnsupportedSchema("schema nests too deeply (or refers to itself without end)")
    if schema is True or not isinstance(schema, Mapping):
        return {}
    root = root if root is not None else schema
    here = _resolved(schema, root)
    if "const" in here:
        return here["const"]
    if isinstance(here.get("enum"), list) and here["enum"]:
        return here["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(here.get(key), list) and here[key]:
            return minimal_instance(here[key][0], root, depth + 1)
    if isinstance(here.get("allOf"), list) and here["allOf"]:
        merged: dict[str, Any] = {}
        for part in here["allOf"]:
            value = minimal_instance(part, root, depth + 1)
            if not isinstance(value, dict):
                return value
            merged.update(value)
        return merged
    kind = here.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in here else "array" if "items" in here else "null"
    return _of_type(str(kind), here, root, depth)


def _resolved(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    for _ in range(MAX_DEPTH):
        if not isinstance(schema.get("$ref"), str):
            return schema
        schema = _follow(schema, root)
    raise UnsupportedSchema("$refs refer to each other without end")


def _follow(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = str(schema["$ref"])
    if not ref.startswith("#"):
        raise UnsupportedSchema(f"only local $refs are supported, got {ref!r}")
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, Mapping) or part not in target:
            raise UnsupportedSchema(f"$ref {ref!r} does not resolve")
        target = target[part]
    if not isinstance(target, Mapping):
        raise UnsupportedSchema(f"$ref {ref!r} is not a schema")
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _of_type(kind: str, here: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if kind == "object":
        found = here.get("properties")
        properties: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        required = [p for p in here.get("required") or [] if isinstance(p, str)]
        return {name: minimal_instance(properties.get(name, {}), root, depth + 1)
                for name in required}
    if kind == "array":
        given = here.get("prefixItems")
        prefix: list[Any] = given if isinstance(given, list) else []
        values = [minimal_instance(s, root, depth + 1) for s in prefix]
        count = int(here.get("minItems") or 0)
        while len(values) < count:
            values.append(minimal_instance(here.get("items", {}), root, depth + 1))
        return values
    if kind == "string":
        text = _FORMATS.get(str(here.get("format")), "")
        return text + "x" * max(0, int(here.get("minLength") or 0) - len(text))
    if kind in ("integer", "number"):
        return _number(here, integer=kind == "integer")
    if kind == "boolean":
        return False
    return None


def _number(here: Mapping[str, Any], *, integer: bool) -> int | float:
    low = here.get("minimum", here.get("exclusiveMinimum"))
    high = here.get("maximum", here.get("exclusiveMaximum"))
    value: float = 0
    if isinstance(low, int | float) and value < low:
        value = low if "minimum" in here else low + 1
    elif isinstance(high, int | float) and value > high:
        value = high if "maximum" in here else high - 1
    return math.ceil(value) if integer else float(value)


def structured_text(kind: object, schema: object, param: str) -> str | None:
    """The reply text for a structured-output request, or None for plain text.

    `kind` is the format's `type` (`json_schema`, `json_object`, `text`); a schema the
    sandbox cannot satisfy is a 400 naming `param`."""
    if kind == "json_schema":
        try:
            return json.dumps(minimal_instance(schema if schema is not None else {}))
        except UnsupportedSchema as e:
            raise invalid_request(f"Invalid schema for '{param}': {e}.", "invalid_value",
                              param) from e
    if kind == "json_object":
        return "{}"
    return None


def chat_structured_text(response_format: object) -> str | None:
    """Chat's `response_format: {type, json_schema: {name, schema, strict}}`."""
    if not isinstance(response_format, Mapping):
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return structured_text(response_format.get("type"), schema, "response_format")


def responses_structured_text(text: object) -> str | None:
    """Responses' `text: {format: {type, name, schema, strict}}`."""
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping):
        return None
    return structured_text(fmt.get("type"), fmt.get("schema"), "text.format")

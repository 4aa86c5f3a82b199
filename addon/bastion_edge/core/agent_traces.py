"""The Agents SDKs' trace uploads (`POST /v1/traces/ingest`), read as plain span records.

The SDKs' BackendSpanExporter posts `{"data": [...]}` with `OpenAI-Beta: traces=v1`;
each entry is a trace (`object: "trace"`: id, workflow_name, group_id, metadata) or a
span (`object: "trace.span"`: id, trace_id, parent_id, started_at, ended_at (ISO 8601),
span_data {type, ...}, error). Spans become descriptions in the OpenTelemetry GenAI
agent conventions (`invoke_agent`, `execute_tool`, `chat`, ...), the SDK's ids kept as
`openai_agents.*` attributes. Tool inputs/outputs and model messages are not carried
over (content stays out of telemetry, as the proxy's own spans do).

Pure: no I/O. Whether an upload is answered here or goes to OpenAI is
`trace_upload_destination`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

INGEST_PATH = "/v1/traces/ingest"
PROVIDER = "openai"
# What the proxy answers an accepted batch: the SDKs only check for a 2xx status.
ACCEPTED_STATUS = 204
_HEX_ID = re.compile(r"(?:trace|span|group)_([0-9a-f]+)")

AttributeValue = str | bool | int | float | list[str]


@dataclass(frozen=True, slots=True)
class AgentSpan:
    """One SDK span as an OpenTelemetry span description."""

    name: str
    start_ns: int | None
    end_ns: int | None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None
    trace_id: int | None = None  # the OTel trace id derived from the SDK's trace id
    span_id: int | None = None  # ... span id from the SDK's span id
    parent_span_id: int | None = None


@dataclass(frozen=True, slots=True)
class Upload:
    """A parsed upload: its spans, and how many entries were not turned into spans."""

    spans: tuple[AgentSpan, ...]
    traces: int  # `object: "trace"` entries (the workflow's header, no times)
    skipped: int


class NotAnUpload(ValueError):
    """The body is not the SDKs' `{"data": [...]}`."""


def is_ingest_path(path: str) -> bool:
    return path.partition("?")[0].rstrip("/") == INGEST_PATH


def trace_upload_destination(request_destination: str) -> str:
    """Where a trace upload goes: with OpenAI when the app's traffic goes there (observe,
    mirror, the OpenAI side of split), else answered by the proxy (`proxy`)."""
    return "openai" if request_destination == "openai" else "proxy"


def parse_upload(raw: bytes) -> Upload:
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise NotAnUpload(f"not JSON: {e}") from e
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise NotAnUpload("expected an object with a `data` array")
    spans, traces, skipped = [], 0, 0
    for entry in data:
        kind = entry.get("object") if isinstance(entry, dict) else None
        if kind == "trace":
            traces += 1
        elif kind == "trace.span" and isinstance(entry, dict):
            spans.append(span_of(entry))
        else:
            skipped += 1
    return Upload(tuple(spans), traces, skipped)


def span_of(entry: Mapping[str, Any]) -> AgentSpan:
    data = entry.get("span_data")
    data = data if isinstance(data, dict) else {}
    kind = str(data.get("type") or "custom")
    name, attributes = _described(kind, data)
    ids = {"openai_agents.trace_id": entry.get("trace_id"),
           "openai_agents.span_id": entry.get("id"),
           "openai_agents.parent_id": entry.get("parent_id"),
           "openai_agents.span_type": kind}
    attributes.update({k: v for k, v in ids.items() if isinstance(v, str)})
    error = entry.get("error")
    message = None
    if isinstance(error, dict):
        message = str(error.get("message") or "error")
        attributes["error.type"] = message
    return AgentSpan(name, _ns(entry.get("started_at")), _ns(entry.get("ended_at")),
                     attributes, message, _hex(entry.get("trace_id"), 32),
                     _hex(entry.get("id"), 16), _hex(entry.get("parent_id"), 16))


def _described(kind: str, data: Mapping[str, Any]) -> tuple[str, dict[str, AttributeValue]]:
    """The span name and GenAI attributes for an SDK span type."""
    attrs: dict[str, AttributeValue] = {}
    name = _text(data.get("name"))
    if kind == "agent":
        attrs |= {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": PROVIDER}
        if name:
            attrs["gen_ai.agent.name"] = name
        for key in ("tools", "handoffs"):
            values = data.get(key)
            if isinstance(values, list):
                attrs[f"openai_agents.{key}"] = [str(v) for v in values]
        if isinstance(data.get("output_type"), str):
            attrs["openai_agents.output_type"] = data["output_type"]
        return (f"invoke_agent {name}" if name else "invoke_agent"), attrs
    if kind == "function":
        attrs |= {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.type": "function"}
        if name:
            attrs["gen_ai.tool.name"] = name
        return (f"execute_tool {name}" if name else "execute_tool"), attrs
    if kind in ("generation", "response"):
        attrs |= {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER}
        model = _text(data.get("model"))
        if model:
            attrs["gen_ai.request.model"] = model
        if isinstance(data.get("response_id"), str):
            attrs["gen_ai.response.id"] = data["response_id"]
        attrs |= _usage(data.get("usage"))
        return (f"chat {model}" if model else "chat"), attrs
    if kind == "handoff":
        for key in ("from_agent", "to_agent"):
            if isinstance(data.get(key), str):
                attrs[f"openai_agents.{key}"] = data[key]
        target = _text(data.get("to_agent"))
        return (f"handoff {target}" if target else "handoff"), attrs
    if kind == "guardrail":
        if name:
            attrs["openai_agents.guardrail.name"] = name
        attrs["openai_agents.guardrail.triggered"] = data.get("triggered") is True
        return (f"guardrail {name}" if name else "guardrail"), attrs
    return (f"{kind} {name}" if name else kind), attrs


def _usage(usage: object) -> dict[str, AttributeValue]:
    if not isinstance(usage, dict):
        return {}
    found: dict[str, AttributeValue] = {}
    for ours, theirs in (("gen_ai.usage.input_tokens", ("input_tokens", "prompt_tokens")),
                         ("gen_ai.usage.output_tokens", ("output_tokens",
                                                         "completion_tokens"))):
        for key in theirs:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                found[ours] = value
                break
    return found


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _ns(value: object) -> int | None:
    """An ISO 8601 time as Unix nanoseconds (a naive time is taken as UTC)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


def _hex(value: object, digits: int) -> int | None:
    """An OTel id from an SDK id (`trace_<32 hex>`, `span_<24 hex>`): its last `digits`
    hex digits; None when it is not one, or all zeros (invalid in OTel)."""
    if not isinstance(value, str):
        return None
    match = _HEX_ID.fullmatch(value)
    if match is None:
        return None
    number = int(match.group(1)[-digits:], 16)
    return number or None

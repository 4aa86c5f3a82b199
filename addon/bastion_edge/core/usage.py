"""Token usage as the upstream reported it, read from a reply. Pure: plain values in and out.

Every OpenAI-shaped reply names its usage in one of two vocabularies:
  chat, completions, embeddings   usage.prompt_tokens / completion_tokens,
                                  prompt_tokens_details.cached_tokens,
                                  completion_tokens_details.reasoning_tokens
  Responses                       usage.input_tokens / output_tokens,
                                  input_tokens_details.cached_tokens,
                                  output_tokens_details.reasoning_tokens
A Responses stream carries it in `response.completed` (`{"type":..., "response": {...}}`),
a chat or completions stream in its last chunk when `stream_options.include_usage` is set.

Nothing here estimates: a figure the upstream did not report stays None, and a reply
without usage gives no `Usage` at all.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from bastion_edge.core.facts import CHAT, COMPLETIONS

# The token directions, as metrics label them and the access log names them.
INPUT = "input"
OUTPUT = "output"
CACHED_INPUT = "cached_input"
REASONING = "reasoning"
DIRECTIONS = (INPUT, OUTPUT, CACHED_INPUT, REASONING)

# What the access log says about where a record's token figures came from.
SOURCE_UPSTREAM = "upstream"  # the upstream's own `usage`
SOURCE_NOT_REPORTED = "not_reported"  # the upstream gave none: no figures, no estimate


class Usage(NamedTuple):
    """The upstream's figures; None where it did not report that one."""

    input: int | None = None
    output: int | None = None
    cached_input: int | None = None
    reasoning: int | None = None

    def counts(self) -> dict[str, int]:
        """The reported figures by direction (unreported ones left out)."""
        return {name: value for name, value in zip(DIRECTIONS, self, strict=True)
                if value is not None}


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _detail(usage: dict[str, Any], details: str, name: str) -> int | None:
    found = usage.get(details)
    return _count(found.get(name)) if isinstance(found, dict) else None


def usage_from_fields(usage: object) -> Usage | None:
    """A `usage` object in either vocabulary; None if it is not one (null, absent)."""
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage or "output_tokens" in usage:  # Responses
        found = Usage(_count(usage.get("input_tokens")), _count(usage.get("output_tokens")),
                      _detail(usage, "input_tokens_details", "cached_tokens"),
                      _detail(usage, "output_tokens_details", "reasoning_tokens"))
    else:  # chat, completions, embeddings
        found = Usage(_count(usage.get("prompt_tokens")),
                      _count(usage.get("completion_tokens")),
                      _detail(usage, "prompt_tokens_details", "cached_tokens"),
                      _detail(usage, "completion_tokens_details", "reasoning_tokens"))
    return found if found != Usage() else None


def usage_of(reply: object) -> Usage | None:
    """The usage in a JSON reply or in one streamed event's object, if it has one."""
    if not isinstance(reply, dict):
        return None
    found = usage_from_fields(reply.get("usage"))
    if found is None and isinstance(reply.get("response"), dict):  # a Responses event
        found = usage_from_fields(reply["response"].get("usage"))
    return found


# A `"usage": {` anywhere in an event: the only events worth parsing for usage (a chat
# stream asked for usage sends `"usage":null` in every chunk but one).
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def may_hold_usage(event_data: bytes) -> bool:
    """Cheap test on a streamed event's data before parsing it."""
    return _USAGE_OBJECT.search(event_data) is not None


def usage_in_json(raw: bytes) -> Usage | None:
    """The usage of a buffered JSON reply, without parsing the whole body: the last
    `"usage": {...}` object is decoded on its own (an embeddings reply is mostly
    vectors; its usage comes last). A key inside a JSON string cannot match: the
    string's quotes would be escaped."""
    end = len(raw)
    while (at := raw.rfind(b'"usage"', 0, end)) >= 0:
        found = _USAGE_OBJECT.match(raw, at)
        if found is not None:
            try:
                value, _ = _DECODER.raw_decode(raw[found.end() - 1:].decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                return None
            return usage_from_fields(value)
        end = at
    return None


_DECODER = json.JSONDecoder()

# The endpoints whose streams report usage only when asked with stream_options.
STREAM_OPTIONS_ENDPOINTS = frozenset({CHAT, COMPLETIONS})


def adds_stream_usage(endpoint: str, body: dict[str, Any], enabled: bool) -> bool:
    """Should the request going upstream ask for the stream's usage chunk? Only for a
    streamed chat or completions request that did not ask itself; the app then gets
    the stream it would have had (see `core/usage_stream.py`)."""
    if not enabled or endpoint not in STREAM_OPTIONS_ENDPOINTS or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return False  # malformed: the upstream's 400 is the app's to see, unchanged
    return not (isinstance(options, dict) and options.get("include_usage") is True)


def with_stream_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of `body` asking for the usage chunk."""
    options = body.get("stream_options")
    return {**body, "stream_options": {**(options if isinstance(options, dict) else {}),
                                       "include_usage": True}}


STREAM_USAGE_NOTE = "stream usage asked upstream, kept from the app"


def model_of(reply: object) -> str | None:
    """The model a reply or streamed event names (a Responses event: its response's)."""
    if not isinstance(reply, dict):
        return None
    model = reply.get("model")
    if model is None and isinstance(reply.get("response"), dict):
        model = reply["response"].get("model")
    return model if isinstance(model, str) else None


_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')


def model_in_json(raw: bytes) -> str | None:
    """The first `"model": "..."` of a buffered reply (the top-level one in OpenAI's
    shapes, which name it before any nested object that could)."""
    found = _MODEL_FIELD.search(raw)
    return found.group(1).decode("utf-8", "replace") if found is not None else None

"""`POST /v1/chat/completions`, non-streamed and streamed (SSE ending in `[DONE]`).

Usage figures are deterministic, so tests can assert them exactly:
prompt tokens = characters // 4 (at least 1), completion tokens = the number of streamed
pieces, cached tokens = the prompt tokens of every message before the last (the
conversation prefix a provider would have cached), reasoning tokens = 0.
A request with `x-sandbox-fixed-id: ID` gets that id and `created: 0`, so two replies
can be compared byte for byte.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bastion_sandbox.content import (
    ToolCall,
    check_prompt,
    choose_tool_call,
    count_chars,
    echo_text,
    estimate_tokens,
    stream_pieces,
    text_of,
    tool_result_text,
)
from bastion_sandbox.errors import invalid_request
from bastion_sandbox.long_stream import long_stream_pieces
from bastion_sandbox.models import ModelKind, require_model
from bastion_sandbox.replies import json_response, new_id
from bastion_sandbox.sse import DONE, SseStream, data_event
from bastion_sandbox.state import json_body
from bastion_sandbox.strict import check_reasoning_fields
from bastion_sandbox.structured import chat_structured_text

PATH = "/v1/chat/completions"


def usage(prompt_tokens: int, completion_tokens: int,
          cached_tokens: int | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:  # chat reports the details, as OpenAI's chat does
        figures["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
        figures["completion_tokens_details"] = {"reasoning_tokens": 0}
    return figures


def cached_tokens(messages: list[Any]) -> int:
    """The prompt tokens of the conversation before its last message (0 for one message)."""
    return estimate_tokens(count_chars(messages[:-1])) if len(messages) > 1 else 0


def fixed_id(request: web.Request) -> str | None:
    return request.headers.get("x-sandbox-fixed-id") or None


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _reply_for(model_id: str, messages: list[Any], tools: object) -> tuple[str, ToolCall | None]:
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return tool_result_text(model_id, text_of(last.get("content"))), None
    user_text = next(
        (
            text_of(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    call = choose_tool_call(tools, user_text) if last.get("role") == "user" else None
    return echo_text(model_id, user_text), call


def _tool_call_json(call: ToolCall, arguments: str) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    model = require_model(body.get("model"), ModelKind.CHAT, PATH)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request(
            "'messages' must be a non-empty array.", "missing_required_parameter", "messages"
        )
    prompt_tokens = check_prompt(model, messages, "messages")
    check_reasoning_fields(body, model.id)
    text, call = _reply_for(model.id, messages, body.get("tools"))
    if call is None:
        text = chat_structured_text(body.get("response_format")) or text
    fixed = fixed_id(request)
    base = {
        "id": fixed or new_id("chatcmpl-"),
        "created": 0 if fixed else int(time.time()),
        "model": model.id,
        "system_fingerprint": None,
    }
    pieces = stream_pieces(call.arguments if call else text)
    cached = cached_tokens(messages)
    if body.get("stream") is True:
        pieces = long_stream_pieces(request, pieces)  # x-sandbox-stream-events
        return await _stream(request, base, pieces, call, (prompt_tokens, cached),
                             include_usage(body))
    if call:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call_json(call, call.arguments)],
        }
    else:
        message = {"role": "assistant", "content": text, "refusal": None}
    return json_response(
        {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if call else "stop",
                }
            ],
            "usage": usage(prompt_tokens, len(pieces), cached),
        }
    )


async def _stream(
    request: web.Request,
    base: dict[str, Any],
    pieces: list[str],
    call: ToolCall | None,
    prompt: tuple[int, int],  # prompt tokens, cached tokens
    with_usage: bool,
) -> web.StreamResponse:
    chunk_base = {**base, "object": "chat.completion.chunk"}
    if with_usage:
        chunk_base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return data_event({**chunk_base, "choices": [choice]})

    sse = SseStream(request)
    await sse.open()
    if call:
        first = {"index": 0, **_tool_call_json(call, "")}
        await sse.send(chunk({"role": "assistant", "content": None, "tool_calls": [first]}))
        for piece in pieces:
            await sse.send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        await sse.send(chunk({"role": "assistant", "content": ""}))
        for piece in pieces:
            await sse.send(chunk({"content": piece}))
    await sse.send(chunk({}, "tool_calls" if call else "stop"))
    if with_usage:
        await sse.send(
            data_event({**chunk_base, "choices": [], "usage": usage(prompt[0], len(pieces),
                                                                    prompt[1])})
        )
    await sse.send(DONE)
    return await sse.finish()

"""`POST /v1/chat/completions`, non-streamed and streamed (SSE ending in `[DONE]`)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bastion_edge.errors import bad_request
from bastion_edge.sandbox.content import (
    ToolCall,
    check_prompt,
    choose_tool_call,
    echo_text,
    stream_pieces,
    text_of,
    tool_result_text,
)
from bastion_edge.sandbox.long_stream import long_stream_pieces
from bastion_edge.sandbox.models import ModelKind, require_model
from bastion_edge.sandbox.replies import json_response, new_id
from bastion_edge.sandbox.sse import DONE, SseStream, data_event
from bastion_edge.sandbox.state import json_body
from bastion_edge.sandbox.strict import check_reasoning_fields
from bastion_edge.sandbox.structured import chat_structured_text

PATH = "/v1/chat/completions"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


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
        raise bad_request(
            "'messages' must be a non-empty array.", "missing_required_parameter", "messages"
        )
    prompt_tokens = check_prompt(model, messages, "messages")
    check_reasoning_fields(body, model.id)
    text, call = _reply_for(model.id, messages, body.get("tools"))
    if call is None:
        text = chat_structured_text(body.get("response_format")) or text
    base = {
        "id": new_id("chatcmpl-"),
        "created": int(time.time()),
        "model": model.id,
        "system_fingerprint": None,
    }
    pieces = stream_pieces(call.arguments if call else text)
    if body.get("stream") is True:
        pieces = long_stream_pieces(request, pieces)  # x-sandbox-stream-events
        return await _stream(request, base, pieces, call, prompt_tokens, include_usage(body))
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
            "usage": usage(prompt_tokens, len(pieces)),
        }
    )


async def _stream(
    request: web.Request,
    base: dict[str, Any],
    pieces: list[str],
    call: ToolCall | None,
    prompt_tokens: int,
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
            data_event({**chunk_base, "choices": [], "usage": usage(prompt_tokens, len(pieces))})
        )
    await sse.send(DONE)
    return await sse.finish()

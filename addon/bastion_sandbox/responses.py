"""`POST /v1/responses`, stateless as at Bastion.

Usage is deterministic: input tokens = characters of instructions and input // 4 (at
least 1), output tokens = the streamed pieces (8 characters each), cached and reasoning 0.

Rejected: a request without `"store": false` (400 `store_must_be_false`) and one with
`previous_response_id` (400 `previous_response_id_not_supported`). Nothing is stored,
so `/v1/responses/{id}` (GET, DELETE, ...) is 404. Streams are `event:`/`data:` pairs
from `response.created` to `response.completed`, without `[DONE]`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bastion_sandbox.content import (
    ToolCall,
    check_prompt,
    choose_tool_call,
    echo_text,
    stream_pieces,
    text_of,
    tool_result_text,
)
from bastion_sandbox.errors import INVALID_REQUEST, BastionError, invalid_request
from bastion_sandbox.models import PERSONA, BastionModel, ModelKind, require_model
from bastion_sandbox.replies import json_response, new_id
from bastion_sandbox.sse import SseStream, named_event
from bastion_sandbox.state import json_body
from bastion_sandbox.strict import check_no_item_references, check_reasoning_fields
from bastion_sandbox.structured import responses_structured_text

PATH = "/v1/responses"


def _last_turn(input_value: object) -> tuple[str, str]:
    """(kind, text) of the last input item: kind is user, tool_result or other."""
    if isinstance(input_value, str):
        return "user", input_value
    if not isinstance(input_value, list) or not input_value:
        return "other", ""
    last = input_value[-1]
    if not isinstance(last, dict):
        return "other", ""
    if last.get("type") == "function_call_output":
        output = last.get("output")
        return "tool_result", output if isinstance(output, str) else text_of(output)
    if last.get("role") == "user" and last.get("type", "message") == "message":
        return "user", text_of(last.get("content"))
    return "other", ""


def _last_user_text(input_value: object) -> str:
    if isinstance(input_value, str):
        return input_value
    if isinstance(input_value, list):
        for item in reversed(input_value):
            if isinstance(item, dict) and item.get("role") == "user":
                return text_of(item.get("content"))
    return ""


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: str, call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": arguments,
    }


def validate(body: dict[str, Any]) -> tuple[BastionModel, int]:
    """Bastion's statelessness rules first, then the model and prompt rules.

    Returns the model and the estimated input tokens.
    """
    if body.get("store") is not False and PERSONA.get() == "bastion":
        raise invalid_request(
            'Bastion\'s /v1/responses is stateless: the request must set "store": false.',
            "store_must_be_false",
            "store",
        )
    if body.get("previous_response_id") is not None:
        raise invalid_request(
            "previous_response_id is not supported: responses are not stored. "
            "Send the conversation so far in 'input'.",
            "previous_response_id_not_supported",
            "previous_response_id",
        )
    model = require_model(body.get("model"), ModelKind.CHAT, PATH)
    if "input" not in body:
        raise invalid_request("'input' is required.", "missing_required_parameter", "input")
    check_no_item_references(body.get("input"))
    check_reasoning_fields(body, model.id)
    tokens = check_prompt(model, [body.get("instructions"), body.get("input")], "input")
    return model, tokens


async def responses(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    model, input_tokens = validate(body)
    input_value = body.get("input")
    kind, text = _last_turn(input_value)
    call = choose_tool_call(body.get("tools"), text) if kind == "user" else None
    if kind == "tool_result":
        reply = tool_result_text(model.id, text)
    else:
        reply = responses_structured_text(body.get("text")) or echo_text(
            model.id, _last_user_text(input_value))
    pieces = stream_pieces(call.arguments if call else reply)
    item_id = new_id("fc_" if call else "msg_")
    if call:
        item = _call_item(item_id, call, call.arguments, "completed")
    else:
        item = _message_item(item_id, reply, "completed")
    created = int(time.time())
    response: dict[str, Any] = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": created,
        "status": "completed",
        "completed_at": created,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": model.id,
        "output": [item],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _usage(input_tokens, len(pieces)),
        "user": body.get("user"),
    }
    if body.get("stream") is not True:
        return json_response(response)
    return await _stream(request, response, item, call, pieces)


async def _stream(
    request: web.Request,
    response: dict[str, Any],
    item: dict[str, Any],
    call: ToolCall | None,
    pieces: list[str],
) -> web.StreamResponse:
    sse = SseStream(request)
    sequence = 0

    async def emit(kind: str, **fields: Any) -> None:
        nonlocal sequence
        await sse.send(named_event(kind, {"type": kind, "sequence_number": sequence, **fields}))
        sequence += 1

    pending = {
        **response,
        "status": "in_progress",
        "completed_at": None,
        "output": [],
        "usage": None,
    }
    item_id = item["id"]
    where = {"item_id": item_id, "output_index": 0}
    await sse.open()
    await emit("response.created", response=pending)
    await emit("response.in_progress", response=pending)
    if call:
        await emit(
            "response.output_item.added",
            output_index=0,
            item=_call_item(item_id, call, "", "in_progress"),
        )
        for piece in pieces:
            await emit("response.function_call_arguments.delta", **where, delta=piece)
        await emit("response.function_call_arguments.done", **where, arguments=call.arguments)
    else:
        text = item["content"][0]["text"]
        part = {**where, "content_index": 0}
        await emit(
            "response.output_item.added",
            output_index=0,
            item=_message_item(item_id, None, "in_progress"),
        )
        await emit("response.content_part.added", **part, part=_text_part(""))
        for piece in pieces:
            await emit("response.output_text.delta", **part, delta=piece, logprobs=[])
        await emit("response.output_text.done", **part, text=text, logprobs=[])
        await emit("response.content_part.done", **part, part=_text_part(text))
    await emit("response.output_item.done", output_index=0, item=item)
    await emit("response.completed", response=response)
    return await sse.finish()


async def stored_response(request: web.Request) -> web.Response:
    raise BastionError(
        404,
        "Responses are not stored at Bastion (store must be false), so there is "
        f"nothing at {request.path}.",
        "response_not_found",
        INVALID_REQUEST,
    )

"""`POST /v1/completions` (legacy text completions), non-streamed and streamed.

Usage figures as chat's (deterministic): prompt characters // 4, one token per piece."""

from __future__ import annotations

import time

from aiohttp import web

from bastion_sandbox.chat import fixed_id, include_usage, usage
from bastion_sandbox.content import check_prompt, echo_text, stream_pieces
from bastion_sandbox.errors import invalid_request
from bastion_sandbox.models import ModelKind, require_model
from bastion_sandbox.replies import json_response, new_id
from bastion_sandbox.sse import DONE, SseStream, data_event
from bastion_sandbox.state import json_body

PATH = "/v1/completions"


def _prompt_text(prompt: object) -> str | None:
    """The text the reply echoes: the (first) prompt string; token arrays as digits."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return first
        if isinstance(first, int):
            return " ".join(str(token) for token in prompt)
        if isinstance(first, list):
            return " ".join(str(token) for token in first)
    return None


async def completions(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    model = require_model(body.get("model"), ModelKind.CHAT, PATH)
    prompt = body.get("prompt")
    source = _prompt_text(prompt)
    if source is None:
        raise invalid_request(
            "'prompt' must be a string or an array.", "missing_required_parameter", "prompt"
        )
    prompt_tokens = check_prompt(model, prompt, "prompt")
    text = echo_text(model.id, source)
    pieces = stream_pieces(text)
    fixed = fixed_id(request)  # tests compare two replies byte for byte
    base = {
        "id": fixed or new_id("cmpl-"),
        "object": "text_completion",
        "created": 0 if fixed else int(time.time()),
        "model": model.id,
        "system_fingerprint": None,
    }
    if body.get("stream") is not True:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
        return json_response(
            {**base, "choices": [choice], "usage": usage(prompt_tokens, len(pieces))}
        )

    def chunk(piece: str, finish_reason: str | None = None) -> bytes:
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return data_event({**base, "choices": [choice]})

    sse = SseStream(request)
    await sse.open()
    for piece in pieces:
        await sse.send(chunk(piece))
    await sse.send(chunk("", "stop"))
    if include_usage(body):
        await sse.send(
            data_event({**base, "choices": [], "usage": usage(prompt_tokens, len(pieces))})
        )
    await sse.send(DONE)
    return await sse.finish()

"""Responses state kept by the proxy: Bastion's `/v1/responses` is stateless.

`ResponsesState` is the mitmproxy addon (it runs after `BastionEdge`); the rest is
plain code: `records` (what is kept), `capture` (request + reply -> record), `chain`
(`previous_response_id` -> a self-contained request), `shapes` (OpenAI's JSON for
retrieve, delete, input_items), `store` / `sqlite_store` / `redis_store`, `crypto`.
"""

from .addon import ResponsesState

__all__ = ["ResponsesState"]

"""Expanding `previous_response_id` into a self-contained request. Pure functions.

The conversation so far is, for each stored turn from the oldest: the input items the
app sent, then the output items the model produced (messages, function calls,
reasoning), verbatim, which is the shape the Responses API accepts back as input.
As at OpenAI, a previous turn's `instructions` are not carried over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion_edge.state.records import Item, StoredResponse


class ChainBroken(LookupError):
    """A turn the chain needs is gone (deleted, expired or evicted)."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


def input_as_items(value: object) -> list[Item]:
    """A request's `input` as a list of items (a bare string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    raise ValueError("`input` must be a string or a list of items")


def conversation(head: StoredResponse, ancestors: Mapping[str, StoredResponse]) -> list[Item]:
    """Every item of the chain ending at `head`, oldest first, `head`'s output last."""
    items: list[Item] = []
    for turn_id in (*head.ancestors, head.id):
        turn = head if turn_id == head.id else ancestors.get(turn_id)
        if turn is None:
            raise ChainBroken(turn_id)
        items += turn.input_items
        items += turn.output_items
    return items


def expand_request(body: Mapping[str, Any], history: list[Item]) -> dict[str, Any]:
    """`body` with the history prepended to `input`, without `previous_response_id`."""
    expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
    expanded["input"] = [*history, *input_as_items(body.get("input"))]
    expanded["store"] = False
    return expanded

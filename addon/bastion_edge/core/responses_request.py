"""The Responses API on a stateless upstream: the request side, as pure functions.

`expand_request` turns a create that names `previous_response_id` into a
self-contained one (the stored conversation prepended to `input`); `turn_from_request`
takes what a create contributes to the record the proxy keeps of it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Item = dict[str, Any]

ANONYMOUS = "anonymous"  # the partition of apps that send no key
RESPONSE_ID = re.compile(r"[A-Za-z0-9_\-.]{1,200}")


def valid_response_id(value: object) -> bool:
    return isinstance(value, str) and RESPONSE_ID.fullmatch(value) is not None


def input_as_items(value: object) -> list[Item]:
    """A request's `input` as a list of items (a bare string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    raise ValueError("`input` must be a string or a list of items")


def expand_request(body: Mapping[str, Any], history: list[Item]) -> dict[str, Any]:
    """`body` with the history prepended to `input`, without `previous_response_id`."""
    expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
    expanded["input"] = [*history, *input_as_items(body.get("input"))]
    expanded["store"] = False
    return expanded


@dataclass(frozen=True, slots=True)
class History:
    """The stored conversation a create continues: its turns' ids and their items."""

    ancestors: tuple[str, ...]  # ids of the stored turns, oldest first (the head last)
    items: list[Item]


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What a create request contributes to its record."""

    partition: str
    previous_response_id: str | None
    ancestors: tuple[str, ...]
    input_items: tuple[Item, ...]
    input_item_ids: tuple[str, ...]
    instructions: object
    metadata: object


def turn_from_request(
    body: Mapping[str, Any], partition: str, ancestors: tuple[str, ...] = ()
) -> TurnRequest:
    """The app's own input items (ids assigned for listing), instructions and metadata."""
    items = tuple(input_as_items(body.get("input")))
    previous = body.get("previous_response_id")
    return TurnRequest(
        partition=partition,
        previous_response_id=previous if isinstance(previous, str) else None,
        ancestors=ancestors,
        input_items=items,
        input_item_ids=tuple(_item_id(item) for item in items),
        instructions=body.get("instructions"),
        metadata=body.get("metadata"),
    )


def _item_id(item: Item) -> str:
    given = item.get("id")
    if isinstance(given, str) and given:
        return given
    prefix = "msg" if item.get("type", "message") == "message" else "item"
    return f"{prefix}_{uuid.uuid4().hex}"

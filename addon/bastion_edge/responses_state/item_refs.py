"""Resolving Responses `item_reference` input items against the proxy's store.

Clients that keep a conversation server-side send earlier items back by id only:
`{"type": "item_reference", "id": "msg_..."}` (the Vercel AI SDK's `openai(...)` does
so for every earlier assistant message while `store` is on). OpenAI resolves the id
from its own store; Bastion keeps nothing, so the proxy puts the stored item itself in
the reference's place before the request goes upstream. Lookups stay within the app's
partition; an id not found there is OpenAI's 404.

`resolve_references` is pure; `stored_items` is the one store round trip it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ApiError
from .chain import input_as_items
from .records import Item, StoredResponse, item_ids_of
from .store import ResponseStore

REFERENCE = "item_reference"


def is_reference(item: Item) -> bool:
    return item.get("type") == REFERENCE


def referenced_ids(items: Iterable[Item]) -> list[str]:
    """The ids the references in `items` name, first occurrence order, no repeats."""
    ids = (item.get("id") for item in items if is_reference(item))
    return list(dict.fromkeys(i for i in ids if isinstance(i, str)))


def items_by_id(records: Iterable[StoredResponse]) -> dict[str, Item]:
    """Every referenceable item of `records` (input items, output items) by its id."""
    found: dict[str, Item] = {}
    for record in records:
        inputs = dict(zip(record.input_item_ids, record.input_items, strict=False))
        outputs = {item["id"]: item for item in record.output_items
                   if isinstance(item.get("id"), str)}
        for item_id in item_ids_of(record):
            item = outputs.get(item_id) or inputs.get(item_id)
            if item is not None:
                found[item_id] = item
    return found


def item_not_found(item_id: object) -> ApiError:
    return ApiError(404, f"Item with id '{item_id}' not found.", "item_not_found",
                    param="input")


def resolve_references(items: Sequence[Item], stored: Mapping[str, Item]) -> list[Item]:
    """`items` with every reference replaced by the stored item it names.

    Raises OpenAI's 404 (`param: input`) for the first reference not in `stored`.
    """
    resolved: list[Item] = []
    for item in items:
        if not is_reference(item):
            resolved.append(item)
            continue
        target = stored.get(item["id"]) if isinstance(item.get("id"), str) else None
        if target is None:
            raise item_not_found(item.get("id"))
        resolved.append(target)
    return resolved


async def stored_items(store: ResponseStore, partition: str,
                       item_ids: Sequence[str]) -> dict[str, Item]:
    """The stored items with these ids in `partition` (missing or expired ones left out)."""
    holders = await store.responses_holding(partition, item_ids)
    records = await store.get_many(partition, sorted(set(holders.values())))
    everything = items_by_id(records.values())
    return {i: everything[i] for i in item_ids if i in everything
            and holders.get(i) in records}


async def body_with_references_resolved(
    raw: bytes, store: ResponseStore, partition: str
) -> tuple[dict[str, Any], int] | None:
    """A create body with its references resolved and how many ids they named; None
    when it has none (the body is then forwarded as it is)."""
    if b'"item_reference"' not in raw:
        return None
    body = json.loads(raw)
    items = input_as_items(body.get("input")) if isinstance(body, dict) else []
    ids = referenced_ids(items)
    if not ids:
        return None
    body["input"] = resolve_references(items, await stored_items(store, partition, ids))
    return body, len(ids)

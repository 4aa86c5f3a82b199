"""Responses `item_reference` input items: which ids a request names, and the request
with each reference replaced by the stored item. Pure.

Clients that keep a conversation server-side send earlier items back by id only:
`{"type": "item_reference", "id": "msg_..."}` (the Vercel AI SDK's `openai(...)` does
so for every earlier assistant message while `store` is on). OpenAI resolves the id
from its own store; Bastion keeps nothing, so the proxy puts the stored item itself in
the reference's place before the request goes upstream. Lookups stay within the app's
partition (`state/item_lookup.py`); an id not found there is OpenAI's 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bastion_edge.core.responses_request import Item
from bastion_edge.errors import ApiError

REFERENCE = "item_reference"


def is_reference(item: Item) -> bool:
    return item.get("type") == REFERENCE


def referenced_ids(items: Iterable[Item]) -> list[str]:
    """The ids the references in `items` name, first occurrence order, no repeats."""
    ids = (item.get("id") for item in items if is_reference(item))
    return list(dict.fromkeys(i for i in ids if isinstance(i, str)))


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

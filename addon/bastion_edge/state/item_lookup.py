"""The store side of `item_reference` resolution: the stored items an app may name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bastion_edge.core.responses_request import Item
from bastion_edge.state.records import StoredResponse, item_ids_of
from bastion_edge.state.responses_store import ResponseStore


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


async def stored_items(store: ResponseStore, partition: str,
                       item_ids: Sequence[str]) -> dict[str, Item]:
    """The stored items with these ids in `partition` (missing or expired ones left out)."""
    holders = await store.responses_holding(partition, item_ids)
    records = await store.get_many(partition, sorted(set(holders.values())))
    everything = items_by_id(records.values())
    return {i: everything[i] for i in item_ids if i in everything
            and holders.get(i) in records}

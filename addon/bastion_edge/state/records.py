"""What is kept per stored response, and its serialized form.

A record holds one turn: the input items the app sent with that request (verbatim, so
they can be replayed upstream), ids for them (OpenAI lists input items by id), and the
response object as the app received it. `ancestors` are the ids of the turns it
continued, oldest first, so a chain is fetched in one round trip, not one per turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bastion_edge.core.responses_request import Item


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    partition: str  # sha256 of the app's key (or ANONYMOUS): one app never sees another's
    created_at: float
    previous_response_id: str | None
    ancestors: tuple[str, ...]  # ids of the turns this one continued, oldest first
    input_items: tuple[Item, ...]
    input_item_ids: tuple[str, ...]
    response: Item  # the response object as the app saw it

    @property
    def output_items(self) -> list[Item]:
        output = self.response.get("output")
        return [item for item in output if isinstance(item, dict)] \
            if isinstance(output, list) else []


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """The plain, never encrypted part of a record: enough to walk and expire chains."""

    created_at: float
    previous_response_id: str | None
    ancestors: tuple[str, ...]

    def to_json(self) -> bytes:
        return json.dumps({"created_at": self.created_at,
                           "previous_response_id": self.previous_response_id,
                           "ancestors": list(self.ancestors)}).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> RecordMeta:
        data = json.loads(raw)
        return cls(float(data["created_at"]), data.get("previous_response_id"),
                   tuple(data.get("ancestors") or ()))


def meta_of(record: StoredResponse) -> RecordMeta:
    return RecordMeta(record.created_at, record.previous_response_id, record.ancestors)


def body_of(record: StoredResponse) -> bytes:
    """The app's data: input items, their ids and the response (encrypted when configured)."""
    return json.dumps({"input_items": list(record.input_items),
                       "input_item_ids": list(record.input_item_ids),
                       "response": record.response},
                      separators=(",", ":"), ensure_ascii=False).encode()


def record_from(partition: str, response_id: str, meta: RecordMeta, body: bytes) -> StoredResponse:
    data = json.loads(body)
    return StoredResponse(
        id=response_id, partition=partition, created_at=meta.created_at,
        previous_response_id=meta.previous_response_id, ancestors=meta.ancestors,
        input_items=tuple(data["input_items"]), input_item_ids=tuple(data["input_item_ids"]),
        response=data["response"])


def item_ids_of(record: StoredResponse) -> tuple[str, ...]:
    """The ids an `item_reference` can name in this record: the app's own input items
    (references themselves excluded: they hold no content) and the output items."""
    ids = [item_id for item, item_id in zip(record.input_items, record.input_item_ids,
                                            strict=False)
           if item.get("type") != "item_reference"]
    ids += [item["id"] for item in record.output_items if isinstance(item.get("id"), str)]
    return tuple(dict.fromkeys(ids))

"""OpenAI's JSON shapes for what the proxy answers from its store. Pure functions.

  GET    /v1/responses/{id}              the response object
  DELETE /v1/responses/{id}              {"id", "object": "response", "deleted": true}
  GET    /v1/responses/{id}/input_items  {"object": "list", "data", "first_id",
                                          "last_id", "has_more"}; limit 1-100 (20),
                                          order asc|desc (desc), after, before
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bastion_edge.core.responses_request import Item
from bastion_edge.errors import ApiError, bad_request
from bastion_edge.state.records import StoredResponse

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class ListParams:
    limit: int = DEFAULT_LIMIT
    order: Order = "desc"
    after: str | None = None
    before: str | None = None


def list_params(query: Mapping[str, str]) -> ListParams:
    """The pagination parameters of an input_items request; 400 for bad values."""
    limit = DEFAULT_LIMIT
    if "limit" in query:
        text = query["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise bad_request(f"Invalid 'limit': expected an integer from 1 to {MAX_LIMIT}, "
                              f"got {text!r}.", "invalid_value", "limit")
        limit = int(text)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.",
                          "invalid_value", "order")
    return ListParams(limit, "asc" if order == "asc" else "desc",
                      query.get("after") or None, query.get("before") or None)


def retrieved(record: StoredResponse) -> Item:
    return dict(record.response)


def deleted(response_id: str) -> Item:
    return {"id": response_id, "object": "response", "deleted": True}


def not_found(response_id: str, param: str | None = None) -> ApiError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    code = "previous_response_not_found" if param == "previous_response_id" \
        else "response_not_found"
    return ApiError(404, f"{what} with id '{response_id}' not found.", code, param=param)


def context_items(head: StoredResponse, ancestors: Mapping[str, StoredResponse]) -> list[Item]:
    """The items used to generate `head`: earlier turns' inputs and outputs, then its input.

    Turns no longer stored are left out (listing is informational; continuing a chain
    with a missing turn is refused instead).
    """
    items: list[Item] = []
    for turn_id in head.ancestors:
        turn = ancestors.get(turn_id)
        if turn is None:
            continue
        items += _inputs(turn)
        items += [listing_item(item, f"{turn.id}_out{i}")
                  for i, item in enumerate(turn.output_items)]
    items += _inputs(head)
    return items


def _inputs(turn: StoredResponse) -> list[Item]:
    return [listing_item(item, item_id)
            for item, item_id in zip(turn.input_items, turn.input_item_ids, strict=False)]


def listing_item(item: Item, fallback_id: str) -> Item:
    """An item as the input_items list shows it: with an id, message content as parts."""
    out = dict(item)
    if not isinstance(out.get("id"), str):
        out["id"] = fallback_id
    if out.get("type", "message") == "message" and "role" in out:
        out["type"] = "message"
        content = out.get("content")
        if isinstance(content, str):
            if out["role"] == "assistant":
                out["content"] = [{"type": "output_text", "text": content, "annotations": []}]
            else:
                out["content"] = [{"type": "input_text", "text": content}]
        out.setdefault("status", "completed")
    return out


def input_items_page(items: list[Item], params: ListParams) -> Item:
    ordered = items if params.order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    low = ids.index(params.after) + 1 if params.after in ids else 0
    high = ids.index(params.before) if params.before in ids else len(ordered)
    if (params.after and params.after not in ids) or (params.before and params.before not in ids):
        low, high = 0, 0  # an unknown cursor: nothing after or before it
    if params.before and not params.after:
        start = max(low, high - params.limit)
        page, has_more = ordered[start:high], start > low
    else:
        end = min(high, low + params.limit)
        page, has_more = ordered[low:end], end < high
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }

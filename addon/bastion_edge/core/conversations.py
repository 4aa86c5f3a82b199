"""The Conversations API on a stateless upstream: OpenAI's shapes, ids and errors, pure.

  /v1/conversations                       POST create (initial `items`, `metadata`)
  /v1/conversations/{id}                  GET retrieve, POST update (metadata), DELETE
  /v1/conversations/{id}/items            GET list (after, limit, order, include), POST add
  /v1/conversations/{id}/items/{item_id}  GET retrieve, DELETE (answers the conversation)

`responses.create(conversation=...)`: the conversation's items are prepended to the
input, the upstream gets `store: false` and no `conversation`; when the response
completes its input and output items are appended to the conversation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bastion_edge.core.responses_request import Item, input_as_items
from bastion_edge.errors import ApiError, bad_request

PREFIX = "/v1/conversations"
CONVERSATION_ID = re.compile(r"conv_[A-Za-z0-9_\-]{1,200}")
ITEM_ID = re.compile(r"[A-Za-z0-9_\-.]{1,200}")
MAX_ITEMS_PER_CALL = 20  # OpenAI's limit on `items` in create and items.create
MAX_METADATA_PAIRS = 16
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Output item types and their id prefixes (OpenAI's); anything else gets `item_`.
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                "reasoning": "rs", "file_search_call": "fs", "web_search_call": "ws",
                "computer_call": "cu", "computer_call_output": "cuo",
                "custom_tool_call": "ctc", "custom_tool_call_output": "ctco"}


class Action(StrEnum):
    CREATE = "create"
    RETRIEVE = "retrieve"
    UPDATE = "update"
    DELETE = "delete"
    ITEMS_LIST = "items.list"
    ITEMS_CREATE = "items.create"
    ITEM_RETRIEVE = "items.retrieve"
    ITEM_DELETE = "items.delete"


@dataclass(frozen=True, slots=True)
class Call:
    """A request to the Conversations API, classified from its method and path."""

    action: Action
    conversation_id: str | None = None
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Item:
        return {"id": self.id, "object": "conversation", "created_at": self.created_at,
                "metadata": dict(self.metadata)}


def is_conversations_path(path: str) -> bool:
    bare = path.partition("?")[0].rstrip("/")
    return bare == PREFIX or bare.startswith(PREFIX + "/")


def classify(method: str, path: str) -> Call:
    """The call a method and path make; OpenAI's 404 for a path it does not serve."""
    bare = path.partition("?")[0].rstrip("/")
    parts = bare.removeprefix(PREFIX).strip("/").split("/") if bare != PREFIX else []
    shape = (len(parts), parts[1] if len(parts) > 1 else None, method.upper())
    actions = {
        (0, None, "POST"): Action.CREATE,
        (1, None, "GET"): Action.RETRIEVE,
        (1, None, "POST"): Action.UPDATE,
        (1, None, "DELETE"): Action.DELETE,
        (2, "items", "GET"): Action.ITEMS_LIST,
        (2, "items", "POST"): Action.ITEMS_CREATE,
        (3, "items", "GET"): Action.ITEM_RETRIEVE,
        (3, "items", "DELETE"): Action.ITEM_DELETE,
    }
    action = actions.get(shape)
    if action is None:
        raise ApiError(404, f"Invalid URL ({method.upper()} {bare})", "unknown_url")
    return Call(action, parts[0] if parts else None, parts[2] if len(parts) > 2 else None)


# ---------------------------------------------------------------------- ids, errors


def new_conversation_id() -> str:
    return f"conv_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


def valid_conversation_id(value: object) -> bool:
    return isinstance(value, str) and CONVERSATION_ID.fullmatch(value) is not None


def not_found(conversation_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"Conversation with id '{conversation_id}' not found.", "not_found",
                    param=param)


def item_not_found(item_id: str) -> ApiError:
    return ApiError(404, f"Item with id '{item_id}' not found.", "not_found")


def with_ids(items: Sequence[Item]) -> list[Item]:
    """Items as a conversation keeps them: each with an id (kept when given) and, for
    messages, the content as a list of parts and a status."""
    return [_normalized(item) for item in items]


def _normalized(item: Item) -> Item:
    kept = dict(item)
    kind = kept.setdefault("type", "message")
    if not isinstance(kept.get("id"), str) or not kept["id"]:
        kept["id"] = f"{_ID_PREFIXES.get(str(kind), 'item')}_{uuid.uuid4().hex}"
    if kind == "message":
        content = kept.get("content")
        if isinstance(content, str):
            part = "output_text" if kept.get("role") == "assistant" else "input_text"
            kept["content"] = [{"type": part, "text": content}]
        kept.setdefault("status", "completed")
    return kept


# ---------------------------------------------------------------------- request bodies


def metadata_of(body: Mapping[str, Any]) -> dict[str, str]:
    """`metadata` as OpenAI takes it: up to 16 string pairs (null: none)."""
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad_request("Invalid 'metadata': expected an object of string values.",
                          "invalid_type", "metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} pairs.",
                          "invalid_value", "metadata")
    return dict(metadata)


def items_of(body: Mapping[str, Any], required: bool) -> list[Item]:
    """`items` of a create (optional) or items.create (required): at most 20 objects."""
    items = body.get("items")
    if items is None and not required:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise bad_request("Invalid 'items': expected an array of objects.", "invalid_type",
                          "items")
    if len(items) > MAX_ITEMS_PER_CALL:
        raise bad_request(f"Invalid 'items': array too long. Expected an array with maximum "
                          f"length {MAX_ITEMS_PER_CALL}, but got an array with length "
                          f"{len(items)} instead.", "array_above_max_length", "items")
    return with_ids(items)


# ---------------------------------------------------------------------- answers


def deleted(conversation_id: str) -> Item:
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@dataclass(frozen=True, slots=True)
class ListParams:
    after: str | None = None
    limit: int = DEFAULT_LIMIT
    order: str = "desc"
    include: tuple[str, ...] = ()


def list_params(query: Sequence[tuple[str, str]]) -> ListParams:
    """`after`, `limit` (1..100, default 20), `order` (asc|desc, default desc), `include`."""
    values: dict[str, str] = {}
    include: list[str] = []
    for name, value in query:
        if name in ("include", "include[]"):
            include.append(value)
        else:
            values[name] = value
    order = values.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid 'order': expected 'asc' or 'desc', got '{order}'.",
                          "invalid_value", "order")
    raw_limit = values.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise bad_request(f"Invalid 'limit': expected an integer between 1 and {MAX_LIMIT}.",
                          "invalid_value", "limit")
    return ListParams(values.get("after") or None, int(raw_limit), order, tuple(include))


def items_page(items: Sequence[Item], params: ListParams) -> Item:
    """One page of a conversation's items (stored oldest first), OpenAI's list shape."""
    ordered = list(items) if params.order == "asc" else list(reversed(items))
    if params.after is not None:
        ids = [item.get("id") for item in ordered]
        if params.after not in ids:
            raise item_not_found(params.after)
        ordered = ordered[ids.index(params.after) + 1:]
    page = ordered[:params.limit]
    return list_of(page, has_more=len(ordered) > len(page))


def list_of(items: Sequence[Item], has_more: bool = False) -> Item:
    return {"object": "list", "data": list(items),
            "first_id": items[0].get("id") if items else None,
            "last_id": items[-1].get("id") if items else None, "has_more": has_more}


def find_item(items: Sequence[Item], item_id: str) -> Item:
    for item in items:
        if item.get("id") == item_id:
            return item
    raise item_not_found(item_id)


# ---------------------------------------------------------------------- responses.create


def conversation_wanted(body: Mapping[str, Any]) -> str | None:
    """The conversation a Responses create names (a string id or `{"id": ...}`), if any;
    OpenAI's 400 when it also names `previous_response_id`."""
    value = body.get("conversation")
    if value is None:
        return None
    conversation_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(conversation_id, str):
        raise bad_request("Invalid 'conversation': expected a string id or an object with "
                          "an 'id'.", "invalid_type", "conversation")
    if body.get("previous_response_id") is not None:
        raise bad_request("Mutually exclusive parameters: Ensure you are only providing one "
                          "of: 'previous_response_id' or 'conversation'.",
                          "mutually_exclusive_parameters", "conversation")
    return conversation_id


@dataclass(frozen=True, slots=True)
class ConversationTurn:
    """What a create in a conversation appends once its response completes."""

    partition: str
    conversation_id: str
    input_items: tuple[Item, ...]


def expand(body: Mapping[str, Any], history: Sequence[Item], partition: str,
           conversation_id: str) -> tuple[dict[str, Any], ConversationTurn]:
    """The self-contained body for the upstream (history first, `store: false`, no
    `conversation`), and the turn to append when the response completes."""
    try:
        new_items = input_as_items(body.get("input"))
    except ValueError as e:
        raise bad_request(f"Invalid 'input': {e}", "invalid_value", "input") from e
    expanded = {k: v for k, v in body.items() if k != "conversation"}
    expanded["input"] = [_replayable(item) for item in history] + new_items
    expanded["store"] = False
    return expanded, ConversationTurn(partition, conversation_id, tuple(with_ids(new_items)))


def _replayable(item: Item) -> Item:
    """A stored item as input, as the app would send it: an input message without the id
    and status the conversation gave it (outputs are replayed verbatim, as for
    `previous_response_id`)."""
    if item.get("type") == "message" and item.get("role") != "assistant":
        return {k: v for k, v in item.items() if k not in ("id", "status")}
    return item


def appended_items(turn: ConversationTurn, response: Mapping[str, Any]) -> list[Item] | None:
    """The items to append for a completed response: its input, then its output (None
    when the object is not a completed response)."""
    if response.get("object") != "response" or response.get("status") not in (
            "completed", "incomplete"):
        return None
    output = response.get("output")
    outputs = [item for item in output if isinstance(item, dict)] \
        if isinstance(output, list) else []
    return [*turn.input_items, *with_ids(outputs)]

"""`item_reference` resolution: pure functions over stored records."""

from __future__ import annotations

import pytest

from bastion_edge.core.item_refs import referenced_ids, resolve_references
from bastion_edge.errors import ApiError
from bastion_edge.state.item_lookup import items_by_id
from bastion_edge.state.records import StoredResponse

ASSISTANT = {"id": "msg_a1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}
CALL = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather",
        "arguments": "{}"}
USER = {"type": "message", "role": "user", "content": "Capital of France?"}


def turn(rid: str, inputs: tuple[dict[str, object], ...], ids: tuple[str, ...],
         output: list[dict[str, object]]) -> StoredResponse:
    return StoredResponse(id=rid, partition="app", created_at=1.0, previous_response_id=None,
                          ancestors=(), input_items=inputs, input_item_ids=ids,
                          response={"id": rid, "object": "response", "output": output})


def test_references_are_replaced_by_the_stored_items_in_place() -> None:
    stored = items_by_id([turn("resp_1", (USER,), ("msg_u1",), [ASSISTANT, CALL])])
    items = [{"type": "item_reference", "id": "msg_u1"},
             {"type": "item_reference", "id": "msg_a1"},
             {"type": "item_reference", "id": "fc_1"},
             {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    assert referenced_ids(items) == ["msg_u1", "msg_a1", "fc_1"]
    assert resolve_references(items, stored) == [USER, ASSISTANT, CALL, items[3]]


def test_unknown_reference_is_openais_404() -> None:
    with pytest.raises(ApiError) as raised:
        resolve_references([USER, {"type": "item_reference", "id": "msg_gone"}], {})
    error = raised.value
    assert (error.status, error.code, error.param) == (404, "item_not_found", "input")
    assert "msg_gone" in error.message


def test_a_stored_reference_is_not_itself_a_target() -> None:
    """Turn 2 stored its reference verbatim; the id still means turn 1's message."""
    first = turn("resp_1", (USER,), ("msg_u1",), [ASSISTANT])
    second = turn("resp_2", ({"type": "item_reference", "id": "msg_a1"},), ("msg_a1",), [])
    assert items_by_id([second, first])["msg_a1"] == ASSISTANT


def test_no_references_no_change() -> None:
    assert referenced_ids([USER]) == []
    assert resolve_references([USER], {}) == [USER]

"""The Responses chain expander and item_reference resolution under arbitrary input:
results or the documented errors (ValueError -> 400 invalid_value, ApiError 404)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from strategies import JSON_VALUES

from bastion_edge.core.item_refs import referenced_ids, resolve_references
from bastion_edge.core.responses_request import expand_request, input_as_items, turn_from_request
from bastion_edge.errors import ApiError

ITEMS = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("item_reference"),
                           "id": st.sampled_from(["msg_1", "msg_2", "fc_9"]) | JSON_VALUES}),
    st.fixed_dictionaries({"type": st.just("message"), "role": st.just("user"),
                           "content": JSON_VALUES}),
    JSON_VALUES), max_size=6)
STORED = st.dictionaries(st.sampled_from(["msg_1", "msg_2"]),
                         st.fixed_dictionaries({"type": st.just("message"), "id": st.text()}),
                         max_size=2)


@given(JSON_VALUES | ITEMS, st.lists(st.dictionaries(st.text(), JSON_VALUES), max_size=4))
def test_expander_returns_items_or_value_error(value: Any, history: list[Any]) -> None:
    body = {"input": value, "previous_response_id": "resp_1", "model": "gpt-4o"}
    try:
        expanded = expand_request(body, history)
    except ValueError:
        return
    assert "previous_response_id" not in expanded
    assert expanded["input"][:len(history)] == history
    assert expanded["store"] is False
    turn_from_request(body, "p")


@given(ITEMS, STORED)
def test_references_resolve_or_404(value: list[Any], stored: dict[str, Any]) -> None:
    items = input_as_items(value)
    wanted = referenced_ids(items)
    try:
        resolved = resolve_references(items, stored)
    except ApiError as e:
        assert e.status == 404
        assert e.code == "item_not_found"
        return
    assert len(resolved) == len(items)
    assert all(i in stored for i in wanted)
    assert resolve_references(resolved, stored) == resolved or any(
        r.get("type") == "item_reference" for r in resolved)

"""OpenAI's shapes for retrieve, delete and input_items, pagination included."""

from __future__ import annotations

from typing import Any

import pytest

from bastion_edge.errors import ApiError
from bastion_edge.state import responses_shapes as shapes
from bastion_edge.state.records import StoredResponse
from bastion_edge.state.responses_shapes import ListParams, input_items_page, list_params


def items(n: int) -> list[dict[str, Any]]:
    return [{"id": f"i{k}", "type": "message"} for k in range(n)]


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["data"]]


def test_defaults_are_desc_and_twenty() -> None:
    assert list_params({}) == ListParams(20, "desc", None, None)
    page = input_items_page(items(25), list_params({}))
    assert ids(page)[:2] == ["i24", "i23"] and len(page["data"]) == 20
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == ("i24", "i5")
    assert page["object"] == "list"


def test_after_walks_forward_until_has_more_is_false() -> None:
    seen: list[str] = []
    after = None
    while True:
        page = input_items_page(items(5), ListParams(2, "asc", after, None))
        seen += ids(page)
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ["i0", "i1", "i2", "i3", "i4"]


def test_before_gives_the_page_just_before() -> None:
    page = input_items_page(items(6), ListParams(2, "asc", None, "i4"))
    assert ids(page) == ["i2", "i3"] and page["has_more"] is True
    page = input_items_page(items(6), ListParams(5, "asc", "i0", "i3"))
    assert ids(page) == ["i1", "i2"] and page["has_more"] is False


def test_unknown_cursor_and_empty_list() -> None:
    assert ids(input_items_page(items(3), ListParams(after="nope"))) == []
    empty = input_items_page([], ListParams())
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"},
                                   {"order": "sideways"}])
def test_bad_list_parameters_are_400(query: dict[str, str]) -> None:
    with pytest.raises(ApiError) as info:
        list_params(query)
    assert info.value.status == 400 and info.value.param in query


def test_listed_items_have_ids_and_content_parts() -> None:
    head = StoredResponse(
        id="r2", partition="p", created_at=0, previous_response_id="r1", ancestors=("r1", "r0"),
        input_items=({"role": "user", "content": "two"},), input_item_ids=("msg_b",),
        response={"output": []})
    first = StoredResponse(
        id="r1", partition="p", created_at=0, previous_response_id=None, ancestors=(),
        input_items=({"role": "user", "content": "one"},), input_item_ids=("msg_a",),
        response={"output": [{"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": "1"}]}]})
    listed = shapes.context_items(head, {"r1": first})  # r0 is gone: left out
    assert [i["id"] for i in listed] == ["msg_a", "r1_out0", "msg_b"]
    assert listed[0] == {"id": "msg_a", "type": "message", "role": "user", "status": "completed",
                         "content": [{"type": "input_text", "text": "one"}]}


def test_errors_and_deleted_shapes() -> None:
    assert shapes.deleted("resp_1") == {"id": "resp_1", "object": "response", "deleted": True}
    error = shapes.not_found("resp_1", "previous_response_id")
    assert (error.status, error.code, error.param) == (404, "previous_response_not_found",
                                                       "previous_response_id")
    assert shapes.not_found("resp_1").code == "response_not_found"

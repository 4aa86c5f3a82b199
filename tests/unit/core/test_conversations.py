"""The Conversations API's pure side: paths, ids, bodies, pages, errors, expansion."""

from __future__ import annotations

import pytest

from bastion_edge.core import conversations as conv
from bastion_edge.errors import ApiError


def ids(page: dict[str, object]) -> list[str]:
    data = page["data"]
    assert isinstance(data, list)
    return [item["id"] for item in data]


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/conversations", conv.Call(conv.Action.CREATE)),
    ("GET", "/v1/conversations/conv_1", conv.Call(conv.Action.RETRIEVE, "conv_1")),
    ("POST", "/v1/conversations/conv_1", conv.Call(conv.Action.UPDATE, "conv_1")),
    ("DELETE", "/v1/conversations/conv_1/", conv.Call(conv.Action.DELETE, "conv_1")),
    ("GET", "/v1/conversations/conv_1/items?limit=2",
     conv.Call(conv.Action.ITEMS_LIST, "conv_1")),
    ("POST", "/v1/conversations/conv_1/items", conv.Call(conv.Action.ITEMS_CREATE, "conv_1")),
    ("GET", "/v1/conversations/conv_1/items/msg_1",
     conv.Call(conv.Action.ITEM_RETRIEVE, "conv_1", "msg_1")),
    ("DELETE", "/v1/conversations/conv_1/items/msg_1",
     conv.Call(conv.Action.ITEM_DELETE, "conv_1", "msg_1")),
])
def test_classify(method: str, path: str, expected: conv.Call) -> None:
    assert conv.is_conversations_path(path)
    assert conv.classify(method, path) == expected


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/conversations"), ("PUT", "/v1/conversations/conv_1"),
    ("GET", "/v1/conversations/conv_1/other"), ("POST", "/v1/conversations/c/items/i/x")])
def test_unknown_url_is_404(method: str, path: str) -> None:
    with pytest.raises(ApiError) as caught:
        conv.classify(method, path)
    assert caught.value.status == 404 and caught.value.code == "unknown_url"


def test_not_conversations_paths() -> None:
    assert not conv.is_conversations_path("/v1/conversationsx")
    assert not conv.is_conversations_path("/v1/responses")


def test_ids_have_openai_prefixes() -> None:
    cid = conv.new_conversation_id()
    assert cid.startswith("conv_") and conv.valid_conversation_id(cid)
    assert cid != conv.new_conversation_id()
    assert not conv.valid_conversation_id("resp_1")
    items = conv.with_ids([{"role": "user", "content": "hi"},
                           {"type": "function_call", "call_id": "c", "name": "f",
                            "arguments": "{}"},
                           {"type": "message", "id": "msg_given", "role": "assistant",
                            "content": "ok"}])
    assert items[0]["id"].startswith("msg_") and items[0]["type"] == "message"
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert items[0]["status"] == "completed"
    assert items[1]["id"].startswith("fc_")
    assert items[2]["id"] == "msg_given"
    assert items[2]["content"] == [{"type": "output_text", "text": "ok"}]


def test_conversation_and_deleted_shapes() -> None:
    assert conv.Conversation("conv_1", 5, {"a": "b"}).to_json() == {
        "id": "conv_1", "object": "conversation", "created_at": 5, "metadata": {"a": "b"}}
    assert conv.deleted("conv_1") == {"id": "conv_1", "object": "conversation.deleted",
                                      "deleted": True}


def test_not_found_is_openai_404() -> None:
    error = conv.not_found("conv_x")
    assert error.status == 404 and error.code == "not_found"
    assert error.envelope()["error"]["message"] == "Conversation with id 'conv_x' not found."


def test_metadata_and_items_validated() -> None:
    assert conv.metadata_of({}) == {}
    assert conv.metadata_of({"metadata": {"a": "b"}}) == {"a": "b"}
    for bad in ({"metadata": {"a": 1}}, {"metadata": "x"},
                {"metadata": {str(i): "v" for i in range(17)}}):
        with pytest.raises(ApiError) as caught:
            conv.metadata_of(bad)
        assert caught.value.status == 400 and caught.value.param == "metadata"
    assert conv.items_of({}, required=False) == []
    with pytest.raises(ApiError):
        conv.items_of({}, required=True)
    with pytest.raises(ApiError) as caught:
        conv.items_of({"items": [{"role": "user", "content": "x"}] * 21}, required=True)
    assert caught.value.code == "array_above_max_length"


def test_items_page_orders_and_paginates() -> None:
    items = [{"id": f"msg_{n}"} for n in range(5)]
    first = conv.items_page(items, conv.list_params([("limit", "2")]))  # desc by default
    assert ids(first) == ["msg_4", "msg_3"] and first["has_more"] is True
    assert first["first_id"] == "msg_4" and first["last_id"] == "msg_3"
    second = conv.items_page(items, conv.list_params([("limit", "2"), ("after", "msg_3")]))
    assert ids(second) == ["msg_2", "msg_1"] and second["has_more"] is True
    last = conv.items_page(items, conv.list_params([("after", "msg_1")]))
    assert ids(last) == ["msg_0"] and last["has_more"] is False
    asc = conv.items_page(items, conv.list_params([("order", "asc"), ("after", "msg_2")]))
    assert ids(asc) == ["msg_3", "msg_4"] and asc["has_more"] is False
    empty = conv.items_page([], conv.list_params([]))
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}
    params = conv.list_params([("include[]", "message.output_text.logprobs")])
    assert params.include == ("message.output_text.logprobs",)


@pytest.mark.parametrize("query", [[("order", "up")], [("limit", "0")], [("limit", "101")],
                                   [("limit", "x")]])
def test_bad_list_params_are_400(query: list[tuple[str, str]]) -> None:
    with pytest.raises(ApiError) as caught:
        conv.list_params(query)
    assert caught.value.status == 400


def test_find_item() -> None:
    assert conv.find_item([{"id": "a"}], "a") == {"id": "a"}
    with pytest.raises(ApiError) as caught:
        conv.find_item([{"id": "a"}], "b")
    assert caught.value.status == 404


def test_conversation_wanted() -> None:
    assert conv.conversation_wanted({"input": "x"}) is None
    assert conv.conversation_wanted({"conversation": "conv_1"}) == "conv_1"
    assert conv.conversation_wanted({"conversation": {"id": "conv_2"}}) == "conv_2"
    with pytest.raises(ApiError) as caught:
        conv.conversation_wanted({"conversation": "conv_1", "previous_response_id": "resp_1"})
    assert caught.value.status == 400 and caught.value.param == "conversation"
    with pytest.raises(ApiError):
        conv.conversation_wanted({"conversation": 5})


def test_expand_prepends_history_and_drops_conversation() -> None:
    history = [*conv.with_ids([{"role": "user", "content": "first"}]),
               {"type": "message", "id": "msg_out", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "answer"}]}]
    body = {"model": "gpt-4o", "conversation": {"id": "conv_1"}, "input": "second",
            "store": True}
    expanded, turn = conv.expand(body, history, "app", "conv_1")
    assert "conversation" not in expanded and expanded["store"] is False
    assert expanded["model"] == "gpt-4o"
    assert expanded["input"] == [
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "first"}]},
        history[1],
        {"type": "message", "role": "user", "content": "second"}]
    assert turn.partition == "app" and turn.conversation_id == "conv_1"
    assert [i["content"] for i in turn.input_items] == [
        [{"type": "input_text", "text": "second"}]]
    assert body["conversation"] == {"id": "conv_1"}  # the app's body is left alone


def test_appended_items_on_completion_only() -> None:
    _, turn = conv.expand({"input": "hi"}, [], "app", "conv_1")
    output = [{"type": "message", "id": "msg_r", "role": "assistant",
               "content": [{"type": "output_text", "text": "yo"}]},
              {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]
    done = {"object": "response", "status": "completed", "output": output}
    items = conv.appended_items(turn, done)
    assert items is not None
    assert [i["type"] for i in items] == ["message", "message", "function_call"]
    assert items[1]["id"] == "msg_r" and items[2]["id"].startswith("fc_")
    assert conv.appended_items(turn, {**done, "status": "failed"}) is None
    assert conv.appended_items(turn, {"object": "error"}) is None

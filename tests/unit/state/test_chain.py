"""Expanding previous_response_id: the stored chain, verbatim, ahead of the new input."""

from __future__ import annotations

from typing import Any

import pytest

from bastion_edge.core.responses_request import expand_request, input_as_items
from bastion_edge.state.chain import ChainBroken, conversation
from bastion_edge.state.records import StoredResponse

REASONING = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text",
                                                            "text": "thinking"}],
             "encrypted_content": "gAAAA-opaque"}
CALL = {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_9",
        "name": "get_weather", "arguments": '{"city":"Paris"}'}
IMAGE_INPUT = {"role": "user", "content": [
    {"type": "input_text", "text": "what is this?"},
    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}]}


def turn(rid: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
         ancestors: tuple[str, ...] = ()) -> StoredResponse:
    return StoredResponse(
        id=rid, partition="p", created_at=1.0,
        previous_response_id=ancestors[-1] if ancestors else None, ancestors=ancestors,
        input_items=tuple(inputs), input_item_ids=tuple(f"in_{i}" for i in range(len(inputs))),
        response={"id": rid, "object": "response", "output": outputs})


def test_bare_string_input_becomes_one_user_message() -> None:
    assert input_as_items("hi") == [{"type": "message", "role": "user", "content": "hi"}]
    assert input_as_items(None) == []
    with pytest.raises(ValueError):
        input_as_items(42)


def test_conversation_is_oldest_first_inputs_then_outputs() -> None:
    first = turn("r1", [IMAGE_INPUT], [REASONING, CALL])
    output = {"id": "fco_x", "type": "function_call_output", "call_id": "call_9",
              "output": "sunny"}
    second = turn("r2", [output], [{"id": "msg_2", "type": "message", "role": "assistant",
                                   "content": [{"type": "output_text", "text": "Sunny."}]}],
                  ancestors=("r1",))
    items = conversation(second, {"r1": first})
    assert items == [IMAGE_INPUT, REASONING, CALL, output, second.output_items[0]]


def test_missing_turn_breaks_the_chain() -> None:
    third = turn("r3", [], [], ancestors=("r1", "r2"))
    with pytest.raises(ChainBroken) as info:
        conversation(third, {"r1": turn("r1", [], [])})
    assert info.value.missing == "r2"


def test_expanded_request_is_self_contained_and_leaves_the_rest_alone() -> None:
    body = {"model": "gpt-oss-120b", "input": "and now?", "previous_response_id": "r1",
            "store": True, "tools": [{"type": "function", "name": "f"}], "stream": True}
    history = [IMAGE_INPUT, REASONING, CALL]
    expanded = expand_request(body, history)
    assert "previous_response_id" not in expanded and expanded["store"] is False
    assert expanded["input"] == [*history, {"type": "message", "role": "user",
                                            "content": "and now?"}]
    assert expanded["tools"] == body["tools"] and expanded["stream"] is True
    assert body["previous_response_id"] == "r1"  # the original is not mutated

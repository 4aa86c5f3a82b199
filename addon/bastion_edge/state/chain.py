"""The stored conversation behind a `previous_response_id`. Pure functions.

The conversation so far is, for each stored turn from the oldest: the input items the
app sent, then the output items the model produced (messages, function calls,
reasoning), verbatim, which is the shape the Responses API accepts back as input.
As at OpenAI, a previous turn's `instructions` are not carried over.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion_edge.core.responses_request import Item
from bastion_edge.state.records import StoredResponse


class ChainBroken(LookupError):
    """A turn the chain needs is gone (deleted, expired or evicted)."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


def conversation(head: StoredResponse, ancestors: Mapping[str, StoredResponse]) -> list[Item]:
    """Every item of the chain ending at `head`, oldest first, `head`'s output last."""
    items: list[Item] = []
    for turn_id in (*head.ancestors, head.id):
        turn = head if turn_id == head.id else ancestors.get(turn_id)
        if turn is None:
            raise ChainBroken(turn_id)
        items += turn.input_items
        items += turn.output_items
    return items

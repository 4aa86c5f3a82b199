"""What the body step needs before it can plan, one need at a time (as h11's
`next_event()` answers NEED_DATA): the caller fetches what is asked, adds it to what it
`Gathered`, and asks again until the answer is `Ready`. The order (the stored
conversation first, then the items it and the body reference) lives here only.

    got = Gathered()
    need = next_need(plan, body, got)
    while not isinstance(need, Ready):
        if isinstance(need, NeedHistory):
            got = got.with_history(await store.history(need.partition, need.response_id))
        else:
            got = got.with_items(await store.items(need.partition, list(need.item_ids)))
        need = next_need(plan, body, got)
    plan = plan_body(plan, body, ..., need.history, ..., need.referenced, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bastion_edge.core.plan import Plan
from bastion_edge.core.planner import history_wanted, references_wanted
from bastion_edge.core.request import ParsedBody
from bastion_edge.core.responses_request import History, Item


@dataclass(frozen=True, slots=True)
class NeedHistory:
    """The stored conversation ending at `response_id` (`previous_response_id`)."""

    partition: str
    response_id: str


@dataclass(frozen=True, slots=True)
class NeedItemRefs:
    """The stored items the body (and its history) name by `item_reference`."""

    partition: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything is here: call `plan_body` with these."""

    history: History | None = None
    referenced: Mapping[str, Item] | None = None


Need = NeedHistory | NeedItemRefs | Ready


@dataclass(frozen=True, slots=True)
class Gathered:
    """What the caller fetched so far."""

    history: History | None = None
    referenced: Mapping[str, Item] | None = None
    history_read: bool = False
    items_read: bool = False

    def with_history(self, history: History) -> Gathered:
        return replace(self, history=history, history_read=True)

    def with_items(self, items: Mapping[str, Item]) -> Gathered:
        return replace(self, referenced=items, items_read=True)


NOTHING = Gathered()


def next_need(plan: Plan, body: ParsedBody, got: Gathered = NOTHING) -> Need:
    """The next thing to fetch for this plan's body step, or `Ready`.

    Raises `ApiError` for a malformed `previous_response_id` (refuse the request)."""
    if not got.history_read:
        previous = history_wanted(plan, body)
        if previous is not None:
            return NeedHistory(plan.partition, previous)
    if not got.items_read:
        wanted = references_wanted(plan, body, got.history)
        if wanted:
            return NeedItemRefs(plan.partition, tuple(wanted))
    return Ready(got.history, got.referenced)

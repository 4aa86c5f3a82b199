"""Per-request state shared by the middlewares and handlers, and the JSON body reader."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from bastion_sandbox.errors import invalid_request

if TYPE_CHECKING:
    from bastion_sandbox.faults import FaultPlan
    from bastion_sandbox.journal import JournalEntry

SANDBOX_PREFIX = "/sandbox/"


@dataclass(slots=True)
class RequestState:
    plan: FaultPlan | None = None
    entry: JournalEntry | None = None
    body: dict[str, Any] | None = None
    aborted: bool = False


try:
    _STATE: Any = web.RequestKey("bastion_sandbox.state", RequestState)
except AttributeError:  # aiohttp before RequestKey existed
    _STATE = "bastion_sandbox.state"


def is_sandbox_path(path: str) -> bool:
    """The sandbox's own endpoints (journal, image files): no auth, no faults, no journal."""
    return path.startswith(SANDBOX_PREFIX)


def state_of(request: web.Request) -> RequestState:
    state = request.get(_STATE)
    if state is None:
        state = request[_STATE] = RequestState()
    return cast(RequestState, state)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (parsed once), or a 400 envelope."""
    state = state_of(request)
    if state.body is not None:
        return state.body
    raw = await request.read()
    try:
        parsed = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise invalid_request(
            "We could not parse the JSON body of your request.", "invalid_json"
        ) from None
    if not isinstance(parsed, dict):
        raise invalid_request("The request body must be a JSON object.", "invalid_json")
    state.body = parsed
    return parsed

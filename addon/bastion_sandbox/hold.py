"""Holding requests at the door, so a test acts while a run is provably in progress.

A test that must stop, cancel or hand over a batch half-way used to pace it with a
real rate limit and hope to act in time. With a hold, requests to one path wait at
the sandbox's door (before the journal sees them) until the test lets them in:

    PUT    /sandbox/hold        {"path": "/v1/chat/completions", "pass": 3}
                                the next 3 requests to `path` go on; later ones wait
    POST   /sandbox/hold/pass   one more may go on (the longest waiting, if any)
    GET    /sandbox/hold        {"path", "allowed", "passed", "waiting"}
    DELETE /sandbox/hold        off: every waiting request goes on, none waits after
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bastion_sandbox.errors import invalid_request
from bastion_sandbox.replies import json_response
from bastion_sandbox.state import is_sandbox_path

HOLD_PATH = "/sandbox/hold"


@dataclass(slots=True)
class Hold:
    path: str | None = None  # None: nothing is held
    allowed: int = 0
    passed: int = 0
    waiting: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "allowed": self.allowed, "passed": self.passed,
                "waiting": self.waiting}

    def _may_go(self) -> bool:
        return self.path is None or self.passed < self.allowed

    async def enter(self) -> None:
        """Wait at the door until let in (or the hold is lifted)."""
        async with self.changed:
            self.waiting += 1
            try:
                await self.changed.wait_for(self._may_go)
            finally:
                self.waiting -= 1
            if self.path is not None:
                self.passed += 1

    async def set(self, path: str | None, allowed: int = 0) -> None:
        async with self.changed:
            self.path, self.allowed, self.passed = path, allowed, 0
            self.changed.notify_all()

    async def let_one_more(self) -> None:
        async with self.changed:
            self.allowed += 1
            self.changed.notify_all()


@web.middleware
async def hold_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    hold = request.app[HOLD_KEY]
    if hold.path is not None and request.path == hold.path:
        await hold.enter()
    return await handler(request)


async def put_hold(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    path = body.get("path") if isinstance(body, dict) else None
    allowed = body.get("pass", 0) if isinstance(body, dict) else None
    if not isinstance(path, str) or not path.startswith("/") or is_sandbox_path(path) \
            or isinstance(allowed, bool) or not isinstance(allowed, int) or allowed < 0:
        raise invalid_request('The body must be {"path": "/v1/...", "pass": N >= 0}.',
                              "invalid_sandbox_hold")
    hold = request.app[HOLD_KEY]
    await hold.set(path, allowed)
    return json_response(hold.to_json())


async def pass_one(request: web.Request) -> web.Response:
    hold = request.app[HOLD_KEY]
    await hold.let_one_more()
    return json_response(hold.to_json())


async def get_hold(request: web.Request) -> web.Response:
    return json_response(request.app[HOLD_KEY].to_json())


async def lift_hold(request: web.Request) -> web.Response:
    hold = request.app[HOLD_KEY]
    await hold.set(None)
    return json_response(hold.to_json())


def install(app: web.Application) -> None:
    app[HOLD_KEY] = Hold()
    app.router.add_route("PUT", HOLD_PATH, put_hold)
    app.router.add_route("POST", HOLD_PATH + "/pass", pass_one)
    app.router.add_route("GET", HOLD_PATH, get_hold)
    app.router.add_route("DELETE", HOLD_PATH, lift_hold)


HOLD_KEY = web.AppKey("bastion_sandbox.hold", Hold)

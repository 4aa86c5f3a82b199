"""The canary as a child addon of the root: a background tick, the percent the request
path reads, and the exchanges it counts (the root, proxy/addon.py, wires all three).

Dependencies come in as callables (the current rules, the confdir, where a decision line
goes), so the child reaches into no other addon. The store opens on the first tick that
finds `cutover.mode: canary` (a reload may switch to it) and closes on `done`. A store
failure is logged and counted, and the proxy keeps serving at the last percent it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from bastion_edge.config.schema import Rules
from bastion_edge.core.canary import CanaryState, Decision
from bastion_edge.state.canary_control import CanaryControl
from bastion_edge.state.canary_store import (
    CanaryStoreError,
    canary_store_location,
    open_canary_store,
)
from bastion_edge.telemetry.access_log import AccessRecord
from bastion_edge.telemetry.cutover_metrics import CutoverMetrics, cutover_record

log = logging.getLogger(__name__)
TICK_SECONDS = 5.0
# Test-only: the e2e tests shorten the tick (seconds, > 0); not part of the interface.
TICK_ENV = "BASTION_EDGE_TEST_CANARY_TICK_SECONDS"
SIDES = ("bastion", "openai")


def canary_tick_seconds(environ: Mapping[str, str]) -> float:
    """`TICK_SECONDS`, or the test-only override in `TICK_ENV`."""
    try:
        seconds = float(environ.get(TICK_ENV, ""))
    except ValueError:
        return TICK_SECONDS
    return seconds if seconds > 0 else TICK_SECONDS


class CanaryChild:
    def __init__(self, rules: Callable[[], Rules], confdir: Callable[[], Path],
                 registry: CollectorRegistry, write_line: Callable[[str], None] | None = None,
                 tick_seconds: float = TICK_SECONDS) -> None:
        self._rules = rules
        self._confdir = confdir
        self._write_line = write_line
        self.metrics = CutoverMetrics(registry)
        self.tick_seconds = tick_seconds
        self.control: CanaryControl | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self._rules().cutover.mode == "canary"

    @property
    def percent(self) -> float:
        """Bastion's share for the request path: 0 until the state was first read."""
        return self.control.percent if self.control is not None and self.active else 0.0

    def observe_record(self, record: AccessRecord) -> None:
        """An exchange's access-log record: served by Bastion or OpenAI, it counts."""
        if self.control is None or not self.active or record.destination not in SIDES:
            return
        failed = record.status is None or record.status >= 400
        self.control.observe(record.destination, failed, record.duration_ms)

    def running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.control is not None:
            with contextlib.suppress(CanaryStoreError):
                await self.control.flush()
            await self.control.store.close()
            self.control = None

    async def _loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.tick_seconds)

    async def tick(self) -> Decision | None:
        """One round: open the store if needed, then decide (None when not canary)."""
        if not self.active:
            return None
        try:
            if self.control is None:
                rules = self._rules()
                location = canary_store_location(rules.responses_state.store, self._confdir())
                self.control = CanaryControl(open_canary_store(location),
                                             lambda: self._rules().cutover.canary,
                                             self._decided)
            decision = await self.control.tick()
        except CanaryStoreError as e:
            log.warning("canary store: %s (serving at %g %%)", e, self.percent)
            return None
        self.metrics.at(self.control.percent)
        return decision

    def _decided(self, decision: Decision, state: CanaryState) -> None:
        self.metrics.decided(decision)
        log.info("canary %s: %g %% -> %g %% (%s)", decision.action, decision.from_percent,
                 decision.to_percent, decision.reason)
        if self._write_line is not None:
            self._write_line(cutover_record(decision, time.time(), state.step))

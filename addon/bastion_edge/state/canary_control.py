"""The canary at work: the store, the rules and core.canary's decisions put together.

One `CanaryControl` per process. The request path reads `percent` (a cached value,
never a store call) and reports each finished exchange with `observe`; a background
task calls `tick()` every few seconds: it writes the buffered observations, re-reads
the state (another worker or replica may have moved it), decides on the step's
evidence and, for anything but `wait`, moves the state by compare-and-set, so a
decision is made and logged once however many workers decide at the same time.
`act` is a human's promote, rollback, pause or resume (`bastion-edge cutover ...`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bastion_edge.config.canary_rules import CanaryRules
from bastion_edge.core.canary import (
    CanaryState,
    Decision,
    GateResult,
    ManualEvent,
    apply,
    decide,
    evaluate_gates,
    manual,
    step_key,
)
from bastion_edge.state.canary_store import CanaryStore, Observation

MAX_BUFFERED = 10_000  # observations kept while the store is unreachable


@dataclass(frozen=True, slots=True)
class Status:
    state: CanaryState
    percent: float
    next: Decision  # what the canary would decide now
    history: list[dict[str, object]]
    gates: tuple[GateResult, ...] = ()  # each gate on the current step's evidence


class CanaryControl:
    def __init__(self, store: CanaryStore, rules: Callable[[], CanaryRules],
                 on_decision: Callable[[Decision, CanaryState], None] = lambda d, s: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._rules = rules
        self._on_decision = on_decision
        self._clock = clock
        self._state: CanaryState | None = None
        self._pending: list[Observation] = []

    @property
    def percent(self) -> float:
        """Bastion's share now, as of the last read (0 before the first)."""
        return self._state.percent(self._rules()) if self._state is not None else 0.0

    def observe(self, side: str, failed: bool, duration_ms: float | None,
                agreed: bool | None = None) -> None:
        if len(self._pending) < MAX_BUFFERED:
            self._pending.append(Observation(side, failed, duration_ms, agreed))

    async def refresh(self) -> CanaryState:
        self._state = await self.store.state(self._clock())
        return self._state

    async def flush(self) -> None:
        """Write buffered observations to the current step (kept if the store fails)."""
        if not self._pending:
            return
        state = self._state or await self.refresh()
        pending, self._pending = self._pending, []
        try:
            await self.store.record(step_key(state), pending)
        except Exception:
            self._pending = (pending + self._pending)[:MAX_BUFFERED]
            raise

    async def tick(self) -> Decision:
        """Flush, decide, and move the canary when the decision says so."""
        await self.flush()
        state = await self.refresh()
        rules, now = self._rules(), self._clock()
        decision = decide(state, await self.store.step_stats(step_key(state)), rules, now)
        if decision.action == "wait" or (decision.action == "hold" and not decision.gates):
            return decision  # nothing to record: still waiting, or already stopped
        after = apply(state, decision, rules, now)
        if await self.store.transition(state, after, decision, now):
            self._state = after
            self._on_decision(decision, after)
        else:
            await self.refresh()
        return decision

    async def act(self, event: ManualEvent) -> tuple[CanaryState, Decision]:
        """A human's event, applied whatever another worker does meanwhile (retried on a
        lost compare-and-set)."""
        rules = self._rules()
        while True:
            now = self._clock()
            state = await self.refresh()
            after, decision = manual(state, event, rules, now)
            if await self.store.transition(state, after, decision, now):
                self._state = after
                self._on_decision(decision, after)
                return after, decision

    async def status(self, history: int = 10) -> Status:
        state = await self.refresh()
        rules, now = self._rules(), self._clock()
        stats = await self.store.step_stats(step_key(state))
        return Status(state, state.percent(rules), decide(state, stats, rules, now),
                      await self.store.decisions(history), evaluate_gates(stats, rules))

"""Per-app quotas in the proxy, a child addon of `BastionEdge` (`clients.apps[].quota`).

It owns the counter store (`state/quota_store.py`): SQLite in the confdir, or Redis
when the Responses state store is Redis (one setting, `responses_state.store` or
`bastion_responses_store`, serves both), opened only while some app has a quota, and
flushed about once a second. Quotas themselves are read from the current rules on
every request, so a reload that raises or lowers one takes effect on the next request
with the counters kept.

The request path asks `admit` once the plan is known and before anything goes
upstream; the reply path puts `headers(verdict)` on the reply; the exchange's end
calls `settle` with what the upstream reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from bastion_edge.config.quota_rules import Quota
from bastion_edge.config.rules import Rules
from bastion_edge.core.plan import Destination, Plan
from bastion_edge.core.quota import (
    Admitted,
    Rejected,
    Unavailable,
    Verdict,
    estimate_tokens,
    max_output_of,
    rate_limit_headers,
    rejection_error,
    settle,
    tokens_reported,
    unavailable_error,
)
from bastion_edge.core.request import ParsedBody
from bastion_edge.core.usage import Usage as ReportedUsage
from bastion_edge.core.usage import usage_of
from bastion_edge.errors import ApiError
from bastion_edge.proxy.exchange import Exchange
from bastion_edge.proxy.shared import Shared
from bastion_edge.state.quota_store import (
    FLUSH_SECONDS,
    QuotaGuard,
    QuotaStoreError,
    open_quota_store,
    quota_store_location,
)
from bastion_edge.telemetry.quota_metrics import QuotaMetrics

log = logging.getLogger("bastion_edge")

UPSTREAM = (Destination.BASTION, Destination.OPENAI, Destination.TTS)  # model calls
OUTAGE_LOG_SECONDS = 10.0  # one "quota store failed" line per this many seconds at most


def any_quota(rules: Rules) -> bool:
    clients = rules.clients
    return clients.default_quota.limits_anything or any(
        app.quota is not None and app.quota.limits_anything for app in clients.apps)


class QuotaKeeper:
    name = "bastion_quotas"

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.metrics = QuotaMetrics(shared.metrics.registry, shared.metrics.app_label)
        self.guard: QuotaGuard | None = None
        self.location: str | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_outage_log = 0.0
        shared.on_rules(self._rules_changed)

    # ---------------------------------------------------------------- lifecycle

    def configure(self, updated: set[str]) -> None:
        if updated & {"bastion_responses_store", "bastion_rules", "confdir"}:
            try:
                self._apply(self.shared.rules)
            except (QuotaStoreError, ValueError) as e:
                raise exceptions.OptionsError(f"bastion-edge quota store: {e}") from e

    def _rules_changed(self, rules: Rules, reloaded: bool) -> None:
        if not reloaded:
            return  # configure follows
        self.metrics.forget_apps()
        try:
            self._apply(rules)
        except (QuotaStoreError, ValueError) as e:
            log.error("bastion-edge: quota store not changed: %s", e)

    def _apply(self, rules: Rules) -> None:
        """Open, keep or close the store for these rules; the outage mode follows them."""
        location: str | None = None
        if any_quota(rules):
            setting = getattr(ctx.options, "bastion_responses_store", "") \
                or rules.responses_state.store
            location = quota_store_location(
                setting, Path(os.path.expanduser(ctx.options.confdir)))
        if location != self.location:
            old, self.guard, self.location = self.guard, None, location
            if location is not None:
                self.guard = QuotaGuard(open_quota_store(location),
                                        rules.clients.quota_store_outage, self._outage)
            if old is not None:
                self._retire(old)
        if self.guard is not None:
            self.guard.mode = rules.clients.quota_store_outage

    def _retire(self, old: QuotaGuard) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                await old.flush()
                await old.store.close()
        with contextlib.suppress(RuntimeError):  # no loop (tests): nothing pending
            asyncio.get_running_loop().create_task(close())

    def running(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def done(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self.guard is not None:
            await self.guard.flush()
            await self.guard.store.close()
            self.guard = None
            self.location = None

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if self.guard is not None:
                try:
                    await self.guard.flush()
                except Exception:  # never let the flusher die
                    log.exception("bastion-edge: quota flush failed")

    def _outage(self, operation: str) -> None:
        mode = self.guard.mode if self.guard is not None else "fail_open"
        self.metrics.store_failed(operation, mode)
        now = time.monotonic()
        if now - self._last_outage_log >= OUTAGE_LOG_SECONDS:
            self._last_outage_log = now
            log.warning("bastion-edge: quota store %s failed (%s): %s", self.location,
                        operation, mode)

    # ---------------------------------------------------------------- per request

    def quota_of(self, app: str | None) -> Quota | None:
        """The quota to admit `app`'s request by, None when nothing limits it."""
        if self.guard is None or app is None:
            return None
        quota = self.shared.rules.clients.quota_of(app)
        return quota if quota.limits_anything else None

    async def admit(self, app: str, quota: Quota, estimate: int,
                    give_up_at: float | None = None) -> Verdict:
        """Admit now, or (`give_up_at`: batch lines) once the quota has room."""
        guard = self.guard
        assert guard is not None
        if give_up_at is None:
            verdict = await guard.admit(app, quota, estimate)
        else:
            verdict = await guard.admit_when_possible(app, quota, estimate, give_up_at)
        self.metrics.observe(app, verdict)
        return verdict

    def settle(self, app: str | None, verdict: Verdict | None, usage: ReportedUsage | None,
               status: int | None) -> None:
        """The exchange is over: correct its estimate by the upstream's report."""
        if app is None or not isinstance(verdict, Admitted) or self.guard is None:
            return
        self.guard.debit(app, verdict, settle(verdict.estimate, tokens_reported(usage), status))

    def finished(self, exchange: Exchange, status: int | None) -> None:
        """The recorder's end of an exchange (replies, errors, refusals)."""
        if exchange.quota is not None:
            self.settle(exchange.plan.facts.app, exchange.quota, exchange.usage, status)

    # ---------------------------------------------------------------- batch lines

    async def admit_line(self, app: str | None, plan: Plan, body: bytes,
                         give_up_at: float) -> tuple[ApiError | None, Verdict | None]:
        """A batch line draws from its creator's quota at the quota's pace: it waits for
        room until the batch expires. An error: the line's result (429 or 503)."""
        quota = self.quota_of(app)
        if app is None or quota is None or plan.route.destination not in UPSTREAM:
            return None, None
        verdict = await self.admit(app, quota, estimate_of(plan, ParsedBody(body)), give_up_at)
        if isinstance(verdict, Rejected):
            return rejection_error(verdict, app), verdict
        if isinstance(verdict, Unavailable):
            return unavailable_error(app), verdict
        return None, verdict

    def settle_line(self, app: str | None, verdict: Verdict | None, reply: object,
                    status: int | None) -> None:
        self.settle(app, verdict, usage_of(reply), status)


def estimate_of(plan: Plan, body: ParsedBody | None) -> int:
    """The tokens a request is admitted by: its prompt plus the output it may ask for;
    speech is counted as a request only (its tokens are not reported)."""
    if plan.route.destination is Destination.TTS:
        return 0
    fields = body.json_or_none() if body is not None else None
    return estimate_tokens(plan.facts.prompt_tokens, max_output_of(fields or {}))


def put_rate_limit_headers(headers: http.Headers, verdict: Verdict) -> None:
    """OpenAI's `x-ratelimit-*` (and `retry-after` on a refusal) for the app's quota,
    replacing any Bastion sent: those describe the shared Bastion key, not the app."""
    ours = rate_limit_headers(verdict)
    if not ours:
        return
    for name in [n for n in headers if n.lower().startswith("x-ratelimit-")]:
        del headers[name]
    for name, value in ours:
        headers[name] = value

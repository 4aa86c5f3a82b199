"""Per-app quotas: the decision over plain values (no clock, no store).

An app's `Quota` limits requests per minute, tokens per minute and tokens per day.
Windows are fixed and aligned on the clock (a minute starts at a multiple of 60 s of
Unix time, a day at 00:00 UTC), so every worker and replica counting in a shared store
agrees on which window a request falls in without talking to each other.

A request is admitted by an *estimate* of its tokens (prompt tokens plus the output
it may generate, `estimate_tokens`), which is reserved at once; when the upstream
reports the real usage, `settle` gives the correction to add (negative: a refund).
The store applies `admit` atomically with the reservation, so N requests per minute
means exactly N, whatever the number of processes.

Replies carry OpenAI's `x-ratelimit-*` headers (`rate_limit_headers`): limit,
remaining and time to reset, the reset as OpenAI writes it (`"1s"`, `"6m0s"`,
`"20ms"`); a rejection adds `retry-after` (whole seconds) and `retry-after-ms`, which
the openai SDKs read before retrying.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from bastion_edge.config.quota_rules import OutageMode, Quota
from bastion_edge.core.usage import Usage as ReportedUsage
from bastion_edge.errors import SERVER_ERROR, ApiError

MINUTE_SECONDS = 60
DAY_SECONDS = 86_400
RATE_LIMIT_CODE = "rate_limit_exceeded"
UNAVAILABLE_CODE = "quota_store_unavailable"
UNAVAILABLE_RETRY_SECONDS = 1.0

Kind = Literal["requests", "tokens"]  # OpenAI's error `type` for a rate limit
Window = Literal["minute", "day"]


class Windows(NamedTuple):
    """The fixed windows holding an instant: minute and UTC day numbers since the epoch.
    (Windows, Usage and the verdicts are NamedTuples: built on every request, they cost
    a third of a frozen dataclass.)"""

    minute: int
    day: int


def windows_at(now: float) -> Windows:
    return Windows(int(now // MINUTE_SECONDS), int(now // DAY_SECONDS))


def seconds_to_minute_end(now: float) -> float:
    return MINUTE_SECONDS - now % MINUTE_SECONDS


def seconds_to_day_end(now: float) -> float:
    return DAY_SECONDS - now % DAY_SECONDS


class Usage(NamedTuple):
    """An app's counters in the windows holding one instant."""

    requests_this_minute: int = 0
    tokens_this_minute: int = 0
    tokens_today: int = 0

    def plus(self, requests: int, tokens: int) -> Usage:
        return Usage(self.requests_this_minute + requests, self.tokens_this_minute + tokens,
                     self.tokens_today + tokens)


class Admitted(NamedTuple):
    """Let through; `usage` includes this request (one request, `estimate` tokens).
    `unmetered`: the store was unreachable and the outage mode is fail_open."""

    quota: Quota
    usage: Usage
    estimate: int
    windows: Windows
    now: float
    unmetered: bool = False


class Rejected(NamedTuple):
    """Over a quota: nothing goes upstream. `retry_after` None: the request can never
    fit (its estimate alone is beyond the limit), so waiting does not help."""

    kind: Kind
    window: Window
    limit: int
    used: int
    requested: int
    retry_after: float | None
    quota: Quota
    usage: Usage
    now: float


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The store failed and the outage mode is fail_closed."""

    retry_after: float = UNAVAILABLE_RETRY_SECONDS


Verdict = Admitted | Rejected | Unavailable


OUTPUT_CAP_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def max_output_of(body: Mapping[str, Any]) -> int | None:
    """The most output a request body asks for (chat, completions, Responses), if any."""
    for name in OUTPUT_CAP_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def estimate_tokens(prompt_tokens: int, max_output_tokens: int | None) -> int:
    """What a request is admitted by: its prompt plus the most output it asks for
    (`max_output_of`), as OpenAI counts it."""
    return max(0, prompt_tokens) + max(0, max_output_tokens or 0)


def tokens_reported(usage: ReportedUsage | None) -> int | None:
    """The tokens a reply spent by the upstream's report (input + output), None if it
    reported neither."""
    if usage is None or (usage.input is None and usage.output is None):
        return None
    return (usage.input or 0) + (usage.output or 0)


def admit(quota: Quota, usage_now: Usage, estimate: int, now: float) -> Admitted | Rejected:
    """One request costing one request and `estimate` tokens, against `usage_now` (the
    counters before it). A token limit needs room for at least one token, so a request
    with a zero estimate is still refused once the tokens are spent. Checked in order:
    requests per minute, tokens per minute, tokens per day (the first exceeded is named).
    The Redis store's script makes the same comparisons (`state/quota_redis.py`)."""
    cost = estimate if estimate > 1 else 1
    limit = quota.requests_per_minute
    if limit is not None and usage_now.requests_this_minute + 1 > limit:
        return _rejected("requests", "minute", limit, usage_now.requests_this_minute, 1,
                         quota, usage_now, now)
    limit = quota.tokens_per_minute
    if limit is not None and usage_now.tokens_this_minute + cost > limit:
        return _rejected("tokens", "minute", limit, usage_now.tokens_this_minute, cost,
                         quota, usage_now, now)
    limit = quota.tokens_per_day
    if limit is not None and usage_now.tokens_today + cost > limit:
        return _rejected("tokens", "day", limit, usage_now.tokens_today, cost,
                         quota, usage_now, now)
    return Admitted(quota, usage_now.plus(1, estimate), estimate, windows_at(now), now)


def _rejected(kind: Kind, window: Window, limit: int, used: int, requested: int,
              quota: Quota, usage_now: Usage, now: float) -> Rejected:
    reset = seconds_to_minute_end(now) if window == "minute" else seconds_to_day_end(now)
    return Rejected(kind, window, limit, used, requested,
                    None if requested > limit else reset, quota, usage_now, now)


def outage_verdict(mode: OutageMode, quota: Quota, now: float) -> Admitted | Unavailable:
    """What a store failure means for a request: let through unmetered, or refuse."""
    if mode == "fail_open":
        return Admitted(quota, Usage(), 0, windows_at(now), now, unmetered=True)
    return Unavailable()


def settle(estimate: int, reported_total: int | None, upstream_status: int | None) -> int:
    """The tokens to add once the reply is over (negative: give back). The upstream's
    reported usage replaces the estimate; without a report, an error reply (no 2xx)
    spent nothing and is refunded, and a success (e.g. a stream cut short before its
    usage chunk) keeps the estimate."""
    if reported_total is not None:
        return max(0, reported_total) - estimate
    if upstream_status is None or not 200 <= upstream_status < 300:
        return -estimate
    return 0


# ---------------------------------------------------------------- OpenAI's wire formats

def openai_duration(seconds: float) -> str:
    """A reset time as OpenAI writes it (Go's duration format, to the millisecond):
    `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`; `0s` for nothing left to wait."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def retry_after_headers(seconds: float) -> list[tuple[str, str]]:
    """`retry-after` in whole seconds (rounded up, at least 1) and `retry-after-ms`."""
    return [("retry-after", str(max(1, math.ceil(seconds - 1e-9)))),
            ("retry-after-ms", str(max(1, math.ceil(seconds * 1000 - 1e-6))))]


def rate_limit_headers(verdict: Verdict) -> list[tuple[str, str]]:
    """OpenAI's `x-ratelimit-*` headers for a reply (and `retry-after` on a rejection).
    Tokens report the per-minute limit, else the per-day one; an unlimited dimension,
    an unmetered admission or a store outage has no headers of its own."""
    if isinstance(verdict, Unavailable):
        return retry_after_headers(verdict.retry_after)
    headers: list[tuple[str, str]] = []
    if isinstance(verdict, Admitted) and verdict.unmetered:
        return headers
    quota, usage, now = verdict.quota, verdict.usage, verdict.now
    minute_reset = openai_duration(seconds_to_minute_end(now))
    if quota.requests_per_minute is not None:
        headers += _triple("requests", quota.requests_per_minute,
                           usage.requests_this_minute, minute_reset)
    if quota.tokens_per_minute is not None:
        headers += _triple("tokens", quota.tokens_per_minute, usage.tokens_this_minute,
                           minute_reset)
    elif quota.tokens_per_day is not None:
        headers += _triple("tokens", quota.tokens_per_day, usage.tokens_today,
                           openai_duration(seconds_to_day_end(now)))
    if isinstance(verdict, Rejected) and verdict.retry_after is not None:
        headers += retry_after_headers(verdict.retry_after)
    return headers


def _triple(name: str, limit: int, used: int, reset: str) -> list[tuple[str, str]]:
    return [(f"x-ratelimit-limit-{name}", str(limit)),
            (f"x-ratelimit-remaining-{name}", str(max(0, limit - used))),
            (f"x-ratelimit-reset-{name}", reset)]


_WINDOW_NAMES = {("requests", "minute"): "requests per min (RPM)",
                 ("tokens", "minute"): "tokens per min (TPM)",
                 ("tokens", "day"): "tokens per day (TPD)"}


def rejection_error(rejected: Rejected, app: str) -> ApiError:
    """The 429 in OpenAI's envelope and wording; `type` is `requests` or `tokens`."""
    on = _WINDOW_NAMES[(rejected.kind, rejected.window)]
    if rejected.retry_after is None:
        message = (f"Request too large for app {app!r} on {on}: Limit {rejected.limit}, "
                   f"Requested {rejected.requested}. The input or output tokens must be "
                   f"reduced in order to run successfully.")
    else:
        message = (f"Rate limit reached for app {app!r} on {on}: Limit {rejected.limit}, "
                   f"Used {rejected.used}, Requested {rejected.requested}. Please try again "
                   f"in {openai_duration(rejected.retry_after)}.")
    return ApiError(429, message, RATE_LIMIT_CODE, rejected.kind)


def unavailable_error(app: str) -> ApiError:
    return ApiError(503, f"The quota store is unreachable, so requests of app {app!r} "
                    f"are refused (quota store outage mode fail_closed). Please try again.",
                    UNAVAILABLE_CODE, SERVER_ERROR)

"""The report's quota section: each app's use against its quota, from the access log.

Counted as the proxy counts (`proxy/request_path.py:_quota`, `proxy/quotas.py`): a
request counts when it was a POST that went upstream (Bastion, OpenAI, or the speech
adapter, which the log names `bastion`), in the fixed UTC window of the time it
started (a minute is a whole minute of Unix time, a day starts at 00:00 UTC). Tokens
count as the upstream reported them (input + output); a counted request without a
reported usage adds nothing here (the proxy kept its estimate or refunded it), and how
many there were is said. Refusals are the proxy's own answers (destination `proxy`):
`429 rate_limit_exceeded` over a quota, `503 quota_store_unavailable` in a store outage.

The figures cover this log only: the `--workers` of one `run` append to one file, but
other replicas (sharing a Redis quota store) write logs of their own. A busiest window
the log covers only part of is said to be partial: the whole window may hold more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bastion_edge.config.quota_rules import NO_QUOTA, Quota
from bastion_edge.config.schema import ClientsRules
from bastion_edge.core.quota import (
    DAY_SECONDS,
    MINUTE_SECONDS,
    RATE_LIMIT_CODE,
    UNAVAILABLE_CODE,
)
from bastion_edge.report.load import Record

# proxy/quotas.py UPSTREAM as the access log names them (speech is logged as bastion)
COUNTED_DESTINATIONS = ("bastion", "openai")
PROXY = "proxy"
OWN, DEFAULT, NONE = "own", "default", "none"  # where an app's quota comes from


@dataclass(frozen=True, slots=True)
class Peak:
    """The busiest fixed window of one kind (minute or day) for one app."""

    used: int  # requests or tokens in that window
    start: datetime | None  # the window's start; None: nothing counted at all
    seconds: int  # the window's length
    covered_s: float = 0.0  # how much of that window the log's records span

    @property
    def partial(self) -> bool:
        return self.start is not None and self.covered_s < self.seconds


def percent(used: int, limit: int | None) -> float | None:
    return used / limit * 100 if limit else None


@dataclass(frozen=True, slots=True)
class AppQuotaUse:
    app: str
    quota: Quota
    source: str  # OWN, DEFAULT, or NONE (refused, but the rules give it no quota now)
    counted: int  # POSTs that went upstream
    unreported: int  # ... without a reported usage (not in the token figures)
    requests_minute: Peak
    tokens_minute: Peak
    tokens_day: Peak
    refused_quota: int  # 429 rate_limit_exceeded from the proxy
    refused_outage: int  # 503 quota_store_unavailable from the proxy

    def limited(self) -> list[tuple[str, Peak, int]]:
        """(name, peak, limit) of every dimension the quota limits."""
        q = self.quota
        dims = (("requests_per_minute", self.requests_minute, q.requests_per_minute),
                ("tokens_per_minute", self.tokens_minute, q.tokens_per_minute),
                ("tokens_per_day", self.tokens_day, q.tokens_per_day))
        return [(name, peak, limit) for name, peak, limit in dims if limit is not None]


@dataclass(frozen=True, slots=True)
class QuotaUse:
    rules: bool  # a rules file was read (quotas are known)
    apps: list[AppQuotaUse]
    start: datetime | None  # the log's first and last record in the window
    end: datetime | None
    no_method: int = 0  # upstream exchanges whose line has no method: not counted

    @property
    def window_s(self) -> float:
        return (self.end - self.start).total_seconds() if self.start and self.end else 0.0

    @property
    def unreported(self) -> int:
        return sum(a.unreported for a in self.apps)


def counted(record: Record) -> bool:
    """Whether the proxy's quota counted this exchange (before knowing the app)."""
    return record.method == "POST" and record.destination in COUNTED_DESTINATIONS


def refusal(record: Record) -> str | None:
    """`quota` or `outage` when the proxy refused the request for its app's quota."""
    if record.destination != PROXY:
        return None
    if record.status == 429 and record.error == RATE_LIMIT_CODE:
        return "quota"
    if record.status == 503 and record.error == UNAVAILABLE_CODE:
        return "outage"
    return None


def reported_tokens(record: Record) -> int:
    t = record.tokens
    return t.input + t.output if t is not None else 0


def peak(items: Iterable[tuple[datetime, int]], seconds: int,
         start: datetime | None, end: datetime | None) -> Peak:
    """The window of `seconds` (aligned on Unix time) with the largest sum of amounts;
    the earliest on a tie; start None when the largest is 0."""
    sums: Counter[int] = Counter()
    for when, amount in items:
        sums[int(when.timestamp() // seconds)] += amount
    if not sums or max(sums.values()) == 0:
        return Peak(0, None, seconds)
    index = min(sums, key=lambda i: (-sums[i], i))
    window = index * seconds
    covered = 0.0
    if start is not None and end is not None:
        covered = max(0.0, min(end.timestamp(), window + seconds)
                      - max(start.timestamp(), window))
    return Peak(sums[index], datetime.fromtimestamp(window, UTC), seconds, covered)


def quota_source(app: str, clients: ClientsRules | None) -> tuple[Quota, str]:
    if clients is None:
        return NO_QUOTA, NONE
    entry = clients.app(app)
    if entry is not None and entry.quota is not None:
        return entry.quota, OWN if entry.quota.limits_anything else NONE
    default = clients.default_quota
    return default, DEFAULT if default.limits_anything else NONE


def _apps(records: Sequence[Record], clients: ClientsRules | None,
          refused: Counter[tuple[str, str]]) -> list[str]:
    """Apps with a quota of their own, apps seen under the default, apps refused."""
    names = {app for app, _ in refused}
    if clients is not None:
        names |= {a.name for a in clients.apps if a.quota is not None
                  and a.quota.limits_anything}
        if clients.default_quota.limits_anything:
            names |= {r.app for r in records if r.app is not None
                      and quota_source(r.app, clients)[1] == DEFAULT}
    return sorted(names)


def build_quota_use(records: Sequence[Record], clients: ClientsRules | None) -> QuotaUse:
    """Each app's use against its quota; `clients` None: no rules file was read."""
    start = records[0].time if records else None
    end = records[-1].time if records else None
    refused: Counter[tuple[str, str]] = Counter(
        (r.app, why) for r in records if r.app is not None and (why := refusal(r)))
    upstream = [r for r in records if r.destination in COUNTED_DESTINATIONS]
    rows = []
    for app in _apps(records, clients, refused):
        quota, source = quota_source(app, clients)
        mine = [r for r in upstream if r.app == app and counted(r)]
        tokens = [(r.time, reported_tokens(r)) for r in mine]
        rows.append(AppQuotaUse(
            app, quota, source, len(mine), sum(1 for r in mine if r.tokens is None),
            peak(((r.time, 1) for r in mine), MINUTE_SECONDS, start, end),
            peak(tokens, MINUTE_SECONDS, start, end), peak(tokens, DAY_SECONDS, start, end),
            refused[(app, "quota")], refused[(app, "outage")]))
    no_method = sum(1 for r in upstream if r.method is None)
    return QuotaUse(clients is not None, rows, start, end, no_method)

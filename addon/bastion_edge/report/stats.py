"""Pure aggregation of access-log records into the cutover report's numbers.

Groups are (endpoint, original model, destination). Besides the destinations a
record names (bastion, openai, proxy), mirror mode's copies to Bastion form their
own series, `mirror`, so "Bastion as a shadow of OpenAI" sits next to OpenAI.

Percentiles interpolate linearly between the closest ranks (numpy's default,
Excel's PERCENTILE.INC): p50 of [1, 2, 3, 4] is 2.5. An error is a status >= 400
or no status at all.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bastion_edge.config.schema import ClientsRules
from bastion_edge.config.usage_rules import Price
from bastion_edge.report.load import LoadResult, Record, is_error
from bastion_edge.report.quota_use import QuotaUse, build_quota_use
from bastion_edge.report.tokens import TokenReport, build_tokens, served_model

if TYPE_CHECKING:
    from bastion_edge.report.agreement import AgreementSummary

BASTION, OPENAI, PROXY, MIRROR = "bastion", "openai", "proxy", "mirror"
SERIES_ORDER = (BASTION, MIRROR, OPENAI, PROXY)
SERIES_LABELS = {BASTION: "Bastion", MIRROR: "Bastion (mirror)", OPENAI: "OpenAI",
                 PROXY: "proxy (refused)"}

# Verdict thresholds, Bastion compared with OpenAI, applied to 95 % intervals
# (report/verdicts.py).
ERROR_RATE_OK_PP, ERROR_RATE_WARN_PP = 1.0, 5.0  # percentage points above OpenAI
ERROR_RATE_OK_ABS, ERROR_RATE_WARN_ABS = 0.01, 0.05  # when there is no OpenAI baseline
P95_RATIO_OK, P95_RATIO_WARN = 1.25, 2.0
AGREEMENT_OK, AGREEMENT_WARN = 0.99, 0.95

# Candidate widths for the errors-over-time buckets, in seconds.
BUCKET_WIDTHS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                 7200, 10800, 21600, 43200, 86400, 172800, 604800)
MAX_BUCKETS = 60


def series_label(series: str) -> str:
    return SERIES_LABELS.get(series, series)


def series_sort_key(series: str) -> tuple[int, str]:
    order = SERIES_ORDER.index(series) if series in SERIES_ORDER else len(SERIES_ORDER)
    return order, series


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Observation:
    """One response as the report sees it (a served request or a mirror copy)."""

    time: datetime
    status: int | None
    duration_ms: float | None
    ttfb_ms: float | None

    @property
    def failed(self) -> bool:
        return is_error(self.status)


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    ttfb_p50_ms: float | None
    ttfb_p95_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def summarize(observations: Iterable[Observation]) -> Summary:
    items = list(observations)
    durations = [o.duration_ms for o in items if o.duration_ms is not None]
    ttfbs = [o.ttfb_ms for o in items if o.ttfb_ms is not None]
    return Summary(
        requests=len(items), errors=sum(1 for o in items if o.failed),
        p50_ms=percentile(durations, 50), p95_ms=percentile(durations, 95),
        ttfb_p50_ms=percentile(ttfbs, 50), ttfb_p95_ms=percentile(ttfbs, 95))


@dataclass(frozen=True, slots=True)
class MirrorStats:
    """How Bastion's copies compared with the responses the apps got."""

    mirrored: int  # records carrying a mirror result
    judged: int  # of those, answered and with a shape_match verdict
    matches: int  # shape_match true
    status_mismatches: int  # mirror and main status differ in class (2xx vs 5xx, ...)
    mirror_errors: int  # mirror status >= 400 or none
    median_delta_ms: float | None  # median of (mirror - main) duration, per pair
    median_ttfb_delta_ms: float | None
    top_differences: tuple[tuple[str, int], ...] = ()
    skipped: int = 0  # exchanges mirror mode did not copy (busy, streaming, ...)
    skip_reasons: tuple[tuple[str, int], ...] = ()

    @property
    def agreement(self) -> float | None:
        return self.matches / self.judged if self.judged else None


def _status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status is not None else "none"


def _top(counter: Counter[str], top: int) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def mirror_stats(records: Iterable[Record], top: int = 5) -> MirrorStats | None:
    """Agreement and deltas over the records that have a mirror; None when none do.
    Agreement is judged over copies that got an answer: a copy that failed in transport
    counts as a mirror error, not as a shape mismatch."""
    items = list(records)
    pairs = [(r, r.mirror) for r in items if r.mirror is not None]
    skipped = Counter(r.mirror_skipped for r in items if r.mirror_skipped is not None)
    if not pairs and not skipped:
        return None
    judged = [m for _, m in pairs if m.shape_match is not None and m.error is None]
    deltas = [m.duration_ms - r.duration_ms for r, m in pairs
              if m.duration_ms is not None and r.duration_ms is not None]
    ttfb_deltas = [m.ttfb_ms - r.ttfb_ms for r, m in pairs
                   if m.ttfb_ms is not None and r.ttfb_ms is not None]
    differences: Counter[str] = Counter()
    for _, m in pairs:
        differences.update(set(m.differences))
    return MirrorStats(
        mirrored=len(pairs),
        judged=len(judged),
        matches=sum(1 for m in judged if m.shape_match),
        status_mismatches=sum(
            1 for r, m in pairs if _status_class(r.status) != _status_class(m.status)),
        mirror_errors=sum(1 for _, m in pairs if is_error(m.status)),
        median_delta_ms=percentile(deltas, 50),
        median_ttfb_delta_ms=percentile(ttfb_deltas, 50),
        top_differences=_top(differences, top),
        skipped=sum(skipped.values()),
        skip_reasons=_top(skipped, top),
    )


def observations(records: Iterable[Record]) -> dict[str, list[Observation]]:
    """Observations per series: each record under its destination, each mirror under
    `mirror` (at the time of the exchange it copied)."""
    series: dict[str, list[Observation]] = defaultdict(list)
    for r in records:
        series[r.destination].append(Observation(r.time, r.status, r.duration_ms, r.ttfb_ms))
        if r.mirror is not None:
            m = r.mirror
            series[MIRROR].append(Observation(r.time, m.status, m.duration_ms, m.ttfb_ms))
    return dict(sorted(series.items(), key=lambda kv: series_sort_key(kv[0])))


@dataclass(frozen=True, slots=True)
class Group:
    endpoint: str
    model: str
    destination: str  # a record destination, or `mirror`
    summary: Summary
    upstream_models: tuple[str, ...] = ()
    mirror: MirrorStats | None = None  # on `mirror` rows


def group_records(records: Iterable[Record]) -> list[Group]:
    """One group per (endpoint, model, destination), sorted by endpoint, model, series."""
    by_key: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        by_key[(r.endpoint, r.model)].append(r)
    groups: list[Group] = []
    for (endpoint, model), members in sorted(by_key.items()):
        for series, obs in observations(members).items():
            if series == MIRROR:
                mirrored = [r for r in members if r.mirror is not None]
                groups.append(Group(endpoint, model, MIRROR, summarize(obs),
                                    mirror=mirror_stats(mirrored)))
                continue
            upstream = sorted({m for r in members if r.destination == series
                               and (m := served_model(r)) and m != model})
            groups.append(Group(endpoint, model, series, summarize(obs), tuple(upstream)))
    return groups


# ----------------------------------------------------------------------- over time

@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    counts: dict[str, tuple[int, int]]  # series -> (requests, errors)


@dataclass(frozen=True, slots=True)
class Timeline:
    width_s: float
    buckets: list[Bucket]
    series: tuple[str, ...]

    def max_requests(self) -> int:
        return max((n for b in self.buckets for n, _ in b.counts.values()), default=0)


def bucket_width(span_s: float, max_buckets: int = MAX_BUCKETS) -> float:
    """The smallest candidate width that covers `span_s` in at most `max_buckets`."""
    for width in BUCKET_WIDTHS:
        if span_s / width < max_buckets:
            return width
    return float(math.ceil(span_s / (max_buckets - 1)))


def timeline(series_obs: dict[str, list[Observation]],
             max_buckets: int = MAX_BUCKETS) -> Timeline:
    """Requests and errors per series in equal, epoch-aligned time buckets."""
    times = [o.time for obs in series_obs.values() for o in obs]
    if not times:
        return Timeline(1, [], ())
    first, last = min(times).timestamp(), max(times).timestamp()
    width = bucket_width(last - first, max_buckets)
    origin = math.floor(first / width) * width
    count = int((last - origin) // width) + 1
    counts: list[dict[str, list[int]]] = [{} for _ in range(count)]
    for series, obs in series_obs.items():
        for o in obs:
            index = min(int((o.time.timestamp() - origin) // width), count - 1)
            slot = counts[index].setdefault(series, [0, 0])
            slot[0] += 1
            slot[1] += o.failed
    buckets = [Bucket(datetime.fromtimestamp(origin + i * width, UTC),
                      {s: (c[0], c[1]) for s, c in slot.items()})
               for i, slot in enumerate(counts)]
    return Timeline(width, buckets, tuple(series_obs))


# ----------------------------------------------------------------------- histogram

@dataclass(frozen=True, slots=True)
class Histogram:
    edges: list[float]  # len(counts) + 1, log-spaced, ms
    counts: dict[str, list[int]]  # series -> count per bin
    totals: dict[str, int]


def histogram(values: Mapping[str, Sequence[float]], bins: int | None = None,
              max_bins: int = 24) -> Histogram | None:
    """Shared log-spaced bins over every series' values; None when there are none.
    Without `bins`, about two per square root of the largest series, 8 to `max_bins`."""
    positive = [v for vs in values.values() for v in vs if v > 0]
    if not positive:
        return None
    if bins is None:
        largest = max(len(vs) for vs in values.values())
        bins = min(max_bins, max(8, round(2 * math.sqrt(largest))))
    low, high = min(positive), max(positive)
    if high <= low * 1.05:
        low, high = low / 1.5, high * 1.5
    log_low, log_high = math.log10(low), math.log10(high)
    step = (log_high - log_low) / bins
    edges = [10 ** (log_low + i * step) for i in range(bins + 1)]
    edges[0], edges[-1] = low, high
    counts: dict[str, list[int]] = {}
    for series, vs in values.items():
        row = [0] * bins
        for v in vs:
            position = (math.log10(max(v, low)) - log_low) / step
            row[min(max(int(position), 0), bins - 1)] += 1
        counts[series] = row
    return Histogram(edges, counts, {s: sum(c) for s, c in counts.items()})


# ----------------------------------------------------------------------- verdicts

@dataclass(frozen=True, slots=True)
class Kpi:
    label: str
    value: str  # the headline figure
    detail: str  # how it was reached
    level: str  # ok | warn | bad | info


def skip_phrase(mirror: MirrorStats) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in mirror.skip_reasons)


def bastion_side(totals: dict[str, Summary]) -> str | None:
    """The series that stands for Bastion: served traffic if any, else mirror copies."""
    for series in (BASTION, MIRROR):
        if series in totals and totals[series].requests:
            return series
    return None


# ----------------------------------------------------------------------- report

@dataclass(frozen=True, slots=True)
class Report:
    source: str
    lines: int
    bad: int
    bad_examples: list[tuple[int, str]]
    filtered: int
    start: datetime | None
    end: datetime | None
    groups: list[Group]
    totals: dict[str, Summary]  # per series, all endpoints
    durations: dict[str, list[float]]  # per series, for distributions
    ttfbs: dict[str, list[float]]
    endpoint_durations: dict[str, dict[str, list[float]]]  # endpoint -> series -> values
    endpoint_totals: dict[str, dict[str, Summary]]  # endpoint -> series -> summary
    mirror: MirrorStats | None
    timeline: Timeline
    kpis: list[Kpi] = field(default_factory=list)
    tokens: TokenReport | None = None  # the tokens section (report/tokens.py)
    agreement: list[AgreementSummary] = field(default_factory=list)  # per model
    quotas: QuotaUse | None = None  # each app's use against its quota (report/quota_use.py)

    @property
    def requests(self) -> int:
        """Exchanges the apps made (mirror copies are not extra requests)."""
        return sum(s.requests for series, s in self.totals.items() if series != MIRROR)

    @property
    def errors(self) -> int:
        return sum(s.errors for series, s in self.totals.items() if series != MIRROR)


def build_report(loaded: LoadResult, prices: Mapping[str, Price] | None = None,
                 currency: str = "USD", clients: ClientsRules | None = None) -> Report:
    """`clients`: the rules' apps and quotas; None when no rules file was read."""
    from bastion_edge.report.agreement import agreement_summaries  # these read this
    from bastion_edge.report.verdicts import kpis  # module's types

    records = loaded.records
    series_obs = observations(records)
    totals = {s: summarize(obs) for s, obs in series_obs.items()}
    durations = {s: sorted(o.duration_ms for o in obs if o.duration_ms is not None)
                 for s, obs in series_obs.items()}
    ttfbs = {s: sorted(o.ttfb_ms for o in obs if o.ttfb_ms is not None)
             for s, obs in series_obs.items()}
    by_endpoint: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_endpoint[r.endpoint].append(r)
    endpoint_durations: dict[str, dict[str, list[float]]] = {}
    endpoint_totals: dict[str, dict[str, Summary]] = {}
    for endpoint, members in sorted(by_endpoint.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        per_series = observations(members)
        endpoint_durations[endpoint] = {
            s: sorted(o.duration_ms for o in obs if o.duration_ms is not None)
            for s, obs in per_series.items()}
        endpoint_totals[endpoint] = {s: summarize(obs) for s, obs in per_series.items()}
    mirror = mirror_stats(records)
    return Report(
        source=loaded.source, lines=loaded.lines, bad=loaded.bad,
        bad_examples=list(loaded.bad_examples), filtered=loaded.filtered,
        start=records[0].time if records else None, end=records[-1].time if records else None,
        groups=group_records(records), totals=totals, durations=durations, ttfbs=ttfbs,
        endpoint_durations=endpoint_durations, endpoint_totals=endpoint_totals, mirror=mirror,
        timeline=timeline(series_obs), kpis=kpis(totals, mirror, durations, ttfbs),
        tokens=build_tokens(records, prices, currency),
        agreement=agreement_summaries(records), quotas=build_quota_use(records, clients))

"""The report's verdicts: Bastion against OpenAI, each on its 95 % interval.

No verdict where either side has fewer than MIN_EXCHANGES exchanges (it says "not
enough data", with n). Otherwise a verdict is OK when the whole interval is within the
OK threshold, BAD when the whole interval is past the watch threshold, and WATCH in
between (including an interval too wide to say). Intervals (core.intervals): Wilson
for an error rate or an agreement share, Newcombe's hybrid score interval for the
difference of two error rates, exact order-statistic bounds for a p95 ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bastion_edge.core.intervals import Interval, newcombe, quantile_ratio, wilson
from bastion_edge.report import fmt
from bastion_edge.report.stats import (
    AGREEMENT_OK,
    AGREEMENT_WARN,
    ERROR_RATE_OK_ABS,
    ERROR_RATE_OK_PP,
    ERROR_RATE_WARN_ABS,
    ERROR_RATE_WARN_PP,
    OPENAI,
    P95_RATIO_OK,
    P95_RATIO_WARN,
    Kpi,
    MirrorStats,
    Summary,
    bastion_side,
    percentile,
    series_label,
    skip_phrase,
)

MIN_EXCHANGES = 30  # a side, before any verdict


def _level_above(interval: Interval, ok: float, warn: float) -> str:
    """Higher is worse."""
    return "ok" if interval.high <= ok else "bad" if interval.low > warn else "warn"


def _bound(value: float, scale: float = 1.0, digits: int = 1) -> str:
    return "∞" if math.isinf(value) else f"{value * scale:.{digits}f}"


def not_enough(label: str, sides: Sequence[tuple[str, int]]) -> Kpi:
    counts = ", ".join(f"{name} n={n}" for name, n in sides)
    return Kpi(label, "not enough data",
               f"{counts}; a verdict needs {MIN_EXCHANGES} a side", "info")


def error_kpi(b: Summary | None, base: Summary | None, name: str) -> Kpi:
    label = "Error rate"
    if b is None or not b.requests:
        return Kpi(label, "-", "no Bastion traffic in this window", "info")
    sides = [(name, b.requests)] + ([("OpenAI", base.requests)] if base else [])
    if any(n < MIN_EXCHANGES for _, n in sides):
        return not_enough(label, sides)
    if base is None:
        w = wilson(b.errors, b.requests)
        return Kpi(label, fmt.rate(w.estimate),
                   f"{name}: {b.errors} of {b.requests} failed, 95 % CI "
                   f"{_bound(w.low, 100)} to {_bound(w.high, 100)}%; no OpenAI baseline",
                   _level_above(w, ERROR_RATE_OK_ABS, ERROR_RATE_WARN_ABS))
    d = newcombe(b.errors, b.requests, base.errors, base.requests)
    pp = Interval(d.estimate * 100, d.low * 100, d.high * 100)
    return Kpi(label, f"{fmt.rate(b.error_rate)} vs {fmt.rate(base.error_rate)}",
               f"{name} {b.errors}/{b.requests} vs OpenAI {base.errors}/{base.requests}: "
               f"{pp.estimate:+.1f} pp, 95 % CI {pp.low:+.1f} to {pp.high:+.1f} pp",
               _level_above(pp, ERROR_RATE_OK_PP, ERROR_RATE_WARN_PP))


def latency_kpi(label: str, mine: Sequence[float], theirs: Sequence[float] | None,
                name: str) -> Kpi:
    if not mine:
        return Kpi(label, "-", "no Bastion timings in this window", "info")
    if not theirs:
        return Kpi(label, fmt.ms(percentile(mine, 95)),
                   f"{name}; no OpenAI baseline to compare", "info")
    sides = [(name, len(mine)), ("OpenAI", len(theirs))]
    if any(n < MIN_EXCHANGES for _, n in sides):
        return not_enough(label, sides)
    ratio = quantile_ratio(mine, theirs)
    if math.isnan(ratio.estimate):
        return Kpi(label, "-", "OpenAI's p95 is 0", "info")
    return Kpi(label, f"{ratio.estimate:.2f}x",
               f"{name} vs OpenAI, 95 % CI {_bound(ratio.low, digits=2)}x to "
               f"{_bound(ratio.high, digits=2)}x (n {len(mine)} vs {len(theirs)})",
               _level_above(ratio, P95_RATIO_OK, P95_RATIO_WARN))


def agreement_kpi(mirror: MirrorStats | None) -> Kpi:
    label = "Mirror agreement"
    if mirror is None or mirror.agreement is None:
        why = (f"{mirror.skipped} exchanges not copied ({skip_phrase(mirror)})"
               if mirror and mirror.skipped else "no mirrored exchanges")
        return Kpi(label, "-", why, "info")
    if mirror.judged < MIN_EXCHANGES:
        return not_enough(label, [("judged copies", mirror.judged)])
    w = wilson(mirror.matches, mirror.judged)
    level = "ok" if w.low >= AGREEMENT_OK else "bad" if w.high < AGREEMENT_WARN else "warn"
    skipped = f"; {mirror.skipped} not copied" if mirror.skipped else ""
    return Kpi(label, fmt.rate(mirror.agreement),
               f"{mirror.matches} of {mirror.judged} same shape, 95 % CI "
               f"{_bound(w.low, 100)} to {_bound(w.high, 100)}%; "
               f"{mirror.status_mismatches} status mismatches{skipped}", level)


def kpis(totals: Mapping[str, Summary], mirror: MirrorStats | None,
         durations: Mapping[str, Sequence[float]] | None = None,
         ttfbs: Mapping[str, Sequence[float]] | None = None) -> list[Kpi]:
    side = bastion_side(dict(totals))
    base = totals.get(OPENAI) if totals.get(OPENAI) and totals[OPENAI].requests else None
    b = totals[side] if side else None
    name = series_label(side) if side else "Bastion"
    durations, ttfbs = durations or {}, ttfbs or {}
    out = [error_kpi(b, base, name)]
    for label, values in (("p95 latency", durations), ("p95 time to first byte", ttfbs)):
        mine = values.get(side, ()) if side else ()
        theirs = values.get(OPENAI) if base else None
        out.append(latency_kpi(label, mine, theirs, name))
    out.append(agreement_kpi(mirror))
    return out

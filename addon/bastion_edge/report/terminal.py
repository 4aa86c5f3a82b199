"""The report as aligned plain text: a summary, the verdicts, then one row per group."""

from __future__ import annotations

from collections.abc import Sequence

from bastion_edge.report import fmt
from bastion_edge.report.agreement import terminal_lines as agreement_lines
from bastion_edge.report.quota_render import terminal_lines as quota_lines
from bastion_edge.report.stats import (
    MIRROR,
    MirrorStats,
    Report,
    Summary,
    series_label,
    skip_phrase,
)
from bastion_edge.report.token_render import terminal_lines

LEVEL_TAGS = {"ok": "[ OK ]", "warn": "[WARN]", "bad": "[BAD ]", "info": "[ -- ]"}
COLUMNS = ("endpoint", "model", "destination", "requests", "errors", "err%",
           "p50 ms", "p95 ms", "ttfb p50", "ttfb p95", "mirror agree")
NUMERIC = frozenset(range(3, 11))


def _cells(endpoint: str, model: str, destination: str, s: Summary, agree: str) -> list[str]:
    timings = (s.p50_ms, s.p95_ms, s.ttfb_p50_ms, s.ttfb_p95_ms)
    return [endpoint, model, destination, str(s.requests), str(s.errors), fmt.rate(s.error_rate),
            *(fmt.ms_exact(t) for t in timings), agree]


def agreement_text(m: MirrorStats | None) -> str:
    if m is None or m.agreement is None:
        return ""
    return f"{fmt.rate(m.agreement)} ({m.matches}/{m.judged})"


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS,
          numeric: frozenset[int] = NUMERIC) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in numeric else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render(report: Report) -> str:
    out = [f"bastion-edge cutover report: {report.source}"]
    if report.start and report.end:
        span = fmt.span((report.end - report.start).total_seconds())
        out.append(f"window:   {fmt.when(report.start)} .. {fmt.when(report.end)} ({span})")
    read = f"{fmt.count(report.lines, 'line')} read"
    if report.bad:
        read += f", {fmt.count(report.bad, 'bad line')} skipped"
    if report.filtered:
        read += f", {report.filtered} outside --since/--until"
    out.append(f"requests: {report.requests} ({fmt.count(report.errors, 'error')}); {read}")
    for number, why in report.bad_examples:
        out.append(f"  bad line {number}: {why}")
    by_series = ", ".join(f"{series_label(s)} {t.requests}" for s, t in report.totals.items())
    if by_series:
        out.append(f"by destination: {by_series}")
    if not report.groups:
        out.append("")
        out.append("No records in this window.")
        return "\n".join(out) + "\n"

    out.append("")
    label_width = max(len(k.label) for k in report.kpis)
    value_width = max(len(k.value) for k in report.kpis)
    for k in report.kpis:
        out.append(f"{LEVEL_TAGS.get(k.level, '[ ?? ]')} {k.label:<{label_width}}  "
                   f"{k.value:<{value_width}}  {k.detail}")

    rows = [_cells(g.endpoint, g.model, g.destination, g.summary, agreement_text(g.mirror))
            for g in report.groups]
    for series, total in report.totals.items():
        agree = agreement_text(report.mirror) if series == MIRROR else ""
        rows.append(_cells("(all)", "", series, total, agree))
    out.append("")
    out.extend(table(rows))
    if report.mirror and report.mirror.skipped:
        out.append("")
        out.append(f"mirror: {fmt.count(report.mirror.skipped, 'exchange')} not copied "
                   f"({skip_phrase(report.mirror)})")
    if report.mirror and report.mirror.top_differences:
        out.append("")
        out.append("mirror differences (exchanges):")
        out.extend(f"  {n:>6}  {text}" for text, n in report.mirror.top_differences)
    out.extend(agreement_lines(report.agreement))
    if report.tokens is not None:
        out.extend(terminal_lines(report.tokens))
    out.extend(quota_lines(report.quotas))
    return "\n".join(out) + "\n"

"""The report as ONE self-contained HTML page: inline CSS, inline SVG, no script,
no fonts or images fetched from anywhere. Every string from the log is escaped."""

from __future__ import annotations

from datetime import UTC, datetime

from bastion_edge.report import charts, fmt
from bastion_edge.report.agreement import html_panel as agreement_panel
from bastion_edge.report.charts import colour, e, model_label, text_colour
from bastion_edge.report.quota_render import quota_panel
from bastion_edge.report.stats import (
    AGREEMENT_OK,
    AGREEMENT_WARN,
    ERROR_RATE_OK_ABS,
    ERROR_RATE_OK_PP,
    ERROR_RATE_WARN_ABS,
    ERROR_RATE_WARN_PP,
    MIRROR,
    P95_RATIO_OK,
    P95_RATIO_WARN,
    PROXY,
    Group,
    Kpi,
    Report,
    histogram,
    series_label,
    skip_phrase,
)
from bastion_edge.report.token_render import tokens_panel

LEVELS = {  # colour, mark, word: never colour alone
    "ok": ("#1A7F37", "&#10003;", "OK"),
    "warn": ("#9A6700", "!", "Watch"),
    "bad": ("#CF222E", "&#10007;", "Investigate"),
    "info": ("#6E7781", "&#8211;", "No verdict"),
}
MAX_ENDPOINT_CHARTS = 6

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#F3F5F8;color:#1F2328;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","DejaVu Sans",
 Arial,sans-serif;font-variant-numeric:tabular-nums}
header{background:#0B2239;color:#fff;padding:26px 0 22px}
.wrap{max-width:1240px;margin:0 auto;padding:0 32px}
header .eyebrow{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:#9CC3E6}
header h1{margin:4px 0 6px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header .meta{color:#C9D6E3;font-size:13.5px}
header .meta b{color:#fff;font-weight:600}
.totals{display:flex;gap:28px;margin-top:16px;flex-wrap:wrap}
.totals div{font-size:12px;color:#9CC3E6;text-transform:uppercase;letter-spacing:.06em}
.totals span{display:block;font-size:22px;color:#fff;font-weight:600;letter-spacing:0;
 text-transform:none}
.totals .dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px}
main{padding:22px 0 40px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:16px}
.card{background:#fff;border:1px solid #D0D7DE;border-top:5px solid var(--c);
 border-radius:10px;padding:14px 16px 14px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#57606A;
 font-weight:600}
.card .value{font-size:27px;font-weight:650;margin:4px 0 2px;letter-spacing:-.01em}
.card .detail{color:#57606A;font-size:12.5px;min-height:2.9em}
.badge{display:inline-block;margin-top:8px;padding:2px 10px 2px 8px;border-radius:999px;
 font-size:12px;font-weight:650;color:#fff;background:var(--c)}
.panel{background:#fff;border:1px solid #D0D7DE;border-radius:10px;padding:18px 20px 14px;
 margin-top:18px}
.panel h2{font-size:16px;margin:0;font-weight:650}
.panel .sub{color:#57606A;font-size:13px;margin:2px 0 12px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:22px}
.grid3{display:grid;grid-template-columns:1fr 1fr 1fr;gap:18px}
.chart{width:100%;height:auto;display:block}
.chart text{font-size:11.5px;fill:#57606A}
.chart .tick{font-size:11px;fill:#6E7781}
.chart .axis{font-size:11px;fill:#6E7781;font-style:italic}
.chart .lg{font-size:12px;fill:#1F2328}
.chart .muted{font-size:11.5px;fill:#6E7781}
.chart .mark{font-size:11px;font-weight:600}
.chart .rowlabel{font-size:13px;font-weight:600;fill:#1F2328}
.chart .rowsub{font-size:12px}
.chart .val{font-size:12.5px;fill:#1F2328}
.chart h3,.mini h3{margin:0}
.mini h3{font-size:13px;font-weight:650;margin:0 0 2px}
table{border-collapse:collapse;width:100%;font-size:13px}
.scroll{overflow-x:auto}
th{text-align:left;font-size:11px;text-transform:uppercase;letter-spacing:.04em;
 color:#57606A;border-bottom:2px solid #D0D7DE;padding:6px 6px;vertical-align:bottom}
td{padding:5px 6px;border-bottom:1px solid #EAEEF2;vertical-align:top;overflow-wrap:anywhere}
td.num,td:first-child{white-space:nowrap;overflow-wrap:normal}
td.num,th.num{text-align:right}
tr.first td{border-top:1px solid #D0D7DE}
tr.all td{background:#F6F8FA;font-weight:600}
td .up{color:#6E7781;font-size:11.5px;padding-left:17px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:7px;
 vertical-align:0}
.pill{display:inline-block;padding:0 7px;border-radius:6px}
.pill.warn{background:#FFF1C2;color:#6B4A00}.pill.bad{background:#FFD8D3;color:#8B1A10}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;
 margin-bottom:12px}
.fact{background:#F6F8FA;border-radius:8px;padding:10px 12px}
.fact b{display:block;font-size:20px}
.fact span{color:#57606A;font-size:12px}
.note{color:#57606A;font-size:12.5px;margin-top:18px}
.note code{background:#EAEEF2;padding:1px 5px;border-radius:4px}
.empty{padding:40px;text-align:center;color:#57606A;font-size:15px}
@media (max-width:900px){.cards,.facts{grid-template-columns:1fr 1fr}
 .grid2,.grid3{grid-template-columns:1fr}}
@media print{body{background:#fff}.panel,.card{break-inside:avoid}}
"""


def _kpi_card(k: Kpi) -> str:
    c, mark, word = LEVELS.get(k.level, LEVELS["info"])
    return (f'<div class="card" style="--c:{c}"><div class="label">{e(k.label)}</div>'
            f'<div class="value">{e(k.value)}</div><div class="detail">{e(k.detail)}</div>'
            f'<span class="badge">{mark} {word}</span></div>')


def _rate_cell(rate: float | None) -> str:
    text = fmt.rate(rate)
    if rate is None or rate < ERROR_RATE_OK_ABS:
        return text
    level = "warn" if rate < ERROR_RATE_WARN_ABS else "bad"
    return f'<span class="pill {level}">{text}</span>'


def _series_cell(series: str) -> str:
    return (f'<span class="sw" style="background:{colour(series)}"></span>'
            f'<span style="color:{text_colour(series)};font-weight:600">'
            f"{e(series_label(series))}</span>")


def _group_rows(report: Report) -> str:
    rows = []
    previous: tuple[str, str] | None = None
    for g in report.groups:
        key = (g.endpoint, g.model)
        first = key != previous
        previous = key
        rows.append(_row(g, first, e(g.endpoint) if first else "",
                         e(model_label(g.model)) if first else ""))
    for i, (series, total) in enumerate(report.totals.items()):
        g = Group("(all)", "", series, total, mirror=report.mirror if series == MIRROR else None)
        rows.append(_row(g, i == 0, "all endpoints" if i == 0 else "", "", css="all"))
    return "".join(rows)


def _row(g: Group, first: bool, endpoint: str, model: str, css: str = "") -> str:
    s = g.summary
    classes = " ".join(c for c in (css, "first" if first else "") if c)
    series = _series_cell(g.destination)
    if g.upstream_models:
        series += f'<div class="up">as {e(", ".join(g.upstream_models))}</div>'
    agree = ""
    if g.destination == MIRROR:
        m = g.mirror
        agree = (f'{fmt.rate(m.agreement)}<div class="up">{m.matches:,} of {m.judged:,}</div>'
                 if m and m.agreement is not None else "&#8211;")
    nums = [f"{s.requests:,}", f"{s.errors:,}", _rate_cell(s.error_rate), fmt.ms(s.p50_ms),
            fmt.ms(s.p95_ms), fmt.ms(s.ttfb_p50_ms), fmt.ms(s.ttfb_p95_ms), agree]
    return (f'<tr class="{classes}">' + "".join(f"<td>{c}</td>" for c in (endpoint, model, series))
            + "".join(f'<td class="num">{c}</td>' for c in nums) + "</tr>")


def _header(report: Report) -> str:
    window = "no records"
    if report.start and report.end:
        span = fmt.span((report.end - report.start).total_seconds())
        window = f"<b>{fmt.when(report.start)}</b> to <b>{fmt.when(report.end)}</b> ({span})"
    read = f"{fmt.count(report.lines, 'line')} read"
    if report.bad:
        read += f", {fmt.count(report.bad, 'unreadable line')} skipped"
    if report.filtered:
        read += f", {report.filtered:,} outside --since/--until"
    totals = [f"<div>Requests<span>{report.requests:,}</span></div>",
              f"<div>Errors<span>{report.errors:,} "
              f'<small style="font-size:14px;color:#C9D6E3">'
              f"({fmt.rate(report.errors / report.requests if report.requests else None)})"
              "</small></span></div>"]
    for series, total in report.totals.items():
        totals.append(f'<div><i class="dot" style="background:{colour(series)}"></i>'
                      f"{e(series_label(series))}<span>{total.requests:,}</span></div>")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<header><div class="wrap"><div class="eyebrow">bastion-edge &#183; cutover '
            f'report</div><h1>How Bastion compares with OpenAI</h1>'
            f'<div class="meta">{e(report.source)} &#183; {window} &#183; {read} &#183; '
            f"generated {generated}</div>"
            f'<div class="totals">{"".join(totals)}</div></div></header>')


def _distributions(report: Report) -> str:
    series = [s for s in report.durations if s != PROXY and report.durations[s]]
    if not series:
        return ""
    overall = charts.distribution(
        histogram({s: report.durations[s] for s in series}), report.totals,
        "Latency distribution, all endpoints")
    ttfb_series = [s for s in series if report.ttfbs.get(s)]
    ttfb = charts.distribution(
        histogram({s: report.ttfbs[s] for s in ttfb_series}), report.totals,
        "Time to first byte distribution, all endpoints", ttfb=True)
    minis = []
    endpoints = [(ep, by) for ep, by in report.endpoint_durations.items()
                 if any(v for s, v in by.items() if s != PROXY)]
    if len(endpoints) > 1:
        for endpoint, by in endpoints[:MAX_ENDPOINT_CHARTS]:
            values = {s: v for s, v in by.items() if s != PROXY and v}
            marks = report.endpoint_totals.get(endpoint, {})
            chart = charts.distribution(histogram(values, max_bins=18), marks,
                                        f"Latency distribution, {endpoint}",
                                        width=380, height=220)
            minis.append(f'<div class="mini"><h3>{e(endpoint)}</h3>{chart}</div>')
    more = ""
    if minis:
        busiest = (f" (the {MAX_ENDPOINT_CHARTS} busiest)"
                   if len(endpoints) > MAX_ENDPOINT_CHARTS else "")
        more = (f'<div class="sub" style="margin-top:16px">Duration by endpoint{busiest}'
                f'</div><div class="grid3">{"".join(minis)}</div>')
    return ('<section class="panel"><h2>Latency distribution</h2>'
            '<div class="sub">Share of each destination&#8217;s requests per latency bin '
            "(log scale), overlaid so the shapes compare directly. Dashed line: p50; "
            f'solid line: p95.</div><div class="grid2"><div class="mini"><h3>Total duration'
            f'</h3>{overall}</div><div class="mini"><h3>Time to first byte</h3>{ttfb}</div>'
            f"</div>{more}</section>")


def _percentiles(report: Report) -> str:
    rows: list[charts.BarRow] = []
    for g in report.groups:
        if g.destination == PROXY:
            continue
        if rows and (rows[-1].endpoint, rows[-1].model) == (g.endpoint, g.model):
            rows[-1].bars.append((g.destination, g.summary))
        else:
            rows.append(charts.BarRow(g.endpoint, g.model, [(g.destination, g.summary)]))
    if not rows:
        return ""
    chart = charts.percentile_bars(rows, "p50 and p95 latency by endpoint and model")
    return ('<section class="panel"><h2>p50 / p95 latency by endpoint and model</h2>'
            '<div class="sub">Solid bar: median (p50); light bar: p95. Total duration of '
            f"the exchange as the app saw it.</div>{chart}</section>")


def _over_time(report: Report) -> str:
    tl = report.timeline
    if not tl.buckets:
        return ""
    rate = charts.error_rate_over_time(tl, "Error rate over time by destination")
    volume = charts.requests_over_time(tl, "Requests and errors over time by destination")
    return ('<section class="panel"><h2>Errors over time</h2>'
            f'<div class="sub">Buckets of {charts.bucket_phrase(tl.width_s)}. An error is an '
            "HTTP status of 400 or more, or no response at all.</div>"
            f'{rate}<div class="sub" style="margin-top:14px">Requests (light) and errors '
            f"(<b style=\"color:#A6400A\">vermillion</b>) per bucket, same scale for every "
            f"destination</div>{volume}</section>")


def _mirror(report: Report) -> str:
    m = report.mirror
    if m is None:
        return ""
    facts = [
        (fmt.rate(m.agreement), f"same shape ({m.matches:,} of {m.judged:,} judged)"),
        (f"{m.status_mismatches:,}", "status class differs (e.g. 200 vs 500)"),
        (f"{m.mirror_errors:,}", f"mirror copies failed (of {m.mirrored:,})"),
        (("+" if (m.median_delta_ms or 0) >= 0 else "&#8722;")
         + fmt.ms(abs(m.median_delta_ms)) if m.median_delta_ms is not None else "-",
         "median latency, Bastion copy minus OpenAI"),
    ]
    if m.skipped:
        facts.append((f"{m.skipped:,}", f"not copied: {skip_phrase(m)}"))
    body = "".join(f'<div class="fact"><b>{v}</b><span>{e(t)}</span></div>' for v, t in facts)
    diffs = ""
    if m.top_differences:
        rows = "".join(f'<tr><td class="num">{n:,}</td><td>{e(text)}</td></tr>'
                       for text, n in m.top_differences)
        diffs = ('<table style="width:auto;min-width:50%"><tr><th class="num">Exchanges</th>'
                 f"<th>Most common differences</th></tr>{rows}</table>")
    return ('<section class="panel"><h2>Mirror agreement</h2><div class="sub">Mirror mode '
            "serves the app from OpenAI and sends a copy to Bastion; these compare the two "
            f'responses.</div><div class="facts">{body}</div>{diffs}</section>')


def _table(report: Report) -> str:
    heads = ["Endpoint", "Model", "Destination"]
    nums = ["Requests", "Errors", "Error rate", "p50", "p95", "TTFB p50", "TTFB p95",
            "Agreement"]
    head = ("".join(f"<th>{h}</th>" for h in heads)
            + "".join(f'<th class="num">{h}</th>' for h in nums))
    return ('<section class="panel"><h2>By endpoint, model and destination</h2>'
            '<div class="sub">The same numbers as the terminal table. Rows marked '
            "&#8220;Bastion (mirror)&#8221; are the copies mirror mode sent to Bastion; "
            "&#8220;proxy (refused)&#8221; are requests bastion-edge answered itself.</div>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{_group_rows(report)}</tbody></table></div></section>")


def _notes(report: Report) -> str:
    bad = ""
    if report.bad_examples:
        items = "; ".join(f"line {n}: {e(why)}" for n, why in report.bad_examples)
        bad = f"<br>Skipped lines (first {len(report.bad_examples)}): {items}."
    return (
        '<p class="note">Percentiles interpolate linearly between ranks. Verdicts compare '
        "Bastion (served traffic, or mirror copies when none was served) with OpenAI, each "
        "on its 95 % interval (Wilson for a rate, Newcombe for a difference of rates, exact "
        "order statistics for a p95 ratio), and none is given under 30 exchanges a side. "
        "OK: the whole interval within the OK threshold; BAD: the whole interval past the "
        f"watch threshold; WATCH otherwise. Error rate OK within {ERROR_RATE_OK_PP:g} pp "
        f"of OpenAI, watch within {ERROR_RATE_WARN_PP:g} pp (without an OpenAI baseline: "
        f"{ERROR_RATE_OK_ABS * 100:g}% / {ERROR_RATE_WARN_ABS * 100:g}%); p95 ratio OK up "
        f"to {P95_RATIO_OK:g}x, watch up to {P95_RATIO_WARN:g}x; mirror agreement OK from "
        f"{AGREEMENT_OK * 100:g}%, watch from {AGREEMENT_WARN * 100:g}%. Generated by "
        f"<code>bastion-edge report</code>.{bad}</p>")


def render(report: Report) -> str:
    if report.groups:
        body = (f'<div class="cards">{"".join(_kpi_card(k) for k in report.kpis)}</div>'
                + _distributions(report) + _percentiles(report) + _over_time(report)
                + tokens_panel(report.tokens) + quota_panel(report.quotas)
                + _mirror(report) + agreement_panel(report.agreement) + _table(report)
                + _notes(report))
    else:
        body = ('<section class="panel"><div class="empty">No exchanges in this window.'
                "</div></section>" + _notes(report))
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Cutover report &#8211; {e(report.source)}</title>"
            f"<style>{CSS}</style></head><body>{_header(report)}"
            f'<main><div class="wrap">{body}</div></main></body></html>\n')

"""Inline SVG charts for the HTML report, generated as strings: no JS, no network.

Every chart is a self-contained `<svg>` with a viewBox, so it scales with the page;
bars and points carry `<title>` tooltips, which browsers show without any script.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from bastion_edge.report import fmt
from bastion_edge.report.stats import MIRROR, PROXY, Histogram, Summary, Timeline, series_label

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
SERIES_COLOURS = {"bastion": "#0072B2", "openai": "#E69F00", MIRROR: "#009E73",
                  "proxy": "#8C8C8C"}
# Darker variants for text on white (contrast >= 4.5:1).
SERIES_TEXT = {"bastion": "#005A8C", "openai": "#8A5A00", MIRROR: "#00704F",
               "proxy": "#595959"}
OTHER_COLOURS = ("#CC79A7", "#56B4E9", "#F0E442", "#000000")
ERROR_COLOUR = "#D55E00"
AXIS = "#8C959F"
GRID = "#EAEEF2"
INK = "#1F2328"
MUTED = "#57606A"
TIME_LEFT = 150  # the over-time charts share a time axis position


def colour(series: str) -> str:
    if series in SERIES_COLOURS:
        return SERIES_COLOURS[series]
    return OTHER_COLOURS[sum(map(ord, series)) % len(OTHER_COLOURS)]


def text_colour(series: str) -> str:
    return SERIES_TEXT.get(series, INK)


def model_label(model: str) -> str:
    """The log has no model for requests the proxy could not map."""
    return "(no model logged)" if model == "-" else model


def e(text: object) -> str:
    return escape(str(text), quote=True)


def fmt_tick_ms(value: float) -> str:
    if value >= 1000:
        seconds = value / 1000
        return f"{seconds:g}s"
    return f"{value:g}ms" if value >= 1 else f"{value:.2g}ms"


def nice_step(span: float, target: int = 5) -> float:
    """A 1/2/5 x 10^k step giving about `target` intervals over span."""
    if span <= 0:
        return 1.0
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def linear_ticks(high: float, target: int = 4) -> list[float]:
    step = nice_step(high, target)
    top = math.ceil(high / step - 1e-9) * step
    return [i * step for i in range(round(top / step) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks within [low, high]; only powers of ten when that would be crowded."""
    ticks = []
    for power in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for factor in (1, 2, 5):
            value = factor * 10.0 ** power
            if low <= value <= high:
                ticks.append(value)
    if len(ticks) > 9:
        ticks = [t for t in ticks if math.isclose(math.log10(t), round(math.log10(t)))]
    return ticks


@dataclass(frozen=True, slots=True)
class Frame:
    """A plot area inside an SVG of `width` x `height`."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top

    def open(self, label: str) -> str:
        return (f'<svg class="chart" viewBox="0 0 {self.width:g} {self.height:g}" '
                f'role="img" aria-label="{e(label)}" xmlns="http://www.w3.org/2000/svg">'
                f"<title>{e(label)}</title>")


def _f(value: float) -> str:
    return f"{value:.1f}"


def legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    """A row of swatches with labels: (colour, text)."""
    out = []
    for fill, text in items:
        out.append(f'<rect x="{_f(x)}" y="{_f(y - 9)}" width="12" height="12" rx="2" '
                   f'fill="{fill}"/>')
        out.append(f'<text x="{_f(x + 17)}" y="{_f(y + 1)}" class="lg">{e(text)}</text>')
        x += 30 + 6.6 * len(text)
    return "".join(out)


def empty_chart(label: str, message: str, width: float = 560, height: float = 120) -> str:
    frame = Frame(width, height, 0, 0, 0, 0)
    return (frame.open(label) + f'<rect x="0.5" y="0.5" width="{width - 1:g}" '
            f'height="{height - 1:g}" rx="8" fill="#F6F8FA" stroke="{GRID}"/>'
            f'<text x="{width / 2:g}" y="{height / 2 + 5:g}" text-anchor="middle" '
            f'class="muted">{e(message)}</text></svg>')


# ------------------------------------------------------------------ distributions

def distribution(hist: Histogram | None, marks: dict[str, Summary], label: str,
                 ttfb: bool = False, width: float = 560, height: float = 260) -> str:
    """Overlaid latency histograms (share of each series' requests per log-spaced bin),
    with dashed p50 and solid p95 markers per series."""
    if hist is None or not any(hist.totals.values()):
        return empty_chart(label, "no timings in this window", width, 140)
    series = [s for s, n in hist.totals.items() if n]
    legend_h = 17 * len(series) + 10
    frame = Frame(width, height + legend_h - 30, 46, 14, legend_h, 36)
    low, high = math.log10(hist.edges[0]), math.log10(hist.edges[-1])

    def x(value: float) -> float:
        return frame.x0 + (math.log10(value) - low) / (high - low) * (frame.x1 - frame.x0)

    shares = {s: [c / hist.totals[s] * 100 for c in hist.counts[s]] for s in series}
    y_max = max(max(v) for v in shares.values()) or 1.0
    ticks = linear_ticks(y_max, 4)
    y_top = ticks[-1] or 1.0

    def y(value: float) -> float:
        return frame.y0 - value / y_top * (frame.y0 - frame.y1)

    out = [frame.open(label), *_percent_grid(frame, ticks, y)]
    for t in log_ticks(hist.edges[0], hist.edges[-1]):
        out.append(f'<line x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{_f(frame.y0)}" '
                   f'y2="{_f(frame.y0 + 4)}" stroke="{AXIS}"/>')
        out.append(f'<text x="{_f(x(t))}" y="{_f(frame.y0 + 17)}" text-anchor="middle" '
                   f'class="tick">{fmt_tick_ms(t)}</text>')
    out.append(f'<line x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" y1="{_f(frame.y0)}" '
               f'y2="{_f(frame.y0)}" stroke="{AXIS}"/>')
    out.append(f'<text x="{_f(frame.x1)}" y="{_f(frame.height - 4)}" text-anchor="end" '
               f'class="axis">{"time to first byte" if ttfb else "duration"} '
               f'(log scale) &#8594;</text>')

    for s in series:
        points = [(frame.x0, frame.y0)]
        for i, share in enumerate(shares[s]):
            points += [(x(hist.edges[i]), y(share)), (x(hist.edges[i + 1]), y(share))]
        points.append((frame.x1, frame.y0))
        path = " ".join(f"{_f(px)},{_f(py)}" for px, py in points)
        out.append(f'<polygon points="{path}" fill="{colour(s)}" fill-opacity="0.16"/>')
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour(s)}" '
                   f'stroke-width="2" stroke-linejoin="round"/>')
        for i, count in enumerate(hist.counts[s]):  # tooltips per bin
            if count:
                out.append(
                    f'<rect x="{_f(x(hist.edges[i]))}" y="{_f(y(shares[s][i]))}" '
                    f'width="{_f(x(hist.edges[i + 1]) - x(hist.edges[i]))}" '
                    f'height="{_f(frame.y0 - y(shares[s][i]))}" fill="transparent">'
                    f"<title>{e(series_label(s))}: {count} requests "
                    f"({shares[s][i]:.1f}%) between {fmt.ms(hist.edges[i])} and "
                    f"{fmt.ms(hist.edges[i + 1])}</title></rect>")

    for s in series:
        summary = marks.get(s)
        if summary is None:
            continue
        p50 = summary.ttfb_p50_ms if ttfb else summary.p50_ms
        p95 = summary.ttfb_p95_ms if ttfb else summary.p95_ms
        for value, name, dash in ((p50, "p50", "5 4"), (p95, "p95", "")):
            if value is None or value <= 0:
                continue
            px = min(max(x(value), frame.x0), frame.x1)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{_f(frame.y1)}" '
                       f'y2="{_f(frame.y0)}" stroke="{text_colour(s)}" '
                       f'stroke-width="1.6"{dash_attr}><title>{e(series_label(s))} {name} '
                       f"{fmt.ms(value)}</title></line>")

    for row, s in enumerate(series):  # one legend line per series, with its percentiles
        ly = 14 + 17 * row
        summary = marks.get(s)
        p50 = (summary.ttfb_p50_ms if ttfb else summary.p50_ms) if summary else None
        p95 = (summary.ttfb_p95_ms if ttfb else summary.p95_ms) if summary else None
        out.append(f'<rect x="{_f(frame.x0)}" y="{_f(ly - 9)}" width="12" height="12" rx="2" '
                   f'fill="{colour(s)}"/>')
        out.append(f'<text x="{_f(frame.x0 + 18)}" y="{_f(ly + 1)}" class="lg">'
                   f'<tspan font-weight="600" fill="{text_colour(s)}">{e(series_label(s))}'
                   f"</tspan>  p50 {fmt.ms(p50)} · p95 {fmt.ms(p95)} · "
                   f"n={hist.totals[s]:,}</text>")
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ p50 / p95 bars

@dataclass(frozen=True, slots=True)
class BarRow:
    endpoint: str
    model: str
    bars: list[tuple[str, Summary]]  # (series, summary)


def percentile_bars(rows: Sequence[BarRow], label: str, width: float = 1160) -> str:
    """Per (endpoint, model): one bar per series, solid to p50, light to p95.
    Each row block has its own scale (labelled), so embeddings stay readable next
    to chat."""
    rows = [r for r in rows if any(s.p95_ms is not None for _, s in r.bars)]
    if not rows:
        return empty_chart(label, "no timings in this window", width)
    bar_h, bar_gap, block_gap, label_w, value_w = 18, 6, 18, 260, 310
    heights = [max(len(r.bars) * (bar_h + bar_gap) - bar_gap, 34) for r in rows]
    height = 34 + sum(heights) + block_gap * (len(rows) - 1) + 8
    plot_x0, plot_x1 = label_w, width - value_w
    frame = Frame(width, height, 0, 0, 0, 0)
    out = [frame.open(label)]
    out.append(legend([("#4A5560", "p50"), ("#C9D1D9", "p95")], plot_x0, 14))
    out.append(f'<text x="{_f(width)}" y="15" text-anchor="end" class="muted">'
               "bars share a scale within each endpoint and model</text>")
    y = 34.0
    for row, block_h in zip(rows, heights, strict=True):
        block_top = y
        top = max((s.p95_ms or s.p50_ms or 0.0) for _, s in row.bars) or 1.0
        scale = (plot_x1 - plot_x0) / top
        out.append(f'<text x="0" y="{_f(y + 13)}" class="rowlabel">{e(row.endpoint)}</text>')
        out.append(f'<text x="0" y="{_f(y + 29)}" class="rowsub">'
                   f"{e(model_label(row.model))}</text>")
        out.append(f'<line x1="{_f(plot_x0)}" x2="{_f(plot_x0)}" y1="{_f(y - 3)}" '
                   f'y2="{_f(y + block_h + 3)}" stroke="{AXIS}"/>')
        for series, s in row.bars:
            p50, p95 = s.p50_ms, s.p95_ms
            tip = (f"{series_label(series)} — {row.endpoint} {row.model}: "
                   f"p50 {fmt.ms(p50)}, p95 {fmt.ms(p95)}, {s.requests} requests")
            if p95 is not None:
                out.append(f'<rect x="{_f(plot_x0)}" y="{_f(y)}" width="{_f(p95 * scale)}" '
                           f'height="{bar_h}" rx="3" fill="{colour(series)}" '
                           f'fill-opacity="0.32"><title>{e(tip)}</title></rect>')
            if p50 is not None:
                out.append(f'<rect x="{_f(plot_x0)}" y="{_f(y)}" width="{_f(p50 * scale)}" '
                           f'height="{bar_h}" rx="3" fill="{colour(series)}">'
                           f"<title>{e(tip)}</title></rect>")
            out.append(f'<text x="{_f(plot_x1 + 10)}" y="{_f(y + 13)}" class="val">'
                       f'<tspan fill="{text_colour(series)}" font-weight="600">'
                       f"{e(series_label(series))}</tspan>  p50 {fmt.ms(p50)} · "
                       f"p95 {fmt.ms(p95)}</text>")
            y += bar_h + bar_gap
        y = block_top + block_h + block_gap
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ over time

def _time_label(when: datetime, width_s: float, multi_day: bool) -> str:
    if width_s < 1:
        return when.strftime("%H:%M:%S.%f")[:-5]
    if width_s >= 86400:
        return when.strftime("%b %d")
    if multi_day:
        return when.strftime("%d %H:%M")
    return when.strftime("%H:%M:%S" if width_s < 60 else "%H:%M")


def _tip_time(when: datetime, width_s: float) -> str:
    text = when.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-5] if width_s < 1 else text[:-7]


def _time_axis(tl: Timeline, to_x: Callable[[float], float], frame: Frame) -> list[str]:
    n = len(tl.buckets)
    multi_day = tl.buckets[0].start.date() != tl.buckets[-1].start.date()
    every = max(1, math.ceil(n / 8))
    out = []
    for i in range(0, n, every):
        px = to_x(i)
        out.append(f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{_f(frame.y0)}" '
                   f'y2="{_f(frame.y0 + 4)}" stroke="{AXIS}"/>')
        out.append(f'<text x="{_f(px)}" y="{_f(frame.y0 + 17)}" text-anchor="middle" '
                   f'class="tick">{_time_label(tl.buckets[i].start, tl.width_s, multi_day)}'
                   "</text>")
    return out


def bucket_phrase(width_s: float) -> str:
    for unit, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if width_s >= unit and width_s % unit == 0:
            return f"{width_s / unit:g} {name}"
    return f"{width_s:g} s"


def error_rate_over_time(tl: Timeline, label: str, width: float = 1160,
                         height: float = 230, exclude: Sequence[str] = (PROXY,)) -> str:
    """Error rate per bucket, one line per series (gaps where a series had no traffic).
    The proxy's own refusals are left out: they are all errors by definition."""
    series = [s for s in tl.series if s not in exclude]
    if not tl.buckets or not series:
        return empty_chart(label, "no requests in this window", width)
    frame = Frame(width, height, TIME_LEFT, 16, 34, 30)  # aligned with requests_over_time
    n = len(tl.buckets)
    slot = (frame.x1 - frame.x0) / n

    def x(i: float) -> float:
        return frame.x0 + (i + 0.5) * slot

    rates = {s: [(b.counts[s][1] / b.counts[s][0] * 100) if b.counts.get(s, (0, 0))[0]
                 else None for b in tl.buckets] for s in series}
    peak = max((r for rs in rates.values() for r in rs if r is not None), default=0.0)
    ticks = linear_ticks(max(peak, 5.0), 4)
    y_top = ticks[-1]

    def y(value: float) -> float:
        return frame.y0 - value / y_top * (frame.y0 - frame.y1)

    out = [frame.open(label), *_percent_grid(frame, ticks, y)]
    out.append(f'<line x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" y1="{_f(frame.y0)}" '
               f'y2="{_f(frame.y0)}" stroke="{AXIS}"/>')
    out += _time_axis(tl, x, frame)
    for s in series:
        runs: list[list[tuple[float, float]]] = [[]]
        for i, rate in enumerate(rates[s]):
            if rate is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append((x(i), y(rate)))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{_f(px)},{_f(py)}" for px, py in run)
                out.append(f'<polyline points="{points}" fill="none" stroke="{colour(s)}" '
                           f'stroke-width="2.2" stroke-linejoin="round"/>')
        for i, rate in enumerate(rates[s]):
            if rate is None:
                continue
            requests, errors = tl.buckets[i].counts[s]
            radius = 3.2 if errors else 2.2
            out.append(f'<circle cx="{_f(x(i))}" cy="{_f(y(rate))}" r="{radius}" '
                       f'fill="{colour(s)}" stroke="#fff" stroke-width="0.8">'
                       f"<title>{e(series_label(s))} "
                       f"{_tip_time(tl.buckets[i].start, tl.width_s)}: {errors} of {requests} "
                       f"failed ({rate:.1f}%)</title></circle>")
    out.append(legend([(colour(s), series_label(s)) for s in series], frame.x0, 16))
    out.append(f'<text x="0" y="{_f(frame.y1 + 14)}" class="rowlabel">Error rate</text>'
               f'<text x="0" y="{_f(frame.y1 + 32)}" class="rowsub">per '
               f"{bucket_phrase(tl.width_s)}</text>")
    out.append("</svg>")
    return "".join(out)


def requests_over_time(tl: Timeline, label: str, width: float = 1160,
                       row_height: float = 74) -> str:
    """Small multiples, one per series on a shared scale: requests per bucket as light
    bars with the failed ones in solid vermillion from the baseline."""
    if not tl.buckets:
        return empty_chart(label, "no requests in this window", width)
    n = len(tl.buckets)
    top_pad, gap = 8, 22
    height = top_pad + len(tl.series) * (row_height + gap) + 18
    frame = Frame(width, height, TIME_LEFT, 16, top_pad, 24)
    slot = (frame.x1 - frame.x0) / n
    peak = max(tl.max_requests(), 1)
    out = [frame.open(label)]
    y_base = float(top_pad)
    for s in tl.series:
        y0 = y_base + row_height
        total = sum(b.counts.get(s, (0, 0))[0] for b in tl.buckets)
        failed = sum(b.counts.get(s, (0, 0))[1] for b in tl.buckets)
        out.append(f'<text x="0" y="{_f(y_base + 26)}" class="rowlabel" '
                   f'fill="{text_colour(s)}">{e(series_label(s))}</text>')
        out.append(f'<text x="0" y="{_f(y_base + 44)}" class="rowsub">'
                   f"{fmt.count(total, 'request')}</text>")
        out.append(f'<text x="0" y="{_f(y_base + 60)}" class="rowsub" '
                   f'fill="{"#A6400A" if failed else MUTED}">{fmt.count(failed, "error")}</text>')
        out.append(f'<text x="{_f(frame.x0 - 6)}" y="{_f(y_base + 9)}" text-anchor="end" '
                   f'class="tick">{peak:,}</text>')
        out.append(f'<line x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" y1="{_f(y_base)}" '
                   f'y2="{_f(y_base)}" stroke="{GRID}"/>')
        for i, b in enumerate(tl.buckets):
            requests, errors = b.counts.get(s, (0, 0))
            if not requests:
                continue
            bw = min(slot * 0.76, 36.0)
            bx = frame.x0 + (i + 0.5) * slot - bw / 2
            h = requests / peak * row_height
            tip = (f"{series_label(s)} {_tip_time(b.start, tl.width_s)}: {requests} requests, "
                   f"{errors} errors")
            out.append(f'<rect x="{_f(bx)}" y="{_f(y0 - h)}" width="{_f(bw)}" '
                       f'height="{_f(h)}" fill="{colour(s)}" fill-opacity="0.35">'
                       f"<title>{e(tip)}</title></rect>")
            if errors:
                eh = max(errors / peak * row_height, 2.0)
                out.append(f'<rect x="{_f(bx)}" y="{_f(y0 - eh)}" width="{_f(bw)}" '
                           f'height="{_f(eh)}" fill="{ERROR_COLOUR}">'
                           f"<title>{e(tip)}</title></rect>")
        out.append(f'<line x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" y1="{_f(y0)}" '
                   f'y2="{_f(y0)}" stroke="{AXIS}"/>')
        y_base = y0 + gap
    axis_frame = Frame(width, y_base - gap + 24, frame.left, frame.right, 0, 24)
    out += _time_axis(tl, lambda i: frame.x0 + (i + 0.5) * slot, axis_frame)
    out.append("</svg>")
    return "".join(out)


def _percent_grid(frame: Frame, ticks: list[float], y: Callable[[float], float]) -> list[str]:
    """Horizontal grid lines with their percentage labels."""
    out = []
    for t in ticks:
        out.append(f'<line x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" y1="{_f(y(t))}" '
                   f'y2="{_f(y(t))}" stroke="{GRID}"/>')
        out.append(f'<text x="{_f(frame.x0 - 6)}" y="{_f(y(t) + 4)}" text-anchor="end" '
                   f'class="tick">{t:g}%</text>')
    return out

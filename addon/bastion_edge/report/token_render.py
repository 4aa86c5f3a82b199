"""The tokens section of the report: terminal lines, and an HTML panel with inline SVG.

Cost figures appear only with a price table, always labelled as an estimate from the
user's own prices (rules.yaml `usage.prices`), never as a bill.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion_edge.report import fmt
from bastion_edge.report.charts import Frame, colour, e, legend, model_label, text_colour
from bastion_edge.report.stats import series_label
from bastion_edge.report.tokens import (
    MIN_PROJECTION_S,
    Comparison,
    TokenGroup,
    TokenReport,
    TokenStats,
)

ESTIMATE_COLOUR = "#8250DF"  # the estimate callout's border: marks every cost figure
ESTIMATE_NOTE = ("Estimate from your own prices (rules.yaml usage.prices, per million "
                 "tokens), not a bill.")


def per_request(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def money(value: float | None, currency: str) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    digits = 2 if amount >= 1 else 4
    return f"{sign}{amount:,.{digits}f} {currency}"


# ------------------------------------------------------------------ terminal

def terminal_lines(tokens: TokenReport) -> list[str]:
    from bastion_edge.report.terminal import table

    if not tokens.groups:
        return []
    out = ["", f"tokens, as the upstream reported them ({tokens.reported:,} exchanges; "
               f"{tokens.unreported:,} without usage, not estimated):"]
    # destination first: the main table's rows start with endpoint and model
    header = ("destination", "endpoint", "model", "requests", "w/ usage", "in/req", "out/req",
              "out/in", "cached", "reasoning", "est. cost")
    rows = [[g.destination, g.endpoint, model_label(g.model), str(g.stats.requests),
             str(g.stats.reported), per_request(g.stats.mean_input),
             per_request(g.stats.mean_output), ratio(g.stats.output_ratio),
             f"{g.stats.cached_input:,}", f"{g.stats.reasoning:,}",
             money(g.cost, tokens.currency) if tokens.priced else ""]
            for g in tokens.groups]
    out.extend(table(rows, header, frozenset(range(3, 11))))
    if tokens.comparisons:
        out += ["", "Bastion vs OpenAI, same app and endpoint (tokens per request):"]
        rows = [[c.app, c.endpoint, per_request(c.bastion.mean_input),
                 per_request(c.openai.mean_input), ratio(c.ratio("input")),
                 per_request(c.bastion.mean_output), per_request(c.openai.mean_output),
                 ratio(c.ratio("output"))] for c in tokens.comparisons]
        out.extend(table(rows, ("app", "endpoint", "in Bastion", "in OpenAI", "ratio",
                                "out Bastion", "out OpenAI", "ratio"), frozenset(range(2, 8))))
    if tokens.priced:
        out += ["", f"ESTIMATE: {ESTIMATE_NOTE}"]
        for line in tokens.costs:
            unpriced = f", {line.unpriced:,} without a price" if line.unpriced else ""
            out.append(f"  cost on {series_label(line.destination)}: "
                       f"{money(line.cost, tokens.currency)} ({line.priced:,} exchanges"
                       f"{unpriced})")
        for line in tokens.costs:
            out.append(f"  per 1,000 requests on {series_label(line.destination)}: "
                       f"{money(line.per_thousand, tokens.currency)}")
        if tokens.monthly_saving is not None:
            out.append(f"  projected monthly saving at the observed rate: "
                       f"{money(tokens.monthly_saving, tokens.currency)} (a window of "
                       f"{fmt.span(tokens.window_s)} scaled to 30 days)")
        elif tokens.window_s < MIN_PROJECTION_S:
            out.append(f"  no monthly projection: the window ({fmt.span(tokens.window_s)}) "
                       "is shorter than an hour")
    return out


# ------------------------------------------------------------------ HTML

def _f(value: float) -> str:
    return f"{value:.1f}"


def tokens_chart(groups: Sequence[TokenGroup], label: str, width: float = 1160) -> str:
    """Mean input (solid) and output (light) tokens per request, one row per group,
    every row on one scale."""
    rows = [g for g in groups if g.stats.reported]
    bar_h, gap, label_w, value_w = 14, 12, 330, 250
    height = 30 + len(rows) * (2 * bar_h + 2 + gap) + 6
    frame = Frame(width, height, 0, 0, 0, 0)
    x0, x1 = label_w, width - value_w
    top = max(max(g.stats.mean_input or 0, g.stats.mean_output or 0) for g in rows) or 1.0
    scale = (x1 - x0) / top
    out = [frame.open(label),
           legend([("#4A5560", "input tokens per request"),
                   ("#C9D1D9", "output tokens per request")], x0, 14)]
    y = 30.0
    for g in rows:
        served = g.upstream_model or g.model
        out.append(f'<text x="0" y="{_f(y + 12)}" class="rowlabel">{e(g.endpoint)} · '
                   f"{e(model_label(g.model))}</text>")
        out.append(f'<text x="0" y="{_f(y + 28)}" class="rowsub" '
                   f'fill="{text_colour(g.destination)}">{e(series_label(g.destination))}: '
                   f"{e(served)}</text>")
        for i, (value, opacity, what) in enumerate(((g.stats.mean_input, "1", "input"),
                                                    (g.stats.mean_output, "0.45", "output"))):
            bar_y = y + i * (bar_h + 2)
            tip = (f"{series_label(g.destination)} — {g.endpoint} {g.model}: "
                   f"{per_request(value)} {what} tokens per request ({g.stats.reported} "
                   "with usage)")
            out.append(f'<rect x="{_f(x0)}" y="{_f(bar_y)}" width="{_f((value or 0) * scale)}" '
                       f'height="{bar_h}" rx="3" fill="{colour(g.destination)}" '
                       f'fill-opacity="{opacity}"><title>{e(tip)}</title></rect>')
        out.append(f'<text x="{_f(x1 + 10)}" y="{_f(y + 12)}" class="val">in '
                   f"{per_request(g.stats.mean_input)} · out {per_request(g.stats.mean_output)}"
                   f"</text>")
        out.append(f'<text x="{_f(x1 + 10)}" y="{_f(y + 28)}" class="muted">out/in '
                   f"{ratio(g.stats.output_ratio)}</text>")
        y += 2 * bar_h + 2 + gap
    out.append("</svg>")
    return "".join(out)


def _group_rows(tokens: TokenReport) -> str:
    rows = []
    for g in tokens.groups:
        s = g.stats
        cost = f'<td class="num">{money(g.cost, tokens.currency)}</td>' if tokens.priced else ""
        rows.append(
            f"<tr><td>{e(g.endpoint)}</td><td>{e(model_label(g.model))}</td>"
            f'<td><span class="sw" style="background:{colour(g.destination)}"></span>'
            f"{e(series_label(g.destination))}</td><td>{e(g.upstream_model or '-')}</td>"
            f'<td class="num">{s.requests:,}</td><td class="num">{s.reported:,}</td>'
            f'<td class="num">{per_request(s.mean_input)}</td>'
            f'<td class="num">{per_request(s.mean_output)}</td>'
            f'<td class="num">{ratio(s.output_ratio)}</td>'
            f'<td class="num">{s.cached_input:,}</td><td class="num">{s.reasoning:,}</td>'
            f"{cost}</tr>")
    return "".join(rows)


def _comparison(comparisons: Sequence[Comparison]) -> str:
    if not comparisons:
        return ('<div class="sub" style="margin-top:12px">No app and endpoint was served by '
                "both Bastion and OpenAI in this window (a split or observe-then-rewrite "
                "cutover gives the comparison).</div>")

    def side(b: TokenStats, o: TokenStats, ratio_value: float | None, which: str) -> str:
        mean_b = b.mean_input if which == "input" else b.mean_output
        mean_o = o.mean_input if which == "input" else o.mean_output
        return (f'<td class="num">{per_request(mean_b)}</td>'
                f'<td class="num">{per_request(mean_o)}</td>'
                f'<td class="num"><b>{ratio(ratio_value)}</b></td>')
    rows = "".join(
        f"<tr><td>{e(c.app)}</td><td>{e(c.endpoint)}</td>"
        + side(c.bastion, c.openai, c.ratio("input"), "input")
        + side(c.bastion, c.openai, c.ratio("output"), "output")
        + f'<td class="num">{ratio(c.bastion.output_ratio)}</td>'
          f'<td class="num">{ratio(c.openai.output_ratio)}</td></tr>'
        for c in comparisons)
    heads = ["Input / req Bastion", "OpenAI", "Bastion ÷ OpenAI", "Output / req Bastion",
             "OpenAI", "Bastion ÷ OpenAI", "Out/in Bastion", "Out/in OpenAI"]
    head = "<th>App</th><th>Endpoint</th>" + "".join(f'<th class="num">{h}</th>' for h in heads)
    return ('<h3 style="margin:16px 0 4px;font-size:14px">Bastion against OpenAI, same app '
            'and endpoint</h3><div class="sub">Mean tokens per request on each side; a ratio '
            "above 1 means Bastion's model used more tokens for the same traffic.</div>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}'
            "</tbody></table></div>")


def _estimate(tokens: TokenReport) -> str:
    if not tokens.priced:
        return ('<p class="note">Add a price table to rules.yaml (<code>usage.prices</code>, '
                "per model, per million input and output tokens) to see the estimated cost "
                "per destination and the projected monthly saving.</p>")
    facts = [(money(line.cost, tokens.currency),
              f"estimated cost on {series_label(line.destination)} ({line.priced:,} exchanges"
              + (f", {line.unpriced:,} without a price" if line.unpriced else "") + ")")
             for line in tokens.costs]
    facts += [(money(line.per_thousand, tokens.currency),
               f"per 1,000 requests on {series_label(line.destination)}")
              for line in tokens.costs]
    saving = tokens.monthly_saving
    if saving is not None:
        facts.append((money(saving, tokens.currency),
                      f"projected monthly saving at the observed rate (a "
                      f"{fmt.span(tokens.window_s)} window scaled to 30 days)"))
    elif tokens.window_s < MIN_PROJECTION_S:
        facts.append(("-", f"no monthly projection: the window ({fmt.span(tokens.window_s)})"
                           " is shorter than an hour"))
    body = "".join(f'<div class="fact"><b>{v}</b><span>{e(t)}</span></div>' for v, t in facts)
    rows = "".join(
        f"<tr><td>{e(s.app)}</td><td>{e(s.endpoint)}</td><td>{e(model_label(s.model))}</td>"
        f'<td class="num">{s.monthly_requests:,.0f}</td>'
        f'<td class="num">{money(s.openai_per_request, tokens.currency)}</td>'
        f'<td class="num">{money(s.bastion_per_request, tokens.currency)}</td>'
        f'<td class="num">{money(s.monthly_saving, tokens.currency)}</td>'
        f"<td>{'observed on both' if s.basis == 'observed' else 'OpenAI price of Bastion tokens'}"
        "</td></tr>" for s in tokens.savings)
    table = ("" if not rows else
             '<div class="scroll"><table><thead><tr><th>App</th><th>Endpoint</th><th>Model</th>'
             '<th class="num">Requests / month</th><th class="num">OpenAI / req</th>'
             '<th class="num">Bastion / req</th><th class="num">Saving / month</th>'
             f"<th>OpenAI cost from</th></tr></thead><tbody>{rows}</tbody></table></div>")
    return (f'<div class="estimate" style="border-left:6px solid {ESTIMATE_COLOUR};'
            'background:#FBEFFF;border-radius:8px;padding:12px 14px;margin-top:16px">'
            f'<div style="font-weight:700;color:{ESTIMATE_COLOUR};letter-spacing:.04em">'
            f"ESTIMATE</div><div class=\"sub\">{e(ESTIMATE_NOTE)} Costs use the model that "
            "served (Bastion's id on Bastion, the app's model on OpenAI); the saving compares "
            "all of an app's traffic on OpenAI with all of it on Bastion.</div>"
            f'<div class="facts">{body}</div>{table}</div>')


def tokens_panel(tokens: TokenReport | None) -> str:
    if tokens is None or not tokens.groups:
        return ""
    total_in = sum(g.stats.input for g in tokens.groups)
    total_out = sum(g.stats.output for g in tokens.groups)
    facts = [(f"{total_in:,}", "input tokens reported"), (f"{total_out:,}", "output tokens "
              "reported"), (f"{tokens.reported:,}", "exchanges with usage"),
             (f"{tokens.unreported:,}", "successful exchanges without usage (not estimated)")]
    body = "".join(f'<div class="fact"><b>{v}</b><span>{e(t)}</span></div>' for v, t in facts)
    chart = tokens_chart(tokens.groups, "Tokens per request by endpoint, model and destination") \
        if tokens.reported else ""
    head = ("<th>Endpoint</th><th>Model</th><th>Destination</th><th>Served by</th>"
            + "".join(f'<th class="num">{h}</th>' for h in
                      ["Requests", "With usage", "Input / req", "Output / req", "Out / in",
                       "Cached input", "Reasoning"])
            + ('<th class="num">Est. cost</th>' if tokens.priced else ""))
    return ('<section class="panel" id="tokens"><h2>Tokens</h2><div class="sub">As the '
            "upstream reported them in each reply's <code>usage</code>; exchanges without it "
            f'are counted, never estimated.</div><div class="facts">{body}</div>{chart}'
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{_group_rows(tokens)}</tbody></table></div>"
            f"{_comparison(tokens.comparisons)}{_estimate(tokens)}</section>")

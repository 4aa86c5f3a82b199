"""The quota section of the report (report/quota_use.py): terminal lines and an HTML panel."""

from __future__ import annotations

import textwrap
from html import escape as e

from bastion_edge.core.quota import DAY_SECONDS
from bastion_edge.report import fmt
from bastion_edge.report.quota_use import DEFAULT, OWN, AppQuotaUse, Peak, QuotaUse, percent

RULES_HINT = ("quotas come from the rules file: --rules, else $BASTION_RULES, else "
              "./rules.yaml (clients.apps[].quota, clients.default_quota)")
COUNTED_NOTE = ("Counted as the proxy counts: POST requests that went upstream (Bastion, "
                "OpenAI, speech), in the fixed UTC minute or day they started; tokens are "
                "input + output as the upstream reported them.")
SCOPE_NOTE = ("This log only: the --workers of one run append to this one file, but other "
              "replicas or proxies write logs of their own and are not in these figures "
              "(a Redis quota store counts them all).")
PARTIAL_NOTE = ("A partial window is one the log does not cover whole (it starts or ends "
                "inside it): the whole window may hold more than the figure.")
REFUSED_NOTE = ("Refused 429: over the quota (rate_limit_exceeded); refused 503: the quota "
                "store was unreachable (quota_store_unavailable, outage mode fail_closed).")
WRAP = 100  # terminal notes
SOURCES = {OWN: "own", DEFAULT: "default"}
LABELS = {"requests_per_minute": "requests/min", "tokens_per_minute": "tokens/min",
          "tokens_per_day": "tokens/day"}


def use_text(peak: Peak, limit: int | None) -> str:
    """`2/2 (100.0%)`; `-` where the quota sets no limit."""
    if limit is None:
        return "-"
    return f"{peak.used:,}/{limit:,} ({fmt.rate(peak.used / limit)})"


def window_text(peak: Peak) -> str:
    """Which window the peak was in, and whether the log covers all of it."""
    if peak.start is None:
        return "nothing counted"
    minute = peak.seconds < DAY_SECONDS
    when = peak.start.strftime("%Y-%m-%d %H:%MZ" if minute else "%Y-%m-%d")
    text = f"busiest {'minute' if minute else 'day'} {when}"
    if peak.partial:
        covers = fmt.span(peak.covered_s) if peak.covered_s >= 1 else "under a second"
        text += f" (partial: the log covers {covers} of it)"
    return text


def _dims(app: AppQuotaUse) -> list[tuple[Peak, int | None]]:
    q = app.quota
    return [(app.requests_minute, q.requests_per_minute),
            (app.tokens_minute, q.tokens_per_minute), (app.tokens_day, q.tokens_per_day)]


def _notes(use: QuotaUse) -> list[str]:
    notes = [COUNTED_NOTE]
    if any(p.partial for a in use.apps for _, p, _ in a.limited()):
        notes.append(PARTIAL_NOTE)
    if use.unreported:
        notes.append(f"Counted requests without a reported usage: {use.unreported:,} (their "
                     "tokens are not in the token figures).")
    if use.no_method:
        notes.append("Upstream exchanges without a method in the log (not counted): "
                     f"{use.no_method:,}.")
    notes.append(SCOPE_NOTE)
    return notes


# ------------------------------------------------------------------ terminal

def terminal_lines(use: QuotaUse | None) -> list[str]:
    from bastion_edge.report.terminal import table

    if use is None or (use.rules and not use.apps):
        return []
    out = [""]
    if not use.rules:
        out.extend(textwrap.wrap(f"quotas: no rules file read; {RULES_HINT}", WRAP,
                                 subsequent_indent="    "))
    if not use.apps:
        return out
    out.append("quota use per app (peak in the busiest window against the limit):")
    header = ("app", "quota", "counted", "refused 429", "refused 503", "no usage",
              "requests/min", "tokens/min", "tokens/day")
    rows = [[a.app, SOURCES.get(a.source, "-"), f"{a.counted:,}", f"{a.refused_quota:,}",
             f"{a.refused_outage:,}", f"{a.unreported:,}",
             *(use_text(p, limit) for p, limit in _dims(a))] for a in use.apps]
    out.extend(table(rows, header, frozenset({2, 3, 4, 5})))
    for a in use.apps:
        out.extend(f"  {a.app} {LABELS[name]}: {window_text(p)}"
                   for name, p, _ in a.limited())
    notes = [REFUSED_NOTE, *_notes(use)]
    out.extend(line for note in notes
               for line in textwrap.wrap(note, WRAP, initial_indent="  ",
                                         subsequent_indent="    "))
    return out


# ------------------------------------------------------------------ HTML

def _bar(share: float | None) -> str:
    if share is None:
        return ""
    colour = "#CF222E" if share >= 100 else "#9A6700" if share >= 80 else "#1A7F37"
    return (f'<div style="background:#EAEEF2;border-radius:3px;height:6px;margin:3px 0;'
            f'width:120px"><div style="background:{colour};border-radius:3px;height:6px;'
            f'width:{min(share, 100) * 1.2:.0f}px"></div></div>')


def _cell(peak: Peak, limit: int | None) -> str:
    if limit is None:
        return "<td>&#8211;</td>"
    return (f'<td style="min-width:170px"><b>{e(use_text(peak, limit))}</b>'
            f"{_bar(percent(peak.used, limit))}"
            f'<div style="font-size:11.5px;color:#6E7781">'
            f"{e(window_text(peak))}</div></td>")


def quota_panel(use: QuotaUse | None) -> str:
    if use is None or (use.rules and not use.apps):
        return ""
    if not use.apps:
        return f'<p class="note">No quota use shown: {e(RULES_HINT)}.</p>'
    rows = "".join(
        f"<tr><td>{e(a.app)}</td><td style=\"white-space:nowrap\">"
        f"{SOURCES.get(a.source, '&#8211;')}</td>"
        + "".join(f'<td class="num">{n:,}</td>' for n in
                  (a.counted, a.refused_quota, a.refused_outage, a.unreported))
        + "".join(_cell(p, limit) for p, limit in _dims(a)) + "</tr>" for a in use.apps)
    nums = ["Counted", "Refused (429)", "Store outage (503)", "No usage"]
    head = ("<th>App</th><th>Quota</th>" + "".join(f'<th class="num">{h}</th>' for h in nums)
            + "".join(f"<th>{h}</th>" for h in
                      ("Requests / min", "Tokens / min", "Tokens / day")))
    hint = "" if use.rules else f" No rules file was read: {e(RULES_HINT)}."
    notes = " ".join(e(n) for n in _notes(use))
    return ('<section class="panel" id="quotas"><h2>Quota use per app</h2><div class="sub">'
            "Each app's busiest UTC minute and day against its quota, and the requests the "
            "proxy refused: 429 <code>rate_limit_exceeded</code> over the quota, 503 "
            f"<code>quota_store_unavailable</code> when the quota store was down.{hint}</div>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}'
            f'</tbody></table></div><p class="note">{notes}</p></section>')

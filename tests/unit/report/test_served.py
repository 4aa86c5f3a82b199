"""OpenAI rows are served by OpenAI's model; no monthly projection from under an hour."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bastion_edge.config.usage_rules import Price
from bastion_edge.report import html, terminal
from bastion_edge.report.load import LoadResult, Record, Tokens
from bastion_edge.report.stats import build_report, group_records
from bastion_edge.report.tokens import build_tokens, served_model

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = {"gpt-4o": Price(2.5, 10.0), "gpt-oss-*": Price(0.1, 0.5)}


def rec(destination: str, seconds: float, tokens: Tokens | None, status: int = 200) -> Record:
    return Record(time=T0 + timedelta(seconds=seconds), endpoint="chat.completions",
                  model="gpt-4o", destination=destination, status=status, duration_ms=10.0,
                  ttfb_ms=5.0, upstream_model="gpt-oss-120b",  # observe logs the would-be model
                  app="billing", tokens=tokens)


def sample() -> list[Record]:
    """One hour, as in test_tokens.py: two answers on each side, one without usage."""
    return [rec("bastion", 0, Tokens(100, 40, 10, 0)), rec("bastion", 600, Tokens(100, 40)),
            rec("openai", 1200, Tokens(100, 20)), rec("openai", 1800, Tokens(100, 20)),
            rec("bastion", 2400, None), rec("bastion", 3000, None, status=500),
            rec("proxy", 3600, None, status=400)]


def test_openai_rows_are_served_by_the_model_openai_served() -> None:
    tokens = build_tokens(sample())
    bastion, openai = tokens.groups
    assert bastion.upstream_model == "gpt-oss-120b"
    assert openai.upstream_model == "gpt-4o"  # not the would-be gpt-oss-120b of the log
    snapshot = replace(rec("openai", 0, None), upstream_model="gpt-4o-2024-08-06")
    assert served_model(snapshot) == "gpt-4o-2024-08-06"
    groups = {g.destination: g for g in group_records(sample())}
    assert groups["openai"].upstream_models == ()
    assert groups["bastion"].upstream_models == ("gpt-oss-120b",)
    page = html.render(build_report(LoadResult(records=sample(), source="t")))
    assert "OpenAI: gpt-oss-120b" not in page and "OpenAI: gpt-4o" in page


def test_no_monthly_projection_from_a_short_window() -> None:
    # The case: a 2-second window projected to thousands a month.
    short = [replace(r, time=T0 + timedelta(seconds=i * 0.3)) for i, r in enumerate(sample())]
    tokens = build_tokens(short, PRICES)
    assert tokens.savings == [] and tokens.monthly_saving is None
    per = {c.destination: c.per_thousand for c in tokens.costs}
    assert per["openai"] == (100 * 2.5 + 20 * 10) / 1e6 * 1000
    report = build_report(LoadResult(records=short, source="t"), PRICES)
    text = terminal.render(report)
    assert "projected monthly saving" not in text
    assert "no monthly projection: the window (2s) is shorter than an hour" in text
    assert "per 1,000 requests on OpenAI: 0.4500 USD" in text
    assert "per 1,000 requests on OpenAI" in html.render(report)
    hour = build_tokens(sample(), PRICES)
    assert hour.monthly_saving is not None  # exactly an hour: projected




def test_cutover_decisions_in_the_log_are_not_exchanges() -> None:
    from bastion_edge.report.load import read_lines

    lines = ['{"time":"2026-01-01T00:00:00Z","event":"cutover","decision":"promote"}',
             '{"time":"2026-01-01T00:00:01Z","endpoint":"chat.completions",'
             '"destination":"bastion","status":200}']
    result = read_lines(lines)
    assert (len(result.records), result.bad, result.events) == (1, 0, 1)

"""The report's tokens section over plain records: groups, Bastion vs OpenAI, the cost
estimate from the user's prices and the projected saving; terminal and HTML."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion_edge.cli import main as cli
from bastion_edge.config.usage_rules import Price
from bastion_edge.report import html, terminal
from bastion_edge.report.load import LoadResult, Record, Tokens, parse_line
from bastion_edge.report.stats import build_report
from bastion_edge.report.tokens import build_tokens, price_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = {"gpt-4o": Price(2.5, 10.0), "gpt-oss-*": Price(0.1, 0.5)}


def rec(destination: str, seconds: float, tokens: Tokens | None, app: str = "billing",
        status: int = 200, endpoint: str = "chat.completions") -> Record:
    return Record(time=T0 + timedelta(seconds=seconds), endpoint=endpoint, model="gpt-4o",
                  destination=destination, status=status, duration_ms=10.0, ttfb_ms=5.0,
                  upstream_model="gpt-oss-120b",  # observe mode logs the would-be model
                  app=app, tokens=tokens)


def sample() -> list[Record]:
    """One hour: Bastion answers longer (40 out) than OpenAI (20 out) for 100 in."""
    return [rec("bastion", 0, Tokens(100, 40, 10, 0)),
            rec("bastion", 600, Tokens(100, 40)),
            rec("openai", 1200, Tokens(100, 20)),
            rec("openai", 1800, Tokens(100, 20)),
            rec("bastion", 2400, None),  # no usage reported: counted, not estimated
            rec("bastion", 3000, None, status=500),  # failed: not a served exchange
            rec("proxy", 3600, None, status=400)]


def test_groups_have_exact_means_and_ratios() -> None:
    tokens = build_tokens(sample())
    bastion, openai = tokens.groups
    assert (bastion.destination, bastion.upstream_model) == ("bastion", "gpt-oss-120b")
    assert (bastion.stats.requests, bastion.stats.reported, bastion.stats.unreported) == (3, 2, 1)
    assert (bastion.stats.mean_input, bastion.stats.mean_output) == (100, 40)
    assert bastion.stats.output_ratio == 0.4 and bastion.stats.cached_input == 10
    assert openai.stats.output_ratio == 0.2
    assert (tokens.reported, tokens.unreported) == (4, 1)
    assert not tokens.priced and tokens.costs == [] and tokens.monthly_saving is None


def test_bastion_against_openai_for_the_same_app_and_endpoint() -> None:
    tokens = build_tokens([*sample(), rec("bastion", 10, Tokens(1, 1), app="reports")])
    (comparison,) = tokens.comparisons  # `reports` never went to OpenAI
    assert (comparison.app, comparison.endpoint) == ("billing", "chat.completions")
    assert comparison.ratio("input") == 1.0 and comparison.ratio("output") == 2.0


def test_cost_and_monthly_saving_from_the_price_table() -> None:
    tokens = build_tokens(sample(), PRICES, "EUR")
    costs = {line.destination: line for line in tokens.costs}
    # Bastion: 2 x (100 x 0.1 + 40 x 0.5) / 1e6; OpenAI: 2 x (100 x 2.5 + 20 x 10) / 1e6
    assert costs["bastion"].cost == pytest.approx(2 * 30 / 1e6)
    assert costs["openai"].cost == pytest.approx(2 * 450 / 1e6)
    (row,) = tokens.savings
    assert row.basis == "observed"
    # 5 served requests in 3000 s of a 3600 s window -> 5 x 720 per 30 days
    assert row.monthly_requests == pytest.approx(5 * 30 * 86400 / 3600)
    assert row.monthly_saving == pytest.approx((450 - 30) / 1e6 * 5 * 720)
    assert tokens.monthly_saving == pytest.approx(row.monthly_saving)


def test_saving_without_openai_traffic_prices_bastion_tokens_at_the_app_model() -> None:
    records = [rec("bastion", 0, Tokens(100, 40)), rec("bastion", 3600, Tokens(100, 40))]
    (row,) = build_tokens(records, PRICES).savings
    assert row.basis == "bastion tokens"
    assert row.openai_per_request == pytest.approx((100 * 2.5 + 40 * 10) / 1e6)


def test_price_lookup_exact_then_glob() -> None:
    assert price_for("gpt-4o", PRICES) == Price(2.5, 10.0)
    assert price_for("gpt-oss-20b", PRICES) == Price(0.1, 0.5)
    assert price_for("Llama", PRICES) is None and price_for(None, PRICES) is None


def test_log_lines_with_and_without_tokens() -> None:
    line = {"time": "2026-01-01T00:00:00Z", "endpoint": "embeddings", "destination": "bastion",
            "status": 200, "app": "billing", "tokens": {"input": 7}}
    assert parse_line(json.dumps(line)).tokens == Tokens(7, 0)
    assert parse_line(json.dumps(line)).app == "billing"
    for tokens in (None, {}, "12", {"input": "x"}):
        assert parse_line(json.dumps({**line, "tokens": tokens})).tokens is None


def test_terminal_and_html_mark_the_estimate() -> None:
    report = build_report(LoadResult(records=sample(), lines=7, source="t.log"), PRICES)
    text = terminal.render(report)
    assert "tokens, as the upstream reported them (4 exchanges; 1 without usage" in text
    assert "ESTIMATE: Estimate from your own prices" in text
    assert "projected monthly saving at the observed rate: 1.51 USD" in text
    page = html.render(report)
    assert 'id="tokens"' in page and "ESTIMATE" in page and "Bastion ÷ OpenAI" in page
    assert page.count("<svg") >= 1 and "Tokens per request by endpoint" in page
    plain = html.render(build_report(LoadResult(records=sample(), lines=7, source="t.log")))
    assert "ESTIMATE</div>" not in plain and "usage.prices" in plain


def test_report_command_reads_prices_from_rules(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "access.log"
    log.write_text("".join(json.dumps({
        "time": (T0 + timedelta(seconds=i * 60)).isoformat(), "endpoint": "chat.completions",
        "original_model": "gpt-4o", "upstream_model": "gpt-oss-120b", "destination": "bastion",
        "status": 200, "duration_ms": 5, "tokens": {"input": 10, "output": 5}}) + "\n"
        for i in range(3)))
    rules = tmp_path / "rules.yaml"
    rules.write_text("usage:\n  prices:\n    gpt-oss-120b: {input: 1, output: 2}\n"
                     "    gpt-4o: {input: 5, output: 20}\n")
    assert cli.main(["report", str(log), "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "cost on Bastion: 0.0001 USD (3 exchanges)" in out
    rules.write_text("usage: {prices: {gpt-4o: {input: 1}}}\n")
    assert cli.main(["report", str(log), "--rules", str(rules)]) == 1

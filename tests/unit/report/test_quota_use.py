"""The report's quota section over plain records: each app's busiest UTC minute and day
against its quota, counted as the proxy counts, its refusals; terminal and HTML."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion_edge.cli import main as cli
from bastion_edge.config.quota_rules import NO_QUOTA, Quota
from bastion_edge.config.schema import AppRules, ClientsRules
from bastion_edge.report import html, terminal
from bastion_edge.report.load import LoadResult, Record, Tokens
from bastion_edge.report.quota_use import (
    DEFAULT,
    NONE,
    OWN,
    AppQuotaUse,
    QuotaUse,
    build_quota_use,
)
from bastion_edge.report.stats import build_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # a whole minute and a whole UTC day start here
BILLING = Quota(requests_per_minute=3, tokens_per_minute=1000, tokens_per_day=2000)


def rec(seconds: float, app: str | None = "billing", *, destination: str = "bastion",
        method: str | None = "POST", status: int = 200, tokens: Tokens | None = None,
        error: str | None = None) -> Record:
    return Record(time=T0 + timedelta(seconds=seconds), endpoint="chat.completions",
                  model="gpt-4o", destination=destination, status=status, duration_ms=5.0,
                  ttfb_ms=2.0, error=error, app=app, tokens=tokens, method=method)


def refused(seconds: float, app: str = "billing") -> Record:
    return rec(seconds, app, destination="proxy", status=429, error="rate_limit_exceeded")


def clients(billing: Quota | None = BILLING, default: Quota = NO_QUOTA,
            others: tuple[AppRules, ...] = ()) -> ClientsRules:
    return ClientsRules(apps=(AppRules("billing", "a" * 64, quota=billing), *others),
                        default_quota=default)


def sample() -> list[Record]:
    """Minute 0: three requests of 100 tokens; minute 1: one of 500; then a refusal."""
    return [rec(0, tokens=Tokens(60, 40)), rec(10, tokens=Tokens(60, 40)),
            rec(20, destination="openai", tokens=Tokens(90, 10)),
            rec(70, tokens=Tokens(300, 200, cached_input=300, reasoning=100)),
            refused(80), rec(90, destination="proxy", status=200)]


def only(use: QuotaUse, app: str = "billing") -> AppQuotaUse:
    rows = [a for a in use.apps if a.app == app]
    assert len(rows) == 1, use.apps
    return rows[0]


def test_peaks_are_the_busiest_aligned_windows_with_percent() -> None:
    use = build_quota_use(sample(), clients())
    [billing] = use.apps
    assert (billing.source, billing.quota, billing.counted) == (OWN, BILLING, 4)
    requests, tokens_min, tokens_day = billing.requests_minute, billing.tokens_minute, \
        billing.tokens_day
    assert (requests.used, requests.start) == (3, T0)  # three in 00:00, one in 00:01
    assert (tokens_min.used, tokens_min.start) == (500, T0 + timedelta(minutes=1))
    assert (tokens_day.used, tokens_day.start) == (800, T0)  # input + output only
    assert [(name, p.used, limit) for name, p, limit in billing.limited()] == [
        ("requests_per_minute", 3, 3), ("tokens_per_minute", 500, 1000),
        ("tokens_per_day", 800, 2000)]
    text = terminal.render(build_report(LoadResult(records=sample(), source="t"),
                                        clients=clients()))
    row = next(line for line in text.splitlines() if line.split()[:2] == ["billing", "own"])
    assert row.split()[:6] == ["billing", "own", "4", "1", "0", "0"]  # refused 429, 503, no usage
    assert "3/3 (100.0%)" in row and "500/1,000 (50.0%)" in row and "800/2,000 (40.0%)" in row
    assert "billing requests/min: busiest minute 2026-01-01 00:00Z\n" in text
    assert "billing tokens/min: busiest minute 2026-01-01 00:01Z (partial: the log " \
           "covers 30s of it)" in text


def test_only_posts_that_went_upstream_count() -> None:
    records = [rec(0), rec(1, method="GET"),  # /v1/models to Bastion: not a model call
               rec(2, destination="proxy"),  # the Responses store answered: free
               rec(3, destination="openai"), rec(4, method=None)]  # a log without methods
    use = build_quota_use(records, clients())
    assert use.apps[0].counted == 2 and use.apps[0].requests_minute.used == 2
    assert use.no_method == 1
    assert "Upstream exchanges without a method in the log (not counted): 1." in \
        " ".join(terminal.render(build_report(LoadResult(records=records),
                                              clients=clients())).split())


def test_refusals_are_the_proxys_own_429s_and_503s() -> None:
    records = [refused(0), refused(1),
               rec(2, destination="proxy", status=503, error="quota_store_unavailable"),
               rec(3, destination="bastion", status=429, error="rate_limit_exceeded"),  # Bastion's
               rec(4, destination="proxy", status=429, error="too_many_failed_attempts"),
               rec(5, destination="proxy", status=503, error="response_store_unavailable")]
    billing = only(build_quota_use(records, clients()))
    assert (billing.refused_quota, billing.refused_outage) == (2, 1)
    assert billing.counted == 1  # Bastion's own 429 went upstream


def test_the_default_quota_covers_apps_seen_without_their_own() -> None:
    default = Quota(requests_per_minute=60)
    rules = clients(default=default, others=(
        AppRules("reports", "b" * 64), AppRules("idle", "c" * 64),  # default, never seen
        AppRules("batch", "d" * 64, quota=NO_QUOTA),  # `quota: {}`: no limit
        AppRules("nightly", "e" * 64, quota=Quota(tokens_per_day=10))))  # own, never seen
    records = [rec(0), rec(1, "reports"), rec(2, "reports"), rec(3, "batch"), rec(4, None)]
    use = build_quota_use(records, rules)
    assert [(a.app, a.source) for a in use.apps] == [
        ("billing", OWN), ("nightly", OWN), ("reports", DEFAULT)]
    reports = only(use, "reports")
    assert reports.quota == default and reports.requests_minute.used == 2
    nightly = only(use, "nightly")
    assert nightly.counted == 0 and nightly.tokens_day.start is None
    text = terminal.render(build_report(LoadResult(records=records), clients=rules))
    assert "nightly tokens/day: nothing counted" in text
    assert "2/60 (3.3%)" in text


def test_an_app_refused_under_an_older_rule_keeps_its_row() -> None:
    use = build_quota_use([rec(0, "reports"), refused(1, "reports")], clients())
    reports = only(use, "reports")
    assert (reports.source, reports.refused_quota, reports.counted) == (NONE, 1, 1)
    assert [a.app for a in use.apps] == ["billing", "reports"]


def test_requests_without_reported_usage_are_counted_and_said() -> None:
    records = [rec(0, tokens=Tokens(10, 5)), rec(1), rec(2, status=500)]
    use = build_quota_use(records, clients())
    billing = use.apps[0]
    assert (billing.counted, billing.unreported, billing.tokens_minute.used) == (3, 2, 15)
    text = terminal.render(build_report(LoadResult(records=records), clients=clients()))
    assert "Counted requests without a reported usage: 2 (their tokens are not in the token " \
           "figures)" in text


def test_a_window_shorter_than_a_minute_is_partial() -> None:
    records = [rec(30), rec(45)]
    billing = build_quota_use(records, clients()).apps[0]
    assert billing.requests_minute.partial and billing.requests_minute.covered_s == 15
    assert billing.tokens_day.start is None  # no tokens reported: nothing to peak
    whole = build_quota_use([rec(0), rec(30), rec(61)], clients()).apps[0]
    assert not whole.requests_minute.partial  # the log covers 00:00 .. 00:01 whole
    assert whole.requests_minute.used == 2
    text = terminal.render(build_report(LoadResult(records=records), clients=clients()))
    assert "busiest minute 2026-01-01 00:00Z (partial: the log covers 15s of it)" in text
    assert "A partial window is one the log does not cover whole" in text
    one = terminal.render(build_report(LoadResult(records=[rec(5)]), clients=clients()))
    assert "busiest minute 2026-01-01 00:00Z (partial: the log covers under a second of it)" \
        in one


def test_without_quotas_no_row_and_without_rules_the_hint() -> None:
    records = [rec(0, "reports"), rec(1)]
    no_quota = build_report(LoadResult(records=records), clients=clients(billing=None))
    assert no_quota.quotas is not None and no_quota.quotas.apps == []
    text = terminal.render(no_quota)
    assert "quota use per app" not in text and "no rules file" not in text
    assert 'id="quotas"' not in html.render(no_quota)
    plain = build_report(LoadResult(records=records))
    assert "quotas: no rules file read; quotas come from the rules file: --rules, else " \
           "$BASTION_RULES, else ./rules.yaml" in " ".join(terminal.render(plain).split())
    assert "$BASTION_RULES" in html.render(plain)


def test_the_html_panel_escapes_and_names_the_windows() -> None:
    records = [*sample(), refused(85, "<b>app</b>")]
    page = html.render(build_report(LoadResult(records=records, source="t"),
                                    clients=clients()))
    assert 'id="quotas"' in page and "Quota use per app" in page
    assert "3/3 (100.0%)" in page and "busiest minute 2026-01-01 00:00Z" in page
    assert "&lt;b&gt;app&lt;/b&gt;" in page and "<b>app</b>" not in page
    assert "This log only" in page


@pytest.mark.parametrize("where", ["flag", "env"])
def test_report_command_reads_quotas_from_the_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    where: str
) -> None:
    log = tmp_path / "access.log"
    log.write_text("".join(json.dumps({
        "time": (T0 + timedelta(seconds=i)).isoformat(), "app": "billing", "method": "POST",
        "endpoint": "chat.completions", "original_model": "gpt-4o", "destination": "bastion",
        "status": 200, "duration_ms": 5}) + "\n" for i in range(3)))
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"clients:\n  apps:\n    - name: billing\n      secret_sha256: {'a' * 64}\n"
                     "      quota: {requests_per_minute: 4}\n")
    monkeypatch.chdir(tmp_path / "..")
    argv = ["report", str(log)]
    if where == "flag":
        argv += ["--rules", str(rules)]
    else:
        monkeypatch.setenv("BASTION_RULES", str(rules))
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "3/4 (75.0%)" in out and "quota use per app" in out

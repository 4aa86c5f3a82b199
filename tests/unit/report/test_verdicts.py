"""The report's verdicts: none under 30 exchanges a side, each on its 95 % interval."""

from __future__ import annotations

import pytest

from bastion_edge.report.stats import MirrorStats, Summary
from bastion_edge.report.verdicts import kpis


def summary(requests: int, errors: int) -> Summary:
    return Summary(requests, errors, None, None, None, None)


def test_no_verdict_under_30_exchanges_a_side() -> None:
    # The issue's case: 3 errors in 33 requests against 2 %: no [BAD], says n.
    totals = {"bastion": summary(33, 3), "openai": summary(29, 0)}
    error, p95, _, _ = kpis(totals, None, {"bastion": [1.0] * 33, "openai": [1.0] * 29})
    assert (error.value, error.level) == ("not enough data", "info")
    assert error.detail == "Bastion n=33, OpenAI n=29; a verdict needs 30 a side"
    assert (p95.value, p95.level) == ("not enough data", "info")


def test_the_issue_case_with_30_a_side_is_a_watch_not_bad() -> None:
    totals = {"bastion": summary(33, 3), "openai": summary(1000, 21)}
    error, *_ = kpis(totals, None)
    assert error.value == "9.1% vs 2.1%"
    assert error.level == "warn"  # the interval reaches below 5 pp: not proven bad
    assert "+7.0 pp, 95 % CI +0.9 to +21.5 pp" in error.detail


@pytest.mark.parametrize(("b_errors", "level"), [(20, "ok"), (100, "warn"), (900, "bad")])
def test_error_rate_levels_follow_the_interval(b_errors: int, level: str) -> None:
    totals = {"bastion": summary(10_000, b_errors), "openai": summary(10_000, 20)}
    assert kpis(totals, None)[0].level == level


def test_error_rate_without_baseline_uses_wilson() -> None:
    error, *_ = kpis({"bastion": summary(1000, 0)}, None)
    assert error.level == "ok" and "95 % CI 0.0 to 0.4%" in error.detail
    error, *_ = kpis({"bastion": summary(100, 3)}, None)
    assert error.level == "warn"


def test_p95_ratio_with_its_interval() -> None:
    totals = {"bastion": summary(300, 0), "openai": summary(300, 0)}
    same = [float(100 + i % 50) for i in range(300)]
    _, p95, ttfb, _ = kpis(totals, None, {"bastion": same, "openai": same},
                           {"bastion": [3 * v for v in same], "openai": same})
    assert (p95.value, p95.level) == ("1.00x", "ok")
    assert "95 % CI 0.9" in p95.detail and "(n 300 vs 300)" in p95.detail
    assert (ttfb.value, ttfb.level) == ("3.00x", "bad")
    # 40 a side: enough for a verdict, too few to bound the p95 from above.
    _, few, _, _ = kpis(totals, None, {"bastion": same[:40], "openai": same[:40]})
    assert few.level == "warn" and "to ∞x" in few.detail


def test_agreement_verdict_on_wilson() -> None:
    def mirror(matches: int, judged: int) -> MirrorStats:
        return MirrorStats(judged, judged, matches, 0, 0, None, None)

    assert kpis({}, mirror(1000, 1000))[3].level == "ok"
    assert kpis({}, mirror(800, 1000))[3].level == "bad"
    assert kpis({}, mirror(29, 29))[3].value == "not enough data"

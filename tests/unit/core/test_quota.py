"""Per-app quota decisions over plain values (core/quota.py, config/quota_rules.py)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from bastion_edge.config.quota_rules import (
    NO_QUOTA,
    Quota,
    parse_outage_mode,
    parse_quota,
    quota_from_rules,
)
from bastion_edge.config.reader import Reader, RulesError
from bastion_edge.core.quota import (
    Admitted,
    Rejected,
    Unavailable,
    Usage,
    Windows,
    admit,
    estimate_tokens,
    max_output_of,
    openai_duration,
    outage_verdict,
    rate_limit_headers,
    rejection_error,
    settle,
    tokens_reported,
    unavailable_error,
    windows_at,
)
from bastion_edge.core.usage import Usage as ReportedUsage
from bastion_edge.telemetry.quota_metrics import QuotaMetrics

# 2026-12-07 04:40:15.5 UTC: 15.5 s into a minute, 16815.5 s into a day.
NOW = 1_796_618_415.5
RPM = Quota(requests_per_minute=3)


def test_windows_are_clock_aligned_minutes_and_utc_days() -> None:
    assert windows_at(NOW) == Windows(int(NOW // 60), int(NOW // 86400))
    assert windows_at(120.0) == Windows(2, 0)
    assert windows_at(119.999).minute == 1


def test_requests_per_minute_admits_exactly_the_limit() -> None:
    usage = Usage()
    admitted = 0
    for _ in range(5):
        verdict = admit(RPM, usage, 0, NOW)
        if isinstance(verdict, Admitted):
            admitted += 1
            usage = verdict.usage
    assert admitted == 3
    assert usage == Usage(3, 0, 0)


def test_rejection_names_requests_and_retries_at_the_minute_end() -> None:
    verdict = admit(RPM, Usage(3, 0, 0), 10, NOW)
    assert isinstance(verdict, Rejected)
    assert (verdict.kind, verdict.window, verdict.limit, verdict.used, verdict.requested) == \
        ("requests", "minute", 3, 3, 1)
    assert verdict.retry_after == pytest.approx(44.5)


def test_tokens_per_minute_counts_the_estimate() -> None:
    quota = Quota(tokens_per_minute=1000)
    assert isinstance(admit(quota, Usage(0, 900, 900), 100, NOW), Admitted)
    verdict = admit(quota, Usage(0, 900, 900), 101, NOW)
    assert isinstance(verdict, Rejected)
    assert (verdict.kind, verdict.window, verdict.requested) == ("tokens", "minute", 101)


def test_spent_tokens_refuse_even_a_request_without_an_estimate() -> None:
    verdict = admit(Quota(tokens_per_minute=1000), Usage(1, 1000, 1000), 0, NOW)
    assert isinstance(verdict, Rejected) and verdict.kind == "tokens"


def test_tokens_per_day_retries_at_utc_midnight() -> None:
    verdict = admit(Quota(tokens_per_day=5000), Usage(0, 0, 4990), 20, NOW)
    assert isinstance(verdict, Rejected)
    assert verdict.window == "day"
    assert verdict.retry_after == pytest.approx(86400 - 16815.5)


def test_an_estimate_beyond_the_whole_limit_can_never_fit() -> None:
    verdict = admit(Quota(tokens_per_minute=1000), Usage(), 1500, NOW)
    assert isinstance(verdict, Rejected) and verdict.retry_after is None
    error = rejection_error(verdict, "billing")
    assert "Request too large" in error.message and "Requested 1500" in error.message
    assert not [h for h in rate_limit_headers(verdict) if h[0].startswith("retry-after")]


def test_first_exceeded_limit_is_named_requests_before_tokens() -> None:
    quota = Quota(requests_per_minute=1, tokens_per_minute=10)
    verdict = admit(quota, Usage(1, 10, 10), 5, NOW)
    assert isinstance(verdict, Rejected) and verdict.kind == "requests"


def test_no_quota_admits_everything_and_has_no_headers() -> None:
    verdict = admit(NO_QUOTA, Usage(10**9, 10**12, 10**12), 10**6, NOW)
    assert isinstance(verdict, Admitted)
    assert rate_limit_headers(verdict) == []
    assert not NO_QUOTA.limits_anything and RPM.limits_anything


def test_max_output_of_reads_each_endpoints_field() -> None:
    assert max_output_of({"max_completion_tokens": 300, "max_tokens": 10}) == 300
    assert max_output_of({"max_tokens": 256}) == 256
    assert max_output_of({"max_output_tokens": 1024}) == 1024
    assert max_output_of({"max_tokens": True}) is None
    assert max_output_of({"messages": []}) is None


def test_tokens_reported_adds_input_and_output() -> None:
    assert tokens_reported(ReportedUsage(input=100, output=20)) == 120
    assert tokens_reported(ReportedUsage(input=100)) == 100
    assert tokens_reported(ReportedUsage()) is None
    assert tokens_reported(None) is None


def test_estimate_is_prompt_plus_the_most_output_asked_for() -> None:
    assert estimate_tokens(120, 256) == 376
    assert estimate_tokens(120, None) == 120
    assert estimate_tokens(-1, -5) == 0


@pytest.mark.parametrize(("estimate", "reported", "status", "delta"), [
    (376, 140, 200, -236),   # the stream reported less than it was admitted for
    (100, 180, 200, 80),     # more (no max_tokens): the difference is added
    (100, None, 200, 0),     # a success without a usage report keeps the estimate
    (100, None, 502, -100),  # an upstream error without usage spent nothing
    (100, None, None, -100),  # no reply at all (connection failed)
    (100, 30, 400, -70),     # an error that does report usage is charged its usage
])
def test_settle_debits_the_reported_usage(estimate: int, reported: int | None,
                                          status: int | None, delta: int) -> None:
    assert settle(estimate, reported, status) == delta


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (0.999, "999ms"), (1, "1s"), (1.5, "1.5s"),
    (44.5, "44.5s"), (59.9991, "1m0s"), (360, "6m0s"), (61.25, "1m1.25s"),
    (3723, "1h2m3s"), (69584.5, "19h19m44.5s"), (-3, "0s"),
])
def test_reset_durations_in_openai_format(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text


def test_headers_on_an_admitted_reply() -> None:
    quota = Quota(requests_per_minute=600, tokens_per_minute=200_000, tokens_per_day=5_000_000)
    verdict = admit(quota, Usage(9, 1000, 70_000), 500, NOW)
    assert dict(rate_limit_headers(verdict)) == {
        "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590",
        "x-ratelimit-reset-requests": "44.5s",
        "x-ratelimit-limit-tokens": "200000", "x-ratelimit-remaining-tokens": "198500",
        "x-ratelimit-reset-tokens": "44.5s"}


def test_tokens_headers_fall_back_to_the_daily_limit() -> None:
    verdict = admit(Quota(tokens_per_day=5000), Usage(0, 0, 100), 50, NOW)
    assert dict(rate_limit_headers(verdict)) == {
        "x-ratelimit-limit-tokens": "5000", "x-ratelimit-remaining-tokens": "4850",
        "x-ratelimit-reset-tokens": "19h19m44.5s"}


def test_rejection_is_a_429_envelope_with_retry_after() -> None:
    verdict = admit(RPM, Usage(3, 0, 0), 0, NOW)
    assert isinstance(verdict, Rejected)
    error = rejection_error(verdict, "billing")
    assert error.status == 429
    assert json.loads(error.body()) == {"error": {
        "message": "Rate limit reached for app 'billing' on requests per min (RPM): Limit 3, "
                   "Used 3, Requested 1. Please try again in 44.5s.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    headers = dict(rate_limit_headers(verdict))
    assert headers["retry-after"] == "45" and headers["retry-after-ms"] == "44500"
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_rejection_message_names_tokens() -> None:
    verdict = admit(Quota(tokens_per_minute=10), Usage(0, 10, 10), 1, NOW)
    assert isinstance(verdict, Rejected)
    error = rejection_error(verdict, "billing")
    assert error.type == "tokens" and "tokens per min (TPM)" in error.message


def test_store_outage_fails_open_unmetered_or_closed_with_a_503() -> None:
    opened = outage_verdict("fail_open", RPM, NOW)
    assert isinstance(opened, Admitted) and opened.unmetered
    assert rate_limit_headers(opened) == []
    closed = outage_verdict("fail_closed", RPM, NOW)
    assert isinstance(closed, Unavailable)
    assert dict(rate_limit_headers(closed))["retry-after"] == "1"
    error = unavailable_error("billing")
    assert (error.status, error.code) == (503, "quota_store_unavailable")


# ------------------------------------------------------------------ config/quota_rules

def test_parse_quota_reads_all_three_fields() -> None:
    assert parse_quota({"requests_per_minute": 600, "tokens_per_minute": 200000,
                        "tokens_per_day": 5000000}, "clients.apps[0].quota") == \
        Quota(600, 200000, 5000000)
    assert parse_quota({"requests_per_minute": 5}, "q") == Quota(requests_per_minute=5)
    assert parse_quota({}, "q") == NO_QUOTA
    assert parse_quota(None, "q") == NO_QUOTA
    assert parse_quota({"tokens_per_day": None}, "q") == NO_QUOTA


@pytest.mark.parametrize(("value", "message"), [
    ({"requests_per_minute": 0},
     "clients.apps[0].quota.requests_per_minute: expected a positive integer"),
    ({"requests_per_minute": 2.5},
     "clients.apps[0].quota.requests_per_minute: expected a positive integer"),
    ({"tokens_per_day": True}, "clients.apps[0].quota.tokens_per_day: expected a positive"),
    ({"tokens_per_hour": 5}, "clients.apps[0].quota.tokens_per_hour: unknown key"),
    (600, "clients.apps[0].quota: expected a mapping"),
])
def test_parse_quota_errors_name_the_yaml_location(value: object, message: str) -> None:
    with pytest.raises(RulesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_quota(value, "clients.apps[0].quota")


def test_quota_from_rules_reports_the_line() -> None:
    path = ("clients", "apps", 1, "quota")
    parser = Reader({(*path, "tokens_per_minute"): 14})
    with pytest.raises(RulesError) as caught:
        quota_from_rules(parser, {"tokens_per_minute": -1}, path)
    assert caught.value.location == "clients.apps[1].quota.tokens_per_minute"
    assert caught.value.line == 14


def test_parse_outage_mode() -> None:
    assert parse_outage_mode("fail_closed", "clients.quota_store_outage") == "fail_closed"
    with pytest.raises(RulesError, match=r"clients\.quota_store_outage: expected one of"):
        parse_outage_mode("closed", "clients.quota_store_outage")


# ------------------------------------------------------------- telemetry/quota_metrics

def test_metrics_count_rejections_by_kind_and_show_headroom() -> None:
    registry = CollectorRegistry()
    metrics = QuotaMetrics(registry, lambda app: app if app == "billing" else "other")
    metrics.observe("billing", admit(RPM, Usage(1, 0, 0), 0, NOW))
    metrics.observe("billing", admit(RPM, Usage(3, 0, 0), 0, NOW))
    metrics.observe("stranger", outage_verdict("fail_closed", RPM, NOW))
    metrics.store_failed("admit", "fail_closed")
    value = registry.get_sample_value
    assert value("bastion_edge_quota_rejections_total",
                 {"app": "billing", "kind": "requests"}) == 1
    assert value("bastion_edge_quota_rejections_total",
                 {"app": "other", "kind": "store_outage"}) == 1
    assert value("bastion_edge_quota_remaining",
                 {"app": "billing", "limit": "requests_per_minute"}) == 1
    assert value("bastion_edge_quota_store_errors_total",
                 {"operation": "admit", "mode": "fail_closed"}) == 1

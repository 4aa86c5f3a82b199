"""Guessing proxy secrets: a per-source failure window, then a cool-down."""

from __future__ import annotations

from bastion_edge.core.auth_failures import (
    AuthFailures,
    auth_throttled,
    failure_key,
    retry_after_header,
    shown_name,
    source_of,
)


def test_a_source_is_refused_after_the_threshold_within_the_window() -> None:
    failures = AuthFailures(threshold=3, window_seconds=60, cooldown_seconds=30)
    assert not failures.failed("10.0.0.1", 0)
    assert not failures.failed("10.0.0.1", 1)
    assert failures.blocked_for("10.0.0.1", 2) == 0
    assert failures.failed("10.0.0.1", 2)  # the third trips it
    assert failures.blocked_for("10.0.0.1", 3) == 29
    assert failures.blocked_for("10.0.0.2", 3) == 0  # per source
    assert failures.blocked_for("10.0.0.1", 32) == 0  # the cool-down ends


def test_failures_outside_the_window_do_not_count() -> None:
    failures = AuthFailures(threshold=3, window_seconds=10)
    assert not failures.failed("a", 0)
    assert not failures.failed("a", 5)
    assert not failures.failed("a", 11)  # the first one left the window
    assert failures.failed("a", 12)


def test_memory_is_bounded_by_max_sources() -> None:
    failures = AuthFailures(threshold=2, max_sources=3)
    for i in range(10):
        failures.failed(f"10.0.0.{i}", 0)
    assert len(failures._failures) == 3
    assert failures.failed("10.0.0.9", 1)  # the recent ones are still remembered


def test_log_and_reply_helpers() -> None:
    assert source_of(("::ffff:127.0.0.1", 5000)) == "127.0.0.1"
    assert source_of(("::1", 5000)) == "::1"
    assert source_of(None) == "unknown"
    assert shown_name(None) == "-"
    assert shown_name("bad\nname") == "bad?name"
    assert shown_name("x" * 100) == "x" * 64 + "…"
    error = auth_throttled(0.2)
    assert (error.status, error.code) == (429, "proxy_auth_throttled")
    assert retry_after_header(0.2) == {"retry-after": "1"}
    assert retry_after_header(59.5) == {"retry-after": "60"}


def test_a_failure_is_counted_per_address_and_app_name() -> None:
    assert failure_key("127.0.0.1", "billing") != failure_key("127.0.0.1", "reports")
    assert failure_key("127.0.0.1", None) == "127.0.0.1 app=-"

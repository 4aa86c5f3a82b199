"""`report.stats`: groups, percentiles, mirror agreement, time buckets and verdicts,
from hand-built records with known answers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bastion_edge.report.load import LoadResult, MirrorResult, Record
from bastion_edge.report.stats import (
    Summary,
    bucket_width,
    build_report,
    group_records,
    histogram,
    kpis,
    mirror_stats,
    observations,
    percentile,
    summarize,
    timeline,
)

T0 = datetime(2025, 6, 1, 14, 0, tzinfo=UTC)


def rec(destination: str = "bastion", status: int | None = 200, duration: float | None = 100.0,
        ttfb: float | None = 10.0, endpoint: str = "chat.completions", model: str = "gpt-4o",
        seconds: float = 0, mirror: MirrorResult | None = None,
        upstream: str | None = None) -> Record:
    return Record(time=T0 + timedelta(seconds=seconds), endpoint=endpoint, model=model,
                  destination=destination, status=status, duration_ms=duration, ttfb_ms=ttfb,
                  upstream_model=upstream, mirror=mirror)


def summary(requests: int, errors: int, p95: float | None, ttfb_p95: float | None = None
            ) -> Summary:
    return Summary(requests, errors, p95, p95, ttfb_p95, ttfb_p95)


# ------------------------------------------------------------------ percentiles

def test_percentile_interpolates_linearly() -> None:
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 50) == 50.5
    assert percentile(hundred, 95) == pytest.approx(95.05)
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # unsorted input
    assert percentile([10.0, 20.0], 95) == 19.5
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0], 0) == 1.0 and percentile([1.0, 2.0, 3.0], 100) == 3.0


def test_summarize_counts_errors_and_ignores_missing_timings() -> None:
    records = [rec(duration=float(d), ttfb=float(d) / 10) for d in range(10, 110, 10)]
    records += [rec(status=500, duration=1000.0, ttfb=None), rec(status=None, duration=None,
                                                                 ttfb=None)]
    s = summarize(observations(records)["bastion"])
    assert (s.requests, s.errors) == (12, 2)
    assert s.error_rate == pytest.approx(2 / 12)
    # durations 10..100 and 1000: eleven values
    assert s.p50_ms == 60.0
    assert s.p95_ms == pytest.approx(550.0)  # rank 9.5: halfway between 100 and 1000
    assert s.ttfb_p50_ms == 5.5 and s.ttfb_p95_ms == pytest.approx(9.55)
    assert summarize([]).error_rate is None


# ------------------------------------------------------------------ groups

def test_groups_by_endpoint_model_destination_in_a_stable_order() -> None:
    records = [
        rec("openai", duration=200.0), rec("bastion", duration=100.0, upstream="gpt-oss-120b"),
        rec("bastion", status=503, duration=300.0, upstream="gpt-oss-120b"),
        rec("proxy", status=400, model="gpt-9", duration=1.0),
        rec("bastion", endpoint="embeddings", model="text-embedding-3-small", duration=20.0,
            upstream="bge-m3"),
    ]
    groups = group_records(records)
    assert [(g.endpoint, g.model, g.destination) for g in groups] == [
        ("chat.completions", "gpt-4o", "bastion"), ("chat.completions", "gpt-4o", "openai"),
        ("chat.completions", "gpt-9", "proxy"),
        ("embeddings", "text-embedding-3-small", "bastion")]
    bastion = groups[0]
    assert (bastion.summary.requests, bastion.summary.errors) == (2, 1)
    assert (bastion.summary.p50_ms, bastion.summary.p95_ms) == (200.0, 290.0)
    assert bastion.upstream_models == ("gpt-oss-120b",)
    assert groups[1].upstream_models == ()


def test_mirror_copies_form_their_own_series() -> None:
    records = [
        rec("openai", duration=100.0, ttfb=10.0,
            mirror=MirrorResult(200, 150.0, 30.0, True, ())),
        rec("openai", duration=200.0, ttfb=20.0,
            mirror=MirrorResult(200, 180.0, 25.0, False, ("usage missing",))),
        rec("openai", status=200, duration=300.0, ttfb=30.0,
            mirror=MirrorResult(500, 50.0, None, False, ("status 200 vs 500", "usage missing"))),
        rec("openai", duration=400.0, ttfb=40.0,
            mirror=MirrorResult(None, None, None, None, ())),  # copy never answered
        rec("openai", duration=500.0, ttfb=50.0),  # not mirrored
    ]
    groups = group_records(records)
    assert [g.destination for g in groups] == ["mirror", "openai"]
    mirror, openai = groups
    assert (mirror.summary.requests, mirror.summary.errors) == (4, 2)
    assert mirror.summary.p50_ms == 150.0
    assert (openai.summary.requests, openai.summary.errors) == (5, 0)
    m = mirror.mirror
    assert m is not None
    assert (m.mirrored, m.judged, m.matches) == (4, 3, 1)
    assert m.agreement == pytest.approx(1 / 3)
    assert m.status_mismatches == 2  # 200 vs 500, 200 vs none
    assert m.mirror_errors == 2
    assert m.median_delta_ms == -20.0  # pairs with both timings: +50, -20, -250
    assert m.median_ttfb_delta_ms == 12.5  # +20, +5
    assert m.top_differences == (("usage missing", 2), ("status 200 vs 500", 1))
    assert openai.mirror is None


def test_mirror_delta_is_the_median_of_pairwise_differences() -> None:
    pairs = [(100.0, 150.0), (200.0, 180.0), (300.0, 50.0)]
    records = [rec("openai", duration=main, ttfb=None,
                   mirror=MirrorResult(200, copy, None, True, ()))
               for main, copy in pairs]
    m = mirror_stats(records)
    assert m is not None
    assert m.median_delta_ms == -20.0  # +50, -20, -250
    assert m.median_ttfb_delta_ms is None
    assert mirror_stats([rec()]) is None


# ------------------------------------------------------------------ over time

@pytest.mark.parametrize(("span", "width"), [
    (0, 0.1), (1, 0.1), (5.9, 0.1), (6, 0.2), (59, 1), (60, 2), (3599, 60), (3600, 120),
    (86400, 1800), (10 * 86400, 21600), (10**8, 1694916.0)])
def test_bucket_width(span: float, width: float) -> None:
    assert bucket_width(span) == width


def test_timeline_counts_requests_and_errors_per_series_and_bucket() -> None:
    records = [rec(seconds=0), rec(seconds=30, status=500), rec("openai", seconds=59),
               rec(seconds=150, status=None), rec(seconds=179)]
    tl = timeline(observations(records))
    assert tl.width_s == 5  # 179 s span: the first width under 60 buckets
    assert tl.buckets[0].start == T0
    assert tl.buckets[0].counts == {"bastion": (1, 0)}
    assert tl.buckets[6].counts == {"bastion": (1, 1)}
    assert tl.buckets[11].counts == {"openai": (1, 0)}
    assert tl.buckets[30].counts == {"bastion": (1, 1)}
    assert len(tl.buckets) == 36 and tl.buckets[-1].counts == {"bastion": (1, 0)}
    assert sum(n for b in tl.buckets for n, _ in b.counts.values()) == 5
    assert tl.series == ("bastion", "openai") and tl.max_requests() == 1
    assert timeline({}).buckets == []


def test_timeline_buckets_align_to_the_clock() -> None:
    tl = timeline(observations([rec(seconds=61), rec(seconds=61 + 3000)]))
    assert tl.width_s == 60
    assert tl.buckets[0].start == T0 + timedelta(seconds=60)
    assert len(tl.buckets) == 51


# ------------------------------------------------------------------ histogram

def test_histogram_uses_shared_log_bins() -> None:
    hist = histogram({"bastion": [10.0, 100.0, 1000.0], "openai": [100.0, 100.0]}, bins=2)
    assert hist is not None
    assert hist.edges == pytest.approx([10.0, 100.0, 1000.0])
    assert hist.counts == {"bastion": [1, 2], "openai": [0, 2]}
    assert hist.totals == {"bastion": 3, "openai": 2}
    assert histogram({"bastion": []}) is None


def test_histogram_of_identical_values_still_has_width() -> None:
    hist = histogram({"bastion": [50.0] * 4})
    assert hist is not None and len(hist.edges) == 9  # 8 bins minimum
    assert hist.edges[0] < 50.0 < hist.edges[-1] and sum(hist.counts["bastion"]) == 4


# ------------------------------------------------------------------ verdicts

def test_verdicts_against_openai() -> None:
    totals = {"bastion": summary(200, 4, 1300.0, 130.0),
              "openai": summary(200, 2, 1000.0, 100.0)}
    error, p95, ttfb, agreement = kpis(totals, None)
    assert (error.value, error.level) == ("2.0% vs 1.0%", "ok")
    assert error.detail == "Bastion 4/200 vs OpenAI 2/200 (+1.0 pp)"
    assert (p95.value, p95.level) == ("1.30x", "warn")
    assert p95.detail == "Bastion 1.30 s vs OpenAI 1.00 s"
    assert (ttfb.value, ttfb.level) == ("1.30x", "warn")
    assert (agreement.value, agreement.level) == ("-", "info")


@pytest.mark.parametrize(("errors", "level"), [(2, "ok"), (4, "ok"), (5, "warn"), (8, "warn"),
                                               (9, "bad")])
def test_error_rate_levels_in_points_above_openai(errors: int, level: str) -> None:
    totals = {"bastion": summary(100, errors, 1.0), "openai": summary(100, 3, 1.0)}
    assert kpis(totals, None)[0].level == level


def test_verdicts_without_a_baseline_are_absolute() -> None:
    error, p95, _, _ = kpis({"bastion": summary(100, 3, 250.0)}, None)
    assert (error.value, error.level) == ("3.0%", "warn")
    assert (p95.value, p95.level) == ("250 ms", "info")
    error, *_ = kpis({"openai": summary(10, 0, 5.0)}, None)
    assert error.level == "info"


def test_mirror_stands_in_for_bastion_when_none_was_served() -> None:
    records = [rec("openai", duration=100.0, mirror=MirrorResult(200, 250.0, None, True, ()))
               for _ in range(99)]
    records.append(rec("openai", duration=100.0,
                       mirror=MirrorResult(200, 250.0, None, False, ("x",))))
    report = build_report(LoadResult(records=records, lines=100, source="log"))
    error, p95, _, agreement = report.kpis
    assert error.detail.startswith("Bastion (mirror) 0/100 vs OpenAI 0/100")
    assert (p95.value, p95.level) == ("2.50x", "bad")
    assert (agreement.value, agreement.level) == ("99.0%", "ok")
    assert report.requests == 100  # mirror copies are not extra requests


def test_build_report_totals_and_window() -> None:
    records = [rec(seconds=0, duration=10.0), rec("openai", seconds=5, duration=20.0),
               rec("proxy", status=400, seconds=9, duration=1.0, ttfb=None)]
    report = build_report(LoadResult(records=records, lines=4, bad=1, source="log"))
    assert (report.requests, report.errors) == (3, 1)
    assert (report.start, report.end) == (T0, T0 + timedelta(seconds=9))
    assert list(report.totals) == ["bastion", "openai", "proxy"]
    assert report.durations == {"bastion": [10.0], "openai": [20.0], "proxy": [1.0]}
    assert report.ttfbs["proxy"] == []
    assert report.endpoint_totals["chat.completions"]["openai"].p50_ms == 20.0
    empty = build_report(LoadResult())
    assert empty.groups == [] and empty.start is None and empty.requests == 0


def test_skipped_and_failed_copies() -> None:
    records = [
        rec("openai", mirror=MirrorResult(200, 120.0, 20.0, True, ())),
        rec("openai", mirror=MirrorResult(None, 5.0, None, False, (), "ConnectError")),
        replace(rec("openai"), mirror_skipped="streaming"),
        replace(rec("openai"), mirror_skipped="max_in_flight"),
        replace(rec("openai"), mirror_skipped="max_in_flight"),
    ]
    m = mirror_stats(records)
    assert m is not None
    assert (m.mirrored, m.judged, m.matches, m.mirror_errors) == (2, 1, 1, 1)
    assert m.agreement == 1.0  # a copy that never got an answer is an error, not a mismatch
    assert (m.skipped, m.skip_reasons) == (3, (("max_in_flight", 2), ("streaming", 1)))
    report = build_report(LoadResult(records=records))
    assert report.totals["mirror"].requests == 2  # skipped copies are not observations
    assert report.kpis[3].detail == "1 of 1 same shape; 1 status mismatches; 3 not copied"
    only_skipped = build_report(LoadResult(records=records[2:]))
    assert only_skipped.kpis[3].detail == (
        "3 exchanges not copied (max_in_flight 2, streaming 1)")

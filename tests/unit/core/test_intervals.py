"""95 % intervals: Wilson, Newcombe's difference, exact quantile and p95-ratio bounds."""

from __future__ import annotations

import math
import random

import pytest

from bastion_edge.core.intervals import (
    newcombe,
    quantile_interval,
    quantile_ratio,
    wilson,
)


def test_wilson_matches_published_values() -> None:
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775.
    a = wilson(81, 263)
    assert (round(a.low, 4), round(a.high, 4)) == (0.2553, 0.3662)
    b = wilson(0, 10)
    assert (b.low, round(b.high, 4)) == (0.0, 0.2775)


def test_wilson_with_no_data_is_the_whole_range() -> None:
    w = wilson(0, 0)
    assert (w.low, w.high) == (0.0, 1.0) and math.isnan(w.estimate)


def test_newcombe_matches_published_values() -> None:
    # Newcombe (1998), table II, method 10: 56/70 - 48/80 -> 0.0524 to 0.3339.
    d = newcombe(56, 70, 48, 80)
    assert (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)
    assert d.estimate == pytest.approx(0.2)


def test_quantile_interval_covers_the_true_p95_about_95_percent_of_the_time() -> None:
    rng = random.Random(5)
    true_p95 = math.exp(1.6448536269514722)  # lognormal(0, 1)
    hits = 0
    for _ in range(400):
        sample = [rng.lognormvariate(0, 1) for _ in range(300)]
        hits += quantile_interval(sample, 0.95, 0.95).contains(true_p95)
    assert 0.92 <= hits / 400 <= 0.995


def test_quantile_interval_upper_end_is_unbounded_with_few_values() -> None:
    q = quantile_interval([float(i) for i in range(30)], 0.95, 0.95)
    assert q.high == math.inf and q.low > 0


def test_p95_ratio_brackets_the_estimate_and_is_deterministic() -> None:
    rng = random.Random(1)
    a = [rng.uniform(100, 200) for _ in range(500)]
    b = [rng.uniform(100, 200) for _ in range(500)]
    r = quantile_ratio(a, b)
    assert r.low < r.estimate < r.high
    assert r.contains(1.0)
    assert quantile_ratio(a, b) == r
    slow = quantile_ratio([2 * x for x in a], b)
    assert slow.low > 1.5


def test_newcombe_with_an_empty_side_is_the_whole_range() -> None:
    d = newcombe(0, 0, 3, 100)
    assert (d.low, d.high) == (-1.0, 1.0) and math.isnan(d.estimate)

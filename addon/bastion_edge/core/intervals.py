"""95 % intervals for the cutover's verdicts and the canary's gates (pure, no I/O).

- a proportion (an error rate, an agreement share): Wilson's score interval;
- a difference of two proportions (Bastion's error rate less OpenAI's): Newcombe's
  hybrid score interval (his method 10), built from the two Wilson intervals;
- a ratio of two p95 latencies: exact, distribution-free order-statistic intervals for
  each side's 95th percentile at sqrt(0.95) confidence each (the samples are
  independent, so both hold together with probability >= 0.95), divided crosswise.
  No resampling and no seed: the same data give the same interval. With few samples
  the upper end of a p95 is unbounded (`math.inf`): 95 % of 30 values cannot pin it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson's score interval for successes/n; the whole of [0, 1] when n is 0."""
    if n <= 0:
        return Interval(math.nan, 0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(successes_a: int, n_a: int, successes_b: int, n_b: int,
             z: float = Z95) -> Interval:
    """Newcombe's hybrid score interval for p_a - p_b (method 10, 1998); the whole of
    [-1, 1] when either side has no data."""
    if n_a <= 0 or n_b <= 0:
        return Interval(math.nan, -1.0, 1.0)
    a, b = wilson(successes_a, n_a, z), wilson(successes_b, n_b, z)
    pa, pb = successes_a / n_a, successes_b / n_b
    d = pa - pb
    low = d - math.sqrt((pa - a.low) ** 2 + (b.high - pb) ** 2)
    high = d + math.sqrt((a.high - pa) ** 2 + (pb - b.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))


def _binomial_cdf(n: int, p: float) -> list[float]:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, p), by the pmf's recurrence in logs."""
    out, total = [], 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    for k in range(n + 1):
        log_pmf = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                   + k * log_p + (n - k) * log_q)
        total += math.exp(log_pmf)
        out.append(min(total, 1.0))
    return out


def quantile_interval(values: Sequence[float], q: float, confidence: float) -> Interval:
    """Exact order-statistic interval for the q-quantile (0 < q < 1) of the population
    `values` came from: [x_(l), x_(u)] with P(l <= B < u) >= confidence, B ~ Bin(n, q).
    An end that no order statistic reaches is 0 (low) or infinity (high)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return Interval(math.nan, 0.0, math.inf)
    low_rank, high_rank = _ranks(n, q, confidence)
    estimate = _interpolated(ordered, q)
    low = ordered[low_rank - 1] if low_rank else 0.0
    high = ordered[high_rank - 1] if high_rank else math.inf
    return Interval(estimate, low, high)


@functools.lru_cache(maxsize=4096)
def _ranks(n: int, q: float, confidence: float) -> tuple[int, int]:
    """1-based ranks (0: none): the largest l with P(B <= l-1) <= tail and the smallest u
    with P(B <= u-1) >= 1 - tail, B ~ Bin(n, q)."""
    tail = (1 - confidence) / 2
    cdf = _binomial_cdf(n, q)
    low_rank = max((rank for rank in range(1, n + 1) if cdf[rank - 1] <= tail), default=0)
    high_rank = next((rank for rank in range(1, n + 1) if cdf[rank - 1] >= 1 - tail), 0)
    return low_rank, high_rank


def _interpolated(ordered: Sequence[float], q: float) -> float:
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def quantile_ratio(mine: Sequence[float], theirs: Sequence[float], q: float = 0.95,
                   confidence: float = 0.95) -> Interval:
    """Interval for quantile(mine) / quantile(theirs): each side's exact interval at
    sqrt(confidence), divided crosswise (low/high, high/low)."""
    each = math.sqrt(confidence)
    a, b = quantile_interval(mine, q, each), quantile_interval(theirs, q, each)
    estimate = a.estimate / b.estimate if b.estimate and b.estimate > 0 else math.nan
    low = a.low / b.high if b.high > 0 else 0.0
    high = a.high / b.low if b.low > 0 else math.inf
    return Interval(estimate, low, high)

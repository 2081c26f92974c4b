"""Small-sample statistics for studies: Student t intervals of a mean and of paired differences.

With a handful of seeds the normal approximation is far too narrow (the 95% quantile of t
with 2 degrees of freedom is 4.30, not 1.96), so intervals use Student's t. Its
distribution function comes from the regularised incomplete beta function,
``P(|T| > t) = I_x(df/2, 1/2)`` with ``x = df / (df + t**2)``, evaluated by its continued
fraction; the quantile is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
CF_MAX_TERMS = 300  # the continued fraction converges in a few dozen terms for the arguments used here
CF_TOLERANCE = 1e-15
TINY = 1e-300  # keeps the continued fraction's denominators away from zero
BISECTION_STEPS = 200


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > TINY else TINY)
    result = d
    for m in range(1, CF_MAX_TERMS + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > TINY else TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > TINY else TINY
            result *= c * d
        if abs(c * d - 1.0) < CF_TOLERANCE:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side; use symmetry on the other
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """The mean of `n` values with a two-sided `confidence` t-interval (low = high = NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    std: float  # sample standard deviation (n - 1 in the denominator); NaN when n < 2
    confidence: float = CONFIDENCE

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0.0 or self.high < 0.0)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, math.nan, confidence)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """``variant - baseline`` per common seed, with the interval of its mean."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    interval: Interval
    wins: int  # seeds where the variant's value is lower (better) than the baseline's

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired_difference(
    variant: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedDifference:
    """Pairs the values of the seeds both have (in increasing seed order)."""
    seeds = tuple(sorted(set(variant) & set(baseline)))
    if not seeds:
        raise ValueError("no seed in common")
    differences = tuple(variant[seed] - baseline[seed] for seed in seeds)
    wins = sum(1 for difference in differences if difference < 0)
    return PairedDifference(seeds, differences, mean_interval(differences, confidence), wins)

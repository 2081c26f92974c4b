"""Small-sample statistics for studies: Student t intervals of a mean and of paired differences,
paired t tests with Holm's correction, the sign-flip test that checks them without assuming
normality, power and sample size, equivalence, the variance split of a crossed seed design,
and the power-law fit of a scaling curve.

With a handful of seeds the normal approximation is far too narrow (the 95% quantile of t
with 2 degrees of freedom is 4.30, not 1.96), so intervals use Student's t. Its
distribution function comes from the regularised incomplete beta function,
``P(|T| > t) = I_x(df/2, 1/2)`` with ``x = df / (df + t**2)``, evaluated by its continued
fraction; the quantile is found by bisection. Power comes from the noncentral t
distribution, a Poisson mixture of incomplete beta functions. Pure Python throughout, so
that importing it costs nothing.
"""

from __future__ import annotations

import functools
import math
import numbers
import random
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from fha.errors import FhaValueError

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

# what pairs the values of a variant and its baseline: a seed, or a study's pair of seeds
SeedKey = TypeVar("SeedKey", bound="SupportsRichComparison")

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


def _mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1 in the denominator; NaN when n < 2)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean, std = _mean_and_std(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, math.nan, confidence)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, confidence)


@dataclass(frozen=True)
class PairedDifference(Generic[SeedKey]):
    """``variant - baseline`` per common seed, with the interval of its mean."""

    seeds: tuple[SeedKey, ...]
    differences: tuple[float, ...]
    interval: Interval
    wins: int  # seeds where the variant's value is lower (better) than the baseline's

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def p_value(self) -> float:
        """Two-sided p-value of the paired t test of a zero mean difference (NaN with one seed)."""
        return paired_t_test(self.differences) if self.n >= 2 else math.nan

    @functools.cached_property
    def sign_flip_p(self) -> float:
        """Two-sided p-value of the sign-flip test of symmetry about 0 (NaN with one seed)."""
        return sign_flip_test(self.differences) if self.n >= 2 else math.nan

    @property
    def sign_flip_floor(self) -> float:
        """The smallest p-value the sign-flip test can give for these seeds (`sign_flip_floor`)."""
        return sign_flip_floor(self.differences)


def paired_difference(
    variant: Mapping[SeedKey, float], baseline: Mapping[SeedKey, float], confidence: float = CONFIDENCE
) -> PairedDifference[SeedKey]:
    """Pairs the values of the seeds both have (in increasing seed order)."""
    seeds = tuple(sorted(set(variant) & set(baseline)))
    if not seeds:
        raise ValueError("no seed in common")
    differences = tuple(variant[seed] - baseline[seed] for seed in seeds)
    wins = sum(1 for difference in differences if difference < 0)
    return PairedDifference(seeds, differences, mean_interval(differences, confidence), wins)


# ------------------------------------------------------------------ tests of a mean difference
def t_statistic(differences: Sequence[float]) -> float:
    """``mean / (s / sqrt(n))``, the t statistic of a zero mean. With zero variance it is
    +inf or -inf by the sign of the mean, and NaN when every difference is 0."""
    n = len(differences)
    if n < 2:
        raise FhaValueError(f"`differences` needs at least 2 values for a t test, got {n}")
    mean, std = _mean_and_std(differences)
    if std == 0.0:
        return math.nan if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / (std / math.sqrt(n))


def paired_t_test(differences: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t test (n - 1 degrees of freedom) that the paired
    `differences` have mean 0.

    Differences that are all equal have zero variance, where the t statistic is undefined;
    the limit is returned instead: p = 0.0 when they are not 0 (every pair moved the same
    way by the same amount), p = 1.0 when they are all 0.
    """
    t = t_statistic(differences)
    if math.isnan(t):
        return 1.0
    df = len(differences) - 1
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))  # P(|T| >= |t|); 0 when t is infinite


SIGN_FLIP_EXACT_MAX = 30  # up to this many differences every sign pattern is counted (2 halves of 2**15 sums)
SIGN_FLIP_DRAWS = 100_000  # random sign patterns beyond it
SIGN_FLIP_SEED = 0  # so that a report is the same every time it is built
SIGN_FLIP_TOLERANCE = 1e-12  # relative to the sum of |differences|: sums this close count as ties


def _sign_sums(values: Sequence[float]) -> list[float]:
    """``sum(s_i * values[i])`` for every choice of signs s_i in {-1, +1} (2**len(values) sums)."""
    sums = [0.0]
    for value in values:
        sums = [total + value for total in sums] + [total - value for total in sums]
    return sums


def sign_flip_test(
    differences: Sequence[float], exact_max: int = SIGN_FLIP_EXACT_MAX, draws: int = SIGN_FLIP_DRAWS
) -> float:
    """Two-sided p-value of the paired sign-flip (randomisation) test that `differences` are symmetric
    about 0: the share of the 2**n sign patterns whose sum is at least as far from 0 as the observed one.

    Its null (each difference as likely positive as negative, by the same amount) is a little
    stronger than the t test's zero mean, and it needs no normality. Exact up to `exact_max`
    differences (the sums of the two halves are enumerated apart and matched by bisection, about
    2**(n/2) steps); beyond, estimated from `draws` random patterns as (hits + 1) / (draws + 1).
    The smallest exact value is 2 / 2**n (0.0625 with 5 seeds, 0.00195 with 10). Sums closer than
    `SIGN_FLIP_TOLERANCE` times the sum of |differences| count as ties, so differences of wildly
    unequal sizes (beyond 1e12 to 1) can give a p-value that is too large, never one too small.
    """
    n = len(differences)
    if n < 1:
        raise FhaValueError("`differences` needs at least 1 value for a sign-flip test, got 0")
    if not all(math.isfinite(value) for value in differences):
        raise FhaValueError(f"`differences` must be finite numbers, got {list(differences)}")
    sizes = [abs(value) for value in differences]
    tolerance = SIGN_FLIP_TOLERANCE * sum(sizes)
    observed = abs(sum(differences))
    if observed <= tolerance:
        return 1.0  # every pattern is at least as far from 0
    if n <= exact_max:
        left = _sign_sums(sizes[: n // 2])
        right = sorted(_sign_sums(sizes[n // 2 :]))
        hits = sum(
            len(right)
            - bisect_left(right, observed - total - tolerance)
            + bisect_right(right, -observed - total + tolerance)
            for total in left
        )
        return hits / 2.0**n
    rng = random.Random(SIGN_FLIP_SEED)
    hits = sum(
        abs(sum(size if rng.random() < 0.5 else -size for size in sizes)) >= observed - tolerance for _ in range(draws)
    )
    return (hits + 1) / (draws + 1)


def sign_flip_floor(differences: Sequence[float]) -> float:
    """The smallest p-value `sign_flip_test` can give for `differences`, reached when every non-zero one
    points the same way: 2 / 2**k with k of them non-zero (1.0 when none is). With few seeds it is
    at least 0.05 (5 or fewer), so no outcome could make the test significant."""
    nonzero = sum(1 for value in differences if value != 0.0)
    return min(1.0, 2.0 ** (1 - nonzero))


def holm_bonferroni(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (Holm 1979), keyed and ordered as `p_values`.

    With the m p-values sorted, the k-th smallest is multiplied by m - k + 1, and the
    products are made non-decreasing along that order and capped at 1; rejecting every
    hypothesis whose adjusted value is at most alpha keeps the family-wise error rate at
    alpha. NaN p-values (comparisons that could not be tested) stay NaN and do not count in m.
    """
    for name, p in p_values.items():
        if not (math.isnan(p) or 0.0 <= p <= 1.0):
            raise FhaValueError(f"`p_values`: {name} = {p} is not a probability in [0, 1]")
    tested = sorted((name for name, p in p_values.items() if not math.isnan(p)), key=lambda name: p_values[name])
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p_values[name]))
        adjusted[name] = running
    return {name: adjusted.get(name, math.nan) for name in p_values}


def equivalence(interval: Interval, margin: float) -> bool:
    """True when the whole interval lies inside (-`margin`, +`margin`).

    This is Schuirmann's two one-sided tests by interval inclusion: a (1 - 2 alpha)
    interval inside the margins rejects both "difference <= -margin" and "difference >=
    margin" at level alpha, so a 90% interval gives a 5% test and a 95% interval a 2.5% one.
    An interval of one value (NaN bounds) shows nothing: False.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise FhaValueError(f"`margin` must be a positive number, got {margin}")
    if interval.n < 2:
        return False
    return -margin < interval.low and interval.high < margin


def equivalence_p(interval: Interval, margin: float) -> float:
    """p-value of Schuirmann's two one-sided t tests that the true mean lies inside (-`margin`,
    +`margin`): the larger of P(T >= (mean + margin) / se) and P(T >= (margin - mean) / se) on
    n - 1 degrees of freedom, se = s / sqrt(n). Below alpha, equivalence is shown at level alpha
    (the same as a (1 - 2 alpha) interval inside the margin). NaN with one value."""
    if not (math.isfinite(margin) and margin > 0):
        raise FhaValueError(f"`margin` must be a positive number, got {margin}")
    if interval.n < 2:
        return math.nan
    if interval.std == 0.0:
        return 0.0 if abs(interval.mean) < margin else 1.0
    se = interval.std / math.sqrt(interval.n)
    df = interval.n - 1
    return max(1.0 - t_cdf((margin + interval.mean) / se, df), 1.0 - t_cdf((margin - interval.mean) / se, df))


# ------------------------------------------------------------------ power and sample size
ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000
POISSON_SPREAD_SDS = 12.0  # Poisson weights further than this many SDs from their mean sum to < 1e-30
POISSON_EXTRA_TERMS = 40  # and a margin for small means, where the Poisson law is skewed
ROOT_TOLERANCE = 1e-12  # relative, for the noncentrality solved by bisection


def _beta_step(a: float, b: float, log_x: float, log_1mx: float) -> float:
    """``x**a (1 - x)**b / (a B(a, b))``, by which I_x(a, b) exceeds I_x(a + 1, b)."""
    return math.exp(math.lgamma(a + b) - math.lgamma(a + 1.0) - math.lgamma(b) + a * log_x + b * log_1mx)


def noncentral_t_cdf(t: float, df: float, noncentrality: float) -> float:
    """P(T <= t) for the noncentral t with `df` degrees of freedom and noncentrality delta.

    For t >= 0, as a Poisson mixture (Guenther 1978; Lenth 1989):
    ``F = Phi(-delta) + 1/2 sum_j [p_j I_x(j + 1/2, df/2) + q_j I_x(j + 1, df/2)]`` with
    ``x = t**2 / (t**2 + df)``, ``lam = delta**2 / 2``, ``p_j = exp(-lam) lam**j / j!`` and
    ``q_j = delta exp(-lam) lam**j / (sqrt(2) Gamma(j + 3/2))``; for t < 0,
    ``F(t; delta) = 1 - F(-t; -delta)``. Only the bulk of the Poisson weights is summed, the
    incomplete beta functions stepped from its first term by ``I_x(a + 1, b) = I_x(a, b) -
    x**a (1 - x)**b / (a B(a, b))``.
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if t < 0:
        return 1.0 - noncentral_t_cdf(-t, df, -noncentrality)
    delta = noncentrality
    normal_part = 0.5 * math.erfc(delta / math.sqrt(2.0))  # Phi(-delta)
    if t == 0.0:
        return normal_part
    lam = delta * delta / 2.0
    x = t * t / (t * t + df)
    log_x, log_1mx = math.log(x), math.log(df) - math.log(t * t + df)
    b = df / 2.0
    spread = POISSON_SPREAD_SDS * math.sqrt(lam) + POISSON_EXTRA_TERMS
    first, last = max(0, math.floor(lam - spread)), math.ceil(lam + spread)
    beta_half, beta_whole = regularized_beta(first + 0.5, b, x), regularized_beta(first + 1.0, b, x)
    total = 0.0
    for j in range(first, last + 1):
        if lam > 0.0:
            log_poisson = -lam + j * math.log(lam)
            p_j = math.exp(log_poisson - math.lgamma(j + 1.0))
            q_j = math.copysign(
                math.exp(log_poisson + math.log(abs(delta)) - 0.5 * math.log(2.0) - math.lgamma(j + 1.5)), delta
            )
        else:
            p_j, q_j = (1.0 if j == 0 else 0.0), 0.0
        total += p_j * beta_half + q_j * beta_whole
        beta_half -= _beta_step(j + 0.5, b, log_x, log_1mx)
        beta_whole -= _beta_step(j + 1.0, b, log_x, log_1mx)
    return normal_part + 0.5 * total


def _check_design(sd: float, n: int, alpha: float) -> None:
    if not (math.isfinite(sd) and sd >= 0):
        raise FhaValueError(f"`sd` must be a non-negative number, got {sd}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise FhaValueError(f"`n` must be a whole number of pairs >= 2, got {n}")
    if not 0.0 < alpha < 1.0:
        raise FhaValueError(f"`alpha` must be in (0, 1), got {alpha}")


def _two_sided_power(delta: float, df: int, critical: float) -> float:
    """P(|T'| > critical) for T' noncentral t with `df` degrees of freedom and noncentrality delta."""
    return 1.0 - noncentral_t_cdf(critical, df, delta) + noncentral_t_cdf(-critical, df, delta)


def paired_t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """The probability that a two-sided paired t test at level `alpha` on `n` pairs rejects a
    zero mean when the true mean difference is `effect` and the differences' SD is `sd`:
    ``P(|T'| > t_{1-alpha/2, n-1})`` for T' noncentral t with noncentrality effect sqrt(n) / sd."""
    _check_design(sd, n, alpha)
    if sd == 0.0:
        return alpha if effect == 0.0 else 1.0
    return _two_sided_power(effect * math.sqrt(n) / sd, n - 1, t_quantile(1.0 - alpha / 2.0, n - 1))


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean paired difference that a two-sided paired t test at level
    `alpha` detects with probability `power` from `n` pairs whose differences have standard
    deviation `sd` (Cohen 1988's power analysis, in the units of the differences).

    Solved exactly: the noncentrality delta at which the test's power (`paired_t_power`)
    equals `power`, by bisection (the power grows with delta); MDE = delta * sd / sqrt(n).
    The usual approximation ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)``, which
    ignores the skew of the noncentral t, starts the search; at 5% and 80% power it is
    within 1% of the exact value from 6 pairs on, but 5% below it with 3 pairs and 14%
    below with 2.
    """
    _check_design(sd, n, alpha)
    if not alpha < power < 1.0:
        raise FhaValueError(f"`power` must be in (`alpha`, 1) = ({alpha}, 1), got {power}")
    if sd == 0.0:
        return 0.0
    return _detectable_noncentrality(int(n), alpha, power) * sd / math.sqrt(n)


@functools.cache  # depends on the design alone, and a report asks for it once per contrast and budget
def _detectable_noncentrality(n: int, alpha: float, power: float) -> float:
    """The noncentrality at which a two-sided t test at level `alpha` on `n` pairs has power `power`."""
    df = n - 1
    critical = t_quantile(1.0 - alpha / 2.0, df)
    low, high = 0.0, critical + t_quantile(power, df)
    while _two_sided_power(high, df, critical) < power:
        low, high = high, 2.0 * high
    while high - low > ROOT_TOLERANCE * high:
        middle = 0.5 * (low + high)
        if _two_sided_power(middle, df, critical) < power:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def seeds_needed(sd: float, halfwidth: float, confidence: float = CONFIDENCE, max_n: int = MAX_SEEDS) -> int:
    """The smallest n >= 2 whose `confidence` t-interval of a mean, for values with standard
    deviation `sd`, has half-width ``t_{(1+c)/2, n-1} * sd / sqrt(n)`` at most `halfwidth`
    (sizes a study from a pilot's paired SD). The half-width falls as n grows, so n is
    found by bisection; needing more than `max_n` is an error."""
    if not (math.isfinite(sd) and sd >= 0):
        raise FhaValueError(f"`sd` must be a non-negative number, got {sd}")
    if not (math.isfinite(halfwidth) and halfwidth > 0):
        raise FhaValueError(f"`halfwidth` must be a positive number, got {halfwidth}")
    if not 0.0 < confidence < 1.0:
        raise FhaValueError(f"`confidence` must be in (0, 1), got {confidence}")
    if max_n < 2:
        raise FhaValueError(f"`max_n` must be at least 2, got {max_n}")

    def narrow_enough(n: int) -> bool:
        return t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n) <= halfwidth

    if narrow_enough(2):
        return 2
    if not narrow_enough(max_n):
        raise FhaValueError(
            f"a {confidence:.0%} interval of half-width `halfwidth`={halfwidth:g} with `sd`={sd:g} "
            f"needs more than `max_n`={max_n} seeds"
        )
    too_few, enough = 2, max_n
    while enough - too_few > 1:
        middle = (too_few + enough) // 2
        if narrow_enough(middle):
            enough = middle
        else:
            too_few = middle
    return enough


# ------------------------------------------------------------------ variance components
@dataclass(frozen=True)
class VarianceComponents:
    """The variance of one value per (init seed, data seed) cell split into the part due to
    the init seed, to the data order and the residual (their interaction and noise), by
    two-way ANOVA without replication with both factors random."""

    init_seed: float
    data_order: float
    residual: float
    mean_square_init: float
    mean_square_data: float
    mean_square_residual: float
    df_init: int  # init seeds - 1
    df_data: int  # data seeds - 1
    df_residual: int  # df_init * df_data
    clipped: tuple[str, ...]  # components whose estimate was negative and is reported as 0

    @property
    def total(self) -> float:
        return self.init_seed + self.data_order + self.residual


MAX_MISSING_SHOWN = 3


def variance_components(values: Mapping[tuple[int, int], float]) -> VarianceComponents:
    """Split the variance of a fully crossed init seed x data seed design, `values` keyed by
    (init seed, data seed), one value per cell.

    With a init seeds and b data seeds the mean squares have expectations
    ``E[MS_init] = s2_res + b s2_init``, ``E[MS_data] = s2_res + a s2_data`` and
    ``E[MS_res] = s2_res``; solving them (the method of moments) gives the components. A
    negative estimate (the factor's mean square below the residual's) is reported as 0 and
    named in `clipped`.
    """
    if not all(isinstance(key, tuple) and len(key) == 2 for key in values):
        raise FhaValueError("`values` must be keyed by (init seed, data seed) pairs")
    inits, datas = sorted({key[0] for key in values}), sorted({key[1] for key in values})
    for what, levels in (("init seeds", inits), ("data seeds", datas)):
        if len(levels) < 2:
            raise FhaValueError(f"`values` needs at least 2 {what} for a variance split, got {len(levels)}")
    missing = [(init, data) for init in inits for data in datas if (init, data) not in values]
    if missing:
        shown = ", ".join(map(str, missing[:MAX_MISSING_SHOWN]))
        more = f" and {len(missing) - MAX_MISSING_SHOWN} more" if len(missing) > MAX_MISSING_SHOWN else ""
        raise FhaValueError(f"`values` is not fully crossed: no value for (init seed, data seed) {shown}{more}")
    bad = [key for key, value in values.items() if not math.isfinite(value)]
    if bad:
        raise FhaValueError(f"`values` must be finite numbers, got {values[bad[0]]} at {bad[0]}")
    a, b = len(inits), len(datas)
    grand = math.fsum(values.values()) / (a * b)
    init_mean = {init: math.fsum(values[init, data] for data in datas) / b for init in inits}
    data_mean = {data: math.fsum(values[init, data] for init in inits) / a for data in datas}
    df_init, df_data = a - 1, b - 1
    df_residual = df_init * df_data
    ms_init = b * math.fsum((init_mean[init] - grand) ** 2 for init in inits) / df_init
    ms_data = a * math.fsum((data_mean[data] - grand) ** 2 for data in datas) / df_data
    ms_residual = (
        math.fsum(
            (values[init, data] - init_mean[init] - data_mean[data] + grand) ** 2 for init in inits for data in datas
        )
        / df_residual
    )
    estimates = {"init_seed": (ms_init - ms_residual) / b, "data_order": (ms_data - ms_residual) / a}
    clipped = tuple(name for name, estimate in estimates.items() if estimate < 0)
    return VarianceComponents(
        init_seed=max(estimates["init_seed"], 0.0),
        data_order=max(estimates["data_order"], 0.0),
        residual=ms_residual,
        mean_square_init=ms_init,
        mean_square_data=ms_data,
        mean_square_residual=ms_residual,
        df_init=df_init,
        df_data=df_data,
        df_residual=df_residual,
        clipped=clipped,
    )


# ------------------------------------------------------------------ scaling law
MIN_POWER_LAW_POINTS = 3
EXPONENT_RANGE = (1e-3, 5.0)  # the exponents searched; a best fit at either end is refused
EXPONENT_GRID_POINTS = 400  # log-spaced over EXPONENT_RANGE
EXPONENT_TOLERANCE = 1e-13  # relative, of the golden-section search
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class PowerLawFit:
    """``L = E + A * N**-alpha``: `E` the loss no size removes, `residual` the sum of squared
    residuals of the fitted points."""

    E: float
    A: float
    alpha: float
    residual: float

    def predict(self, parameters: float) -> float:
        return self.E + self.A * parameters**-self.alpha


def _nonnegative_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """(sum of squared residuals, e, a) of the least-squares ``y = e + a x`` with e, a >= 0.

    A convex problem: its minimum is the unconstrained one when that is feasible, else on
    the boundary e = 0 or a = 0, so the best feasible one of these candidates is it."""
    n = len(x)
    mean_x, mean_y = math.fsum(x) / n, math.fsum(y) / n
    sxx = math.fsum((xi - mean_x) ** 2 for xi in x)
    candidates = [(0.0, 0.0), (max(mean_y, 0.0), 0.0)]
    if sxx > 0:
        slope = math.fsum((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, y)) / sxx
        candidates.append((mean_y - slope * mean_x, slope))
    candidates.append((0.0, math.fsum(xi * yi for xi, yi in zip(x, y)) / math.fsum(xi * xi for xi in x)))
    return min(
        (math.fsum((yi - e - a * xi) ** 2 for xi, yi in zip(x, y)), e, a) for e, a in candidates if e >= 0 and a >= 0
    )


def fit_power_law(parameters: Sequence[float], losses: Sequence[float]) -> PowerLawFit:
    """Least-squares fit of ``L = E + A * N**-alpha`` (E >= 0, A > 0, alpha > 0) to losses at
    parameter counts N.

    For a fixed alpha the model is linear in E and A, solved in closed form (with E, A >= 0);
    the remaining one-dimensional problem in alpha is searched on a log-spaced grid over
    EXPONENT_RANGE and refined by golden-section search around the best grid point. N is
    divided by its geometric mean inside the fit, which keeps ``N**-alpha`` near 1. Losses
    that do not fall with N, or a best exponent at the end of the range, are errors.
    """
    if len(parameters) != len(losses):
        raise FhaValueError(f"`parameters` and `losses` differ in length ({len(parameters)} and {len(losses)})")
    if len(set(parameters)) < MIN_POWER_LAW_POINTS:
        raise FhaValueError(
            f"a power law needs losses at {MIN_POWER_LAW_POINTS} or more different `parameters`, "
            f"got {len(set(parameters))}"
        )
    if not all(math.isfinite(n) and n > 0 for n in parameters):
        raise FhaValueError("`parameters` must be positive numbers")
    if not all(math.isfinite(loss) for loss in losses):
        raise FhaValueError("`losses` must be finite numbers")
    log_scale = math.fsum(math.log(n) for n in parameters) / len(parameters)
    logs = [math.log(n) - log_scale for n in parameters]

    def profile(alpha: float) -> tuple[float, float, float]:
        return _nonnegative_line([math.exp(-alpha * log_n) for log_n in logs], losses)

    low, high = EXPONENT_RANGE
    grid = [low * (high / low) ** (k / (EXPONENT_GRID_POINTS - 1)) for k in range(EXPONENT_GRID_POINTS)]
    residuals = [profile(alpha) for alpha in grid]
    best = min(range(len(grid)), key=lambda k: residuals[k][0])
    if residuals[best][2] == 0.0:
        raise FhaValueError("`losses` do not fall as `parameters` grow: no power law with A > 0 fits")
    if best in (0, len(grid) - 1):
        raise FhaValueError(
            f"the best exponent is at the end of the range searched [{low:g}, {high:g}]: "
            "the losses do not follow L = E + A * N**-alpha"
        )
    left, right = grid[best - 1], grid[best + 1]
    inner_left, inner_right = right - GOLDEN * (right - left), left + GOLDEN * (right - left)
    at_left, at_right = profile(inner_left)[0], profile(inner_right)[0]
    while right - left > EXPONENT_TOLERANCE * right:
        if at_left <= at_right:
            right, inner_right, at_right = inner_right, inner_left, at_left
            inner_left = right - GOLDEN * (right - left)
            at_left = profile(inner_left)[0]
        else:
            left, inner_left, at_left = inner_left, inner_right, at_right
            inner_right = left + GOLDEN * (right - left)
            at_right = profile(inner_right)[0]
    alpha = 0.5 * (left + right)
    residual, e, a = profile(alpha)
    return PowerLawFit(E=e, A=a * math.exp(alpha * log_scale), alpha=alpha, residual=residual)

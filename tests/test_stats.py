"""fha.stats beyond the t interval (tested in test_study.py): paired t tests, Holm's correction,
power and sample size, equivalence, variance components and the power-law fit.

Reference numbers not worked out by hand in a comment were computed once with SciPy 1.17.1
(``scipy.stats``, ``scipy.integrate.quad``, ``scipy.optimize``) and are written here; the tests
do not import SciPy."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from fha.errors import FhaValueError
from fha.stats import (
    Interval,
    equivalence,
    equivalence_p,
    fit_power_law,
    holm_bonferroni,
    mean_interval,
    minimum_detectable_effect,
    noncentral_t_cdf,
    paired_difference,
    paired_t_power,
    paired_t_test,
    seeds_needed,
    sign_flip_test,
    t_cdf,
    t_quantile,
    t_statistic,
    variance_components,
)


# ------------------------------------------------------------------ paired t test
def test_paired_t_test_equals_the_closed_forms_of_one_and_two_degrees_of_freedom():
    # differences -0.03, -0.01, -0.05: mean -0.03, sd 0.02, t = -0.03 / (0.02 / sqrt 3) = -1.5 sqrt 3;
    # with 2 df, P(|T| > t) = 1 - t / sqrt(2 + t^2)
    t = 1.5 * math.sqrt(3.0)
    assert t_statistic([-0.03, -0.01, -0.05]) == pytest.approx(-t, rel=1e-12)
    assert paired_t_test([-0.03, -0.01, -0.05]) == pytest.approx(1.0 - t / math.sqrt(2.0 + t * t), rel=1e-10)
    assert paired_t_test([-0.03, -0.01, -0.05]) == pytest.approx(0.12168993434632017, rel=1e-10)  # SciPy
    # 1.5 and -0.5: mean 0.5, sd sqrt 2, t = 0.5; with 1 df (Cauchy), P(|T| > t) = 1 - 2 atan(t) / pi
    assert paired_t_test([1.5, -0.5]) == pytest.approx(1.0 - 2.0 * math.atan(0.5) / math.pi, rel=1e-12)


def test_paired_t_test_of_six_differences_equals_scipy():
    differences = [0.12, -0.05, 0.31, 0.08, 0.22, 0.15]
    # scipy.stats.ttest_1samp(differences, 0): statistic 2.7577947100207947, pvalue 0.039939008140833496
    assert t_statistic(differences) == pytest.approx(2.7577947100207947, rel=1e-12)
    assert paired_t_test(differences) == pytest.approx(0.039939008140833496, rel=1e-10)
    assert paired_t_test([-d for d in differences]) == pytest.approx(0.039939008140833496, rel=1e-10)


def test_zero_variance_and_too_few_differences():
    assert paired_t_test([0.5, 0.5, 0.5]) == 0.0
    assert paired_t_test([-0.25] * 4) == 0.0
    assert paired_t_test([0.0, 0.0]) == 1.0
    assert t_statistic([-0.25] * 4) == -math.inf and math.isnan(t_statistic([0.0, 0.0]))
    with pytest.raises(FhaValueError, match="`differences` needs at least 2 values for a t test, got 1"):
        paired_t_test([0.1])


def test_paired_difference_has_the_p_value_of_its_differences():
    paired = paired_difference({0: 1.20, 1: 1.25, 2: 1.19}, {0: 1.23, 1: 1.26, 2: 1.24})
    assert paired.p_value == pytest.approx(0.12168993434632017, rel=1e-9)
    assert math.isnan(paired_difference({0: 1.0}, {0: 1.1}).p_value)


# ------------------------------------------------------------------ sign-flip test
def _sign_flip_by_enumeration(differences: list[float]) -> float:
    """Every sign pattern, one at a time: the definition, slowly."""
    observed = abs(sum(differences))
    patterns = list(itertools.product((1.0, -1.0), repeat=len(differences)))
    tolerance = 1e-12 * sum(abs(value) for value in differences)
    far = sum(
        1 for signs in patterns if abs(sum(s * abs(v) for s, v in zip(signs, differences))) >= observed - tolerance
    )
    return far / len(patterns)


@pytest.mark.parametrize("n", range(1, 13))
def test_sign_flip_test_equals_enumerating_every_pattern(n):
    rng = random.Random(n)
    differences = [rng.gauss(0.005, 0.02) for _ in range(n)]
    assert sign_flip_test(differences) == _sign_flip_by_enumeration(differences)


def test_sign_flip_test_counts_ties_and_its_smallest_values():
    assert sign_flip_test([0.01] * 5) == 2 / 32  # only all-plus and all-minus are as far from 0
    assert sign_flip_test([-0.01] * 10) == 2 / 1024
    assert sign_flip_test([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_test([0.02, -0.02]) == 1.0  # a sum of 0: every pattern is as far
    # |sum| 0.6 or more: 0.1+0.2+0.3+0.4, -0.1+0.2+0.3+0.4, 0.1-0.2+0.3+0.4 (the observed one), each either sign
    assert sign_flip_test([0.1, -0.2, 0.3, 0.4]) == 6 / 16
    with pytest.raises(FhaValueError, match="needs at least 1 value"):
        sign_flip_test([])
    with pytest.raises(FhaValueError, match=r"`differences` must be finite numbers, got \[0.1, nan\]"):
        sign_flip_test([0.1, math.nan])
    with pytest.raises(FhaValueError, match="must be finite"):
        sign_flip_test([0.1, math.inf])


def test_sign_flip_test_estimates_from_random_patterns_beyond_the_exact_limit():
    rng = random.Random(7)
    differences = [rng.gauss(0.004, 0.02) for _ in range(14)]
    exact = sign_flip_test(differences)
    estimated = sign_flip_test(differences, exact_max=4, draws=20_000)
    assert estimated == pytest.approx(exact, abs=0.015)  # 4 binomial SDs at p near 0.5
    hits = estimated * 20_001 - 1  # an estimate, (hits + 1) / (draws + 1), not the count of 2**14 patterns
    assert hits == pytest.approx(round(hits), abs=1e-6) and exact * 2**14 == round(exact * 2**14)
    assert estimated == sign_flip_test(differences, exact_max=4, draws=20_000)  # a fixed seed: the same report
    # every difference the same sign: only the observed pattern and its mirror are as far, about 2 in 2**31,
    # so no random pattern is: the estimate counts the observed one, (0 + 1) / (draws + 1)
    assert sign_flip_test([0.01] * 31, draws=1000) == 1 / 1001


def test_paired_differences_carry_their_sign_flip_p():
    differences = [-0.01] * 9 + [0.02]
    paired = paired_difference(dict(enumerate(differences)), dict.fromkeys(range(10), 0.0))
    assert paired.sign_flip_p == sign_flip_test(paired.differences) == _sign_flip_by_enumeration(differences)
    assert math.isnan(paired_difference({0: 1.0}, {0: 0.5}).sign_flip_p)


# ------------------------------------------------------------------ Holm
def test_holm_on_the_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> made monotone: 0.06
    adjusted = holm_bonferroni({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})


def test_holm_caps_at_one_and_passes_nan_through_uncounted():
    adjusted = holm_bonferroni({"x": 0.3, "gone": math.nan, "y": 0.02, "z": 0.6})
    # three tested: 0.02 * 3 = 0.06, 0.3 * 2 = 0.6, 0.6 * 1 = 0.6
    assert math.isnan(adjusted["gone"])
    assert (adjusted["y"], adjusted["x"], adjusted["z"]) == pytest.approx((0.06, 0.6, 0.6))
    assert holm_bonferroni({"x": 0.4, "y": 0.5}) == {"x": 0.8, "y": 0.8}
    assert holm_bonferroni({"x": 0.7, "y": 0.9}) == {"x": 1.0, "y": 1.0}
    assert holm_bonferroni({"only": 0.04}) == {"only": 0.04} and holm_bonferroni({}) == {}
    with pytest.raises(FhaValueError, match=r"`p_values`: y = 1.5 is not a probability in \[0, 1\]"):
        holm_bonferroni({"x": 0.1, "y": 1.5})


# ------------------------------------------------------------------ equivalence
def test_equivalence_needs_the_whole_interval_strictly_inside_the_margins():
    inside = Interval(mean=0.01, low=-0.02, high=0.04, n=3, std=0.01)
    assert equivalence(inside, 0.05) and not equivalence(inside, 0.04)
    assert not equivalence(Interval(mean=-0.05, low=-0.08, high=-0.02, n=3, std=0.01), 0.05)
    assert not equivalence(mean_interval([0.0]), 1.0)  # one value: no interval
    with pytest.raises(FhaValueError, match="`margin` must be a positive number, got 0"):
        equivalence(inside, 0)


def test_equivalence_p_agrees_with_the_90_percent_interval_inside_the_margin():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(2, 12)
        values = [rng.gauss(rng.uniform(-0.02, 0.02), rng.uniform(0.002, 0.03)) for _ in range(n)]
        p = equivalence_p(mean_interval(values), 0.02)
        ninety = mean_interval(values, 0.90)
        assert (p < 0.05) == (-0.02 < ninety.low and ninety.high < 0.02)


def test_equivalence_p_by_hand_and_its_limits():
    # mean 0.01, s = 0.01, n = 4: se = 0.005; t = (0.02 - 0.01) / 0.005 = 2 and (0.02 + 0.01) / 0.005 = 6 on 3 df
    interval = mean_interval([0.0, 0.01, 0.01, 0.02])
    assert interval.std == pytest.approx(math.sqrt(2e-4 / 3))
    se = interval.std / 2
    expected = 1 - t_cdf((0.02 - 0.01) / se, 3)
    assert equivalence_p(interval, 0.02) == pytest.approx(expected, rel=1e-12)
    assert equivalence_p(mean_interval([0.01, 0.01]), 0.02) == 0.0  # no spread, inside the margin
    assert equivalence_p(mean_interval([0.03, 0.03]), 0.02) == 1.0
    assert math.isnan(equivalence_p(mean_interval([0.01]), 0.02))
    with pytest.raises(FhaValueError, match="`margin` must be a positive number, got 0"):
        equivalence_p(interval, 0.0)


# ------------------------------------------------------------------ power and sample size
@pytest.mark.parametrize(
    "t, df, delta, expected",  # scipy.stats.nct.cdf(t, df, delta)
    [
        (2.0, 3, 1.0, 0.7436298684076654),
        (-1.5, 4, 0.5, 0.04337356266476112),
        (3.1, 9, 2.8, 0.5660939470557036),
        (2.26, 9, -1.0, 0.9978968483235492),
        (12.7062, 1, 17.0, 0.1822677321029484),
    ],
)
def test_noncentral_t_cdf_equals_scipy(t, df, delta, expected):
    assert noncentral_t_cdf(t, df, delta) == pytest.approx(expected, abs=1e-13)


def test_noncentral_t_cdf_reduces_to_the_central_t_and_the_normal():
    for t in (-2.5, 0.3, 4.0):
        assert noncentral_t_cdf(t, 4, 0.0) == pytest.approx(t_cdf(t, 4), abs=1e-14)
    assert noncentral_t_cdf(0.0, 7, 1.3) == pytest.approx(0.5 * math.erfc(1.3 / math.sqrt(2.0)), abs=1e-15)


# exact MDE / sd at alpha 0.05, power 0.8: the root in delta of the two-sided power written as an
# integral over the chi distribution (scipy.integrate.quad, scipy.optimize.brentq), times 1 / sqrt(n);
# n = 10 is also what R's power.t.test(n = 10, sd = 1, power = 0.8, type = "paired") reports (0.9960014)
EXACT_MDE = {2: 11.5498884359, 3: 3.2640435497, 10: 0.996001371455, 30: 0.529235615113}


@pytest.mark.parametrize("n", sorted(EXACT_MDE))
def test_minimum_detectable_effect_solves_the_noncentral_t_exactly(n):
    assert minimum_detectable_effect(1.0, n) == pytest.approx(EXACT_MDE[n], rel=1e-9)
    assert minimum_detectable_effect(0.05, n) == pytest.approx(0.05 * EXACT_MDE[n], rel=1e-9)
    assert paired_t_power(minimum_detectable_effect(0.3, n), 0.3, n) == pytest.approx(0.8, abs=1e-10)


def test_minimum_detectable_effect_is_near_the_usual_approximation():
    def approximation(n: int) -> float:
        return (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) / math.sqrt(n)

    for n in (6, 10, 30, 100):
        assert minimum_detectable_effect(1.0, n) == pytest.approx(approximation(n), rel=0.01)
    assert 1.04 < minimum_detectable_effect(1.0, 3) / approximation(3) < 1.06  # the approximation is 5% low here
    # other levels: alpha 0.01 at 100 pairs, 90% power at 5 (references as for EXACT_MDE)
    assert minimum_detectable_effect(1.0, 100, alpha=0.01) == pytest.approx(0.347587936491, rel=1e-9)
    assert minimum_detectable_effect(0.05, 5, power=0.9) == pytest.approx(0.0982944411803, rel=1e-9)


def test_power_and_mde_edge_cases():
    assert paired_t_power(0.0, 1.0, 5) == pytest.approx(0.05, abs=1e-12)  # no effect: rejects at the level
    assert paired_t_power(0.0, 1.0, 5, alpha=0.1) == pytest.approx(0.1, abs=1e-12)
    assert paired_t_power(10.0, 1.0, 5) > 0.999999 and paired_t_power(-0.4, 1.0, 8) == paired_t_power(0.4, 1.0, 8)
    assert minimum_detectable_effect(0.0, 3) == 0.0
    with pytest.raises(FhaValueError, match="`n` must be a whole number of pairs >= 2, got 1"):
        minimum_detectable_effect(1.0, 1)
    with pytest.raises(FhaValueError, match=r"`power` must be in \(`alpha`, 1\) = \(0.05, 1\), got 0.03"):
        minimum_detectable_effect(1.0, 5, power=0.03)
    with pytest.raises(FhaValueError, match="`sd` must be a non-negative number, got -1"):
        minimum_detectable_effect(-1.0, 5)


def test_seeds_needed_is_the_smallest_n_with_a_narrow_enough_interval():
    # t(0.975, 1) 0.1 / sqrt 2 = 0.898 > 0.5, t(0.975, 2) 0.1 / sqrt 3 = 4.3027 * 0.0577 = 0.248 <= 0.5
    assert seeds_needed(0.1, 0.5) == 3
    # t(0.975, 5) / sqrt 6 = 2.5706 / 2.4495 = 1.049 > 1, t(0.975, 6) / sqrt 7 = 2.4469 / 2.6458 = 0.925 <= 1
    assert seeds_needed(1.0, 1.0) == 7
    assert seeds_needed(0.0, 0.01) == 2 and seeds_needed(0.1, 10.0) == 2
    for sd, halfwidth, expected in ((0.1, 0.05, 18), (0.3, 0.02, 867)):  # by counting up with scipy.stats.t
        assert seeds_needed(sd, halfwidth) == expected
        for n, narrow in ((expected - 1, False), (expected, True)):
            interval = mean_interval([-sd, sd] * (n // 2) + [0.0] * (n % 2))  # any sample of that SD would do
            assert ((interval.high - interval.mean) * sd / interval.std <= halfwidth) is narrow
    assert seeds_needed(1.0, 0.1, confidence=0.9) < seeds_needed(1.0, 0.1)


def test_seeds_needed_errors():
    with pytest.raises(FhaValueError, match="needs more than `max_n`=100 seeds"):
        seeds_needed(0.3, 0.02, max_n=100)
    with pytest.raises(FhaValueError, match="`halfwidth` must be a positive number, got 0"):
        seeds_needed(0.3, 0.0)
    with pytest.raises(FhaValueError, match=r"`confidence` must be in \(0, 1\), got 95"):
        seeds_needed(0.3, 0.1, confidence=95)


# ------------------------------------------------------------------ variance components
def test_variance_components_of_a_hand_computed_design():
    # init seed 0: 1 2 6, init seed 1: 3 5 7 (data seeds 0, 1, 2). Grand mean 4; init means 3, 5;
    # data means 2, 3.5, 6.5. SS_init = 3 (1 + 1) = 6 on 1 df; SS_data = 2 (4 + 0.25 + 6.25) = 21 on 2;
    # SS_total = 9 + 4 + 4 + 1 + 1 + 9 = 28, so SS_residual = 1 on 2 df: MS 6, 10.5, 0.5;
    # init seed (6 - 0.5) / 3 = 11/6, data order (10.5 - 0.5) / 2 = 5, residual 0.5
    rows = {0: (1.0, 2.0, 6.0), 1: (3.0, 5.0, 7.0)}
    split = variance_components({(init, data): row[data] for init, row in rows.items() for data in range(3)})
    assert (split.mean_square_init, split.mean_square_data, split.mean_square_residual) == pytest.approx(
        (6.0, 10.5, 0.5)
    )
    assert (split.df_init, split.df_data, split.df_residual) == (1, 2, 2)
    assert (split.init_seed, split.data_order, split.residual) == pytest.approx((11 / 6, 5.0, 0.5))
    assert split.total == pytest.approx(11 / 6 + 5.5) and split.clipped == ()


def test_variance_components_of_an_additive_design_are_the_factors_variances():
    init_effect, data_effect = [0.3, -0.1, 0.5, 0.2], [1.0, 1.4, 0.7]
    values = {(i, j): 2.0 + a + b for i, a in enumerate(init_effect) for j, b in enumerate(data_effect)}
    split = variance_components(values)
    assert split.init_seed == pytest.approx(statistics.variance(init_effect), rel=1e-9)
    assert split.data_order == pytest.approx(statistics.variance(data_effect), rel=1e-9)
    assert split.residual == pytest.approx(0.0, abs=1e-20)


def test_negative_variance_estimates_are_clipped_and_named():
    # 1 2 / 2 1: both factors' means are all 1.5, so MS_init = MS_data = 0 and MS_residual = 4 * 0.25 / 1 = 1
    split = variance_components({(0, 0): 1.0, (0, 1): 2.0, (1, 0): 2.0, (1, 1): 1.0})
    assert split.clipped == ("init_seed", "data_order")
    assert (split.init_seed, split.data_order, split.residual) == (0.0, 0.0, 1.0)


def test_variance_components_refuse_designs_that_are_not_fully_crossed():
    full = {(i, j): float(i + j) for i in range(3) for j in range(2)}
    with pytest.raises(FhaValueError, match=r"not fully crossed: no value for \(init seed, data seed\) \(1, 0\)$"):
        variance_components({key: value for key, value in full.items() if key != (1, 0)})
    with pytest.raises(FhaValueError, match=r"\(1, 4\), \(1, 5\), \(2, 4\) and 1 more$"):
        variance_components({**full, (0, 4): 1.0, (0, 5): 1.0})
    with pytest.raises(FhaValueError, match="needs at least 2 data seeds for a variance split, got 1"):
        variance_components({(0, 0): 1.0, (1, 0): 2.0})
    with pytest.raises(FhaValueError, match="needs at least 2 init seeds for a variance split, got 1"):
        variance_components({(0, 0): 1.0, (0, 1): 2.0})
    with pytest.raises(FhaValueError, match=r"must be finite numbers, got nan at \(2, 1\)"):
        variance_components({**full, (2, 1): math.nan})


# ------------------------------------------------------------------ power law
PARAMETERS = [1e5, 3e5, 1e6, 3e6, 1e7, 3e7]


@pytest.mark.parametrize("e, a, alpha", [(1.7, 400.0, 0.34), (2.0, 1e3, 0.5), (0.0, 50.0, 0.2), (3.5, 8.0, 0.07)])
def test_fit_power_law_recovers_exact_synthetic_curves(e, a, alpha):
    fit = fit_power_law(PARAMETERS, [e + a * n**-alpha for n in PARAMETERS])
    assert fit.E == pytest.approx(e, rel=1e-6, abs=1e-9)
    assert fit.A == pytest.approx(a, rel=1e-6) and fit.alpha == pytest.approx(alpha, rel=1e-6)
    assert fit.residual < 1e-20 and fit.predict(1e9) == pytest.approx(e + a * 1e9**-alpha, rel=1e-6)


def test_fit_power_law_of_noisy_losses_equals_scipy():
    losses = [4.91, 4.32, 3.86, 3.58, 3.31, 3.17]
    # scipy.optimize.least_squares of E + A N^-alpha - L with bounds E, A >= 0, 0 <= alpha <= 5,
    # from (2.5, 50, 0.3), tolerances 1e-15
    fit = fit_power_law(PARAMETERS, losses)
    assert (fit.E, fit.A, fit.alpha) == pytest.approx(
        (2.740772844247491, 57.75199513405227, 0.2851452740856686), rel=1e-6
    )
    assert fit.residual == pytest.approx(0.0005573335455459293, rel=1e-9)
    assert fit.residual == pytest.approx(sum((fit.predict(n) - loss) ** 2 for n, loss in zip(PARAMETERS, losses)))


def test_fit_power_law_errors():
    with pytest.raises(FhaValueError, match="needs losses at 3 or more different `parameters`, got 2"):
        fit_power_law([1e5, 1e6, 1e6], [3.0, 2.0, 2.1])
    with pytest.raises(FhaValueError, match=r"`parameters` and `losses` differ in length \(3 and 2\)"):
        fit_power_law([1e5, 1e6, 1e7], [3.0, 2.0])
    with pytest.raises(FhaValueError, match="`parameters` must be positive numbers"):
        fit_power_law([0.0, 1e6, 1e7], [3.0, 2.0, 1.5])
    with pytest.raises(FhaValueError, match="`losses` do not fall as `parameters` grow"):
        fit_power_law([1e5, 1e6, 1e7], [3.0, 3.1, 3.2])
    with pytest.raises(FhaValueError, match=r"the best exponent is at the end of the range searched \[0.001, 5\]"):
        fit_power_law([1.0, 10.0, 100.0], [3.0, 1.0, 1.0])

"""The paired comparison's statistics, on inputs whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.checks.paired import (
    CONSTANT,
    IDENTICAL,
    NOT_SHOWN,
    ONE_SEED,
    comparison_verdict,
    describe,
    format_p,
    holm,
    paired_difference,
    untested_text,
    verdict,
)

#: Student's t, 97.5% quantile, 4 degrees of freedom (printed tables: 2.776)
T_975_DF4 = 2.7764451051977987


def _exact(shift: float, sd: float, n: int) -> np.ndarray:
    """n differences whose sample mean is exactly ``shift`` and sample sd exactly ``sd``."""
    z = np.arange(n, dtype=np.float64)
    z = (z - z.mean()) / z.std(ddof=1)
    return shift + sd * z


def _no_test(d) -> bool:
    return all(math.isnan(v) for v in (d.low, d.high, d.t, d.p))


def test_a_difference_of_exactly_zero_is_identical_on_every_seed_with_no_test():
    # a setting that trains as the default does: no spread, so no t test, no zero interval
    default = [0.71, 0.69, 0.74, 0.70, 0.72]
    d = paired_difference(default, default)
    assert (d.n, d.mean, d.sd, d.se) == (5, 0, 0, 0) and _no_test(d)
    assert d.degenerate == IDENTICAL
    assert describe("accuracy", d, d.p) == ("identical to the default on accuracy on every "
                                            "seed (5 seeds: nothing to test)")
    assert untested_text(d) == "identical on every seed"
    assert verdict(d.mean, d.p) == NOT_SHOWN and comparison_verdict(d, d.p) == IDENTICAL


def test_a_constant_nonzero_difference_is_said_without_a_test():
    d = paired_difference([0.8] * 4, [0.7] * 4)
    assert d.mean == pytest.approx(0.1) and d.sd == 0 and _no_test(d)
    assert d.degenerate == CONSTANT
    assert describe("accuracy", d, d.p) == ("differs from the default on accuracy by +0.100 "
                                            "on every seed (4 seeds: no spread, so no t "
                                            "test)")
    # the same difference between unequal values: float rounding (0.679 - 0.667 and
    # 0.148 - 0.136 differ in the 17th digit) is no spread to test against
    setting, default = [0.679, 0.352, 0.148], [0.667, 0.34, 0.136]
    assert np.std(np.subtract(setting, default), ddof=1) > 0
    rounded = paired_difference(setting, default)
    assert rounded.degenerate == CONSTANT and _no_test(rounded)
    assert untested_text(rounded) == "+0.012 on every seed"
    # a real spread, however small against the values, is still tested
    assert paired_difference([0.679, 0.352, 0.1481], default).degenerate is None


def test_one_paired_seed_has_no_interval_and_no_test():
    d = paired_difference([0.8], [0.7])
    assert d.n == 1 and d.mean == pytest.approx(0.1) and math.isnan(d.sd) and _no_test(d)
    assert d.degenerate == ONE_SEED
    assert describe("accuracy", d, d.p) == ("differs from the default on accuracy by +0.100 "
                                            "on its one paired seed (no interval, no test)")
    assert untested_text(d) == "+0.100 on one seed"
    assert format_p(d.p) == "no test"


def test_a_known_shift_with_known_spread_matches_the_t_distribution():
    # mean difference δ and sd σ exactly; with δ = t_{0.975,4} σ / √5 the test stands
    # exactly at p = 0.05 and the interval's lower end exactly at 0
    n, sd = 5, 0.04
    shift = T_975_DF4 * sd / math.sqrt(n)
    default = np.array([0.70, 0.66, 0.73, 0.69, 0.71])  # any seeds' values: they cancel
    d = paired_difference(default + _exact(shift, sd, n), default)
    assert d.mean == pytest.approx(shift, abs=1e-12)
    assert d.sd == pytest.approx(sd, abs=1e-12)
    assert d.se == pytest.approx(sd / math.sqrt(n), abs=1e-12)
    assert d.t == pytest.approx(T_975_DF4, abs=1e-9)
    assert d.p == pytest.approx(0.05, abs=1e-9)
    assert d.low == pytest.approx(0.0, abs=1e-12)
    assert d.high == pytest.approx(2 * shift, abs=1e-12)


def test_intervals_cover_the_true_shift_at_their_level_and_p_is_uniform_under_the_null():
    rng = np.random.default_rng(0)
    trials, n, shift, sd = 4000, 5, 0.03, 0.05
    covered = rejected_null = 0
    for _ in range(trials):
        seed_effect = rng.normal(0.7, 0.1, n)  # shared by both settings of a seed
        a = seed_effect + shift + rng.normal(0, sd, n)
        b = seed_effect + rng.normal(0, 0, n)
        d = paired_difference(a, b)
        covered += d.low <= shift <= d.high
        null = paired_difference(seed_effect + rng.normal(0, sd, n), seed_effect)
        rejected_null += null.p < 0.05
    # binomial sd at 4000 trials: 0.0034; 4.5 sd either way
    assert abs(covered / trials - 0.95) < 0.016
    assert abs(rejected_null / trials - 0.05) < 0.016


def test_pairing_removes_what_a_seed_does_to_both_settings():
    # seed effects ten times the shift: paired, the shift is plain; unpaired, it is not
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0.0, 0.1, 6)
    a = seed_effect + 0.02 + rng.normal(0, 0.002, 6)
    b = seed_effect
    assert paired_difference(a, b).p < 0.001
    from scipy import stats

    assert stats.ttest_ind(a, b).pvalue > 0.5


def test_holm_on_a_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_too_few_or_unpaired_values_are_refused():
    with pytest.raises(ValueError, match="at least 1 seed"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [0.5])


def test_sentences_say_better_worse_or_no_different():
    better = paired_difference([0.9, 0.91, 0.92], [0.7, 0.7, 0.71])
    # means 0.91 and 0.7033...: a difference of 0.2067, sd 0.00577, t = 62 on 2 df
    assert describe("disentanglement_score", better, better.p) == (
        "beats the default on disentanglement_score by 0.207 ± 0.003 "
        "(95% CI +0.192 to +0.221, p < 0.001)")
    assert describe("leakage", better, better.p, higher_is_better=False).startswith(
        "is worse than the default on leakage")
    assert format_p(0.0004) == "< 0.001" and format_p(0.0312) == "0.031"


def test_paired_by_seed_pairs_only_the_shared_seeds():
    from search.checks.paired import paired_by_seed

    setting = {0: 0.6, 1: 0.7, 2: 0.9, 5: 0.1}  # seed 5 has no partner
    default = {0: 0.5, 1: 0.5, 2: 0.6, 3: 0.9}  # nor has seed 3
    d = paired_by_seed(setting, default)
    assert d.n == 3 and d.mean == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert paired_by_seed({0: 0.6, 4: 0.7}, {0: 0.5}) is None  # one shared seed: no test


def test_mean_sd_text():
    from search.checks.paired import mean_sd_text

    assert mean_sd_text([0.2, 0.4]) == f"0.300 ± {math.sqrt(0.02):.3f}"  # sd with n - 1
    assert mean_sd_text([0.25]) == "0.250" and mean_sd_text([]) == "–"

"""Dependence between groups: numpy's correlations, a permuted copy."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer.metrics.known import (
    known_inputs,
    scores,
)
from trainer.metrics import (
    abs_correlation_matrix,
    mean_abs_correlation,
)


def test_correlation_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 3))
    b = a @ rng.normal(size=(3, 4)) + rng.normal(size=(300, 4))
    expected = np.abs(np.corrcoef(a.T, b.T)[:3, 3:])
    assert np.allclose(abs_correlation_matrix(a, b), expected)
    assert mean_abs_correlation(a, b) == pytest.approx(expected.mean())


def test_permuted_copy_of_zy_inside_zay_is_caught():
    m = scores(known_inputs("permuted_zy"), ["correlation", "nonlinear_dependence"])
    assert m["zy_zay_correlation"] >= 0.9
    assert m["zy_zay_correlation_published"] < 0.2  # matched dimensions miss it
    assert m["zy_zay_hsic"] > 0.8
    assert m["zay_independence_score"] <= 0.55


def _copy_inputs(zay_mean_scale: float, zay_std: float, *, copy: bool = True, n: int = 2000,
                 seed: int = 0):
    """zy, za independent N(0, I) means with small posterior noise; zay's means are
    ``zay_mean_scale`` times zy's (a copy) or independent noise, under posterior noise of
    sd ``zay_std``. Both splits are drawn the same way."""
    from trainer.metrics import EvalInputs

    rng = np.random.default_rng(seed)

    def split():
        zy, za = rng.normal(size=(n, 6)), rng.normal(size=(n, 4))
        zay = zay_mean_scale * (zy[:, [2, 0, 5, 1, 4, 3]] if copy else rng.normal(size=(n, 6)))
        means = {"zy": zy, "za": za, "zay": zay}
        std = {"zy": np.full((n, 6), 0.05), "za": np.full((n, 4), 0.05),
               "zay": np.full((n, 6), zay_std)}
        labels = {"y": rng.integers(0, 3, n), "a": rng.integers(0, 2, n)}
        return means, std, labels

    (fm, fs, ff), (sm, ss, sf) = split(), split()
    return EvalInputs(fm, ff, sm, sf, fit_std=fs, score_std=ss, seed=seed, draws=4)


def test_dependence_reads_what_the_decoder_receives():
    """Linear CKA of zy with zay = c * P zy + sigma * eps (P a permutation, zy ~ N(0, I)):
    Cov(zy, zay) = c P, Cov(zay) = (c^2 + sigma^2) I, so CKA = c^2 / (c^2 + sigma^2)."""
    names = ["correlation", "nonlinear_dependence"]
    # a copy far above its posterior noise: c = 1, sigma = 0.01 -> CKA = 0.9999
    high = scores(_copy_inputs(1.0, 0.01), names)
    assert high["zy_zay_correlation"] >= 0.98
    assert high["zy_zay_hsic"] >= 0.9
    # the same copy's means at 1/100 of its posterior noise: c = 0.01, sigma = 1 ->
    # CKA = 1e-4; the means alone read it as a perfect copy
    drowned = scores(_copy_inputs(0.01, 1.0), names)
    assert abs(drowned["zy_zay_correlation"]) <= 0.02
    assert drowned["zy_zay_hsic"] <= 0.05
    assert drowned["zay_independence_score"] >= 0.98
    assert drowned["zy_zay_correlation_means"] >= 0.98
    assert drowned["zay_independence_score_means"] <= 0.52
    # noise: zay independent of zy and za -> 0 on samples and on means
    noise = scores(_copy_inputs(1.0, 0.5, copy=False), names)
    for key in ("zy_zay_correlation", "za_zay_correlation", "zy_zay_correlation_means",
                "zy_zay_hsic", "za_zay_hsic"):
        assert noise[key] <= 0.02, key
    assert noise["zay_independence_score"] >= 0.98


def test_independent_groups_read_independent_however_many_draws_are_scored():
    """Debiased CKA's expectation is 0 for independent rows; the stacked draws of one
    input are not independent rows. With 64 draws of 200 inputs and an informative zay
    (means sd 1, noise sd 0.1), the pooled estimate read about 0.03; draw by draw, the
    mean over draws stays near 0 (each draw's sd is about 1/n ~ 0.005)."""
    from trainer.metrics import EvalInputs

    rng = np.random.default_rng(3)
    n = 200

    def split():
        means = {"zy": rng.normal(size=(n, 8)), "za": rng.normal(size=(n, 8)),
                 "zay": rng.normal(size=(n, 8))}
        std = {g: np.full((n, 8), 0.1) for g in means}
        return means, std, {"y": rng.integers(0, 3, n), "a": rng.integers(0, 2, n)}

    (fm, fs, ff), (sm, ss, sf) = split(), split()
    inputs = EvalInputs(fm, ff, sm, sf, fit_std=fs, score_std=ss, draws=64)
    m = scores(inputs, ["correlation"])
    for key in ("zy_zay_correlation", "za_zay_correlation"):
        assert m[key] < 0.01, key

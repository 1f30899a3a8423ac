"""Probes on posterior samples: the Bayes limit, the draws' variance, held-out scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.trainer.metrics.known import (
    bayes_cc,
    two_level,
)
from trainer.metrics import (
    evaluate_latents,
    probe_scores,
)


@pytest.mark.parametrize("ratio", [0.01, 0.1, 1.0, 3.0])
def test_probe_on_samples_reaches_the_bayes_accuracy_and_no_more(ratio):
    m = evaluate_latents(two_level(ratio), ["factor_matrix", "activity"])
    # 4,000 scored inputs x 10 draws, all read right with the same chance p: the
    # chance-corrected accuracy has sd 2 sqrt(p (1 - p) / 40,000) <= 0.005, plus the fit's
    # threshold error, second order at the optimum; 0.02 is four sd
    assert m["factor_s_from_z"] == pytest.approx(max(bayes_cc(ratio), 0.0), abs=0.02)
    assert m["factor_s_from_z_means"] == 1.0  # the means alone always separate s
    assert m["z_rate"] == pytest.approx(0.5 * math.log1p(ratio**2), rel=1e-9)
    # active when var(mu) / E[sigma^2] = ratio^2 is above 0.01 (0.1 sits on the line)
    if ratio != 0.1:
        assert m["z_active_dims"] == float(ratio > 0.1)
    assert m["z_collapsed"] == float(0.5 * math.log1p(ratio**2) < 0.01)


def test_draw_noise_has_the_binomial_variance_and_falls_with_draws():
    # at m / sigma = 1 every input is read right with p = Phi(1): over seeds, the
    # accuracy of R draws on n inputs has sd sqrt(p (1 - p) / (n R)) (the fit's threshold
    # error adds a second-order term)
    n, p = 1000, 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert two_level(1.0, n=n).score_draws == 40  # n R >= 40,000 by default
    assert two_level(1.0, n=5000).score_draws == 8
    for draws in (1, 16):
        accs = [two_level(1.0, n=n, seed=seed, draws=draws).probe("z", "s")["acc"]
                for seed in range(40)]
        expected = math.sqrt(p * (1 - p) / (n * draws))
        # 40 seeds: the sample sd is within [0.7, 1.3] x the true one with ~99% chance
        assert 0.7 * expected <= float(np.std(accs, ddof=1)) <= 1.3 * expected
        assert float(np.mean(accs)) == pytest.approx(p, abs=4 * expected)


def test_probes_never_score_on_their_own_training_split():
    rng = np.random.default_rng(3)
    x_fit = rng.normal(size=(200, 300))
    y_fit = rng.integers(0, 2, 200)  # labels are pure noise: memorisable, not learnable
    x_score = rng.normal(size=(200, 300))
    y_score = rng.integers(0, 2, 200)
    held_out = probe_scores(x_fit, y_fit, x_score, y_score)
    on_train = probe_scores(x_fit, y_fit, x_fit, y_fit)
    assert on_train["acc"] > 0.8  # what scoring on the training split would report
    assert held_out["acc"] < 0.65 and held_out["acc_cc"] < 0.25

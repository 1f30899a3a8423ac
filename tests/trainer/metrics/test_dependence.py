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

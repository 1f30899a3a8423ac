"""Co-information on constructions whose value is known (-ln 2, +ln 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.metrics import (
    coinformation,
)


def test_coinformation_of_a_16d_zay_holding_only_s_is_minus_ln2():
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]

    def draw(n=1500):
        y, a = rng.integers(0, 10, n), rng.integers(0, 6, n)
        s = (y % 2) ^ (a % 2)
        z = np.concatenate([(2 * s - 1)[:, None] + 0.3 * rng.normal(size=(n, 1)),
                            rng.normal(size=(n, 15))], 1) @ rotation
        return z, y, a

    # I(z;y) = 0 (s says nothing of y alone); I(z;y|a) = ln 2 (with a, s fixes y's parity)
    ci = coinformation(*draw(), *draw())
    assert ci["coinformation"] == pytest.approx(-math.log(2), abs=0.2)
    assert ci["mi_z_y"] < 0.05


def test_xor_and_redundancy_have_opposite_signs():
    rng = np.random.default_rng(0)

    def xor(n=2000):
        y, a = rng.integers(0, 2, n), rng.integers(0, 2, n)
        return ((y ^ a) + 0.1 * rng.normal(size=n))[:, None], y, a

    ci = coinformation(*xor(), *xor())
    assert ci["mi_z_y"] < 0.05
    assert ci["coinformation"] == pytest.approx(-math.log(2), abs=0.1)

    def redundant(n=2000):
        y = rng.integers(0, 2, n)
        return (y + 0.1 * rng.normal(size=n))[:, None], y, y.copy()

    assert coinformation(*redundant(), *redundant())["coinformation"] == pytest.approx(
        math.log(2), abs=0.1)

"""The ``shapes`` out-of-domain benchmark's parity-flip rate, on confusion matrices whose
answer follows from their construction (no training)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "shapes_ood.py"
K = 6  # shapes' classes


@pytest.fixture(scope="module")
def ood():
    spec = importlib.util.spec_from_file_location("shapes_ood", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _confusion(pred_of_true, n_per_class: int = 10) -> list[list[int]]:
    m = np.zeros((K, K), dtype=int)
    for t in range(K):
        for p, share in pred_of_true(t).items():
            m[t, p] += int(share * n_per_class)
    return m.tolist()


def test_a_correct_classifier_never_flips(ood):
    assert ood.parity_flip(_confusion(lambda t: {t: 1.0})) == 0.0


def test_the_colour_rule_under_a_wrong_domain_guess_always_flips(ood):
    """Reading y's parity as s - a with a guessed domain of the other parity: every
    class turns into a neighbour of the other parity (circle <-> square, ...)."""
    assert ood.parity_flip(_confusion(lambda t: {t ^ 1: 1.0})) == 1.0


def test_a_uniform_guess_flips_half(ood):
    """Six classes, three of each parity: a uniform guess has the other parity half the
    time, whatever the true class."""
    assert ood.parity_flip(_confusion(lambda t: dict.fromkeys(range(K), 1 / K), 6)) == 0.5


def test_right_parity_wrong_shape_is_not_a_flip(ood):
    """Errors within the true class's parity (circle -> triangle) are not flips. Each
    class: half right, a quarter sent two classes on (same parity), a quarter one class
    on (the other parity): the rate is that last quarter."""
    rate = ood.parity_flip(_confusion(
        lambda t: {t: 0.5, (t + 2) % K: 0.25, (t + 1) % K: 0.25}, 8))
    assert rate == pytest.approx(0.25)

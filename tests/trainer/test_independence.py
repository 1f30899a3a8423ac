from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer._independence import hsic, independence_penalty, mean_abs_correlation


def _latents(n=512, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def matched_dims_correlation(a, b):
    """What the published penalty computes: only zay[:, i] against zy[:, i]."""
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0).abs().mean()


def test_correlation_matches_numpy_over_all_pairs():
    a, b = _latents(n=200, d=3)
    expected = np.abs(np.corrcoef(a.numpy().T, b.numpy().T)[:3, 3:]).mean()
    assert float(mean_abs_correlation(a, b)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("measure", ["corr", "hsic"])
def test_near_zero_on_independent_latents(measure):
    zy, za = _latents(seed=1)
    zay = torch.randn(512, 6, generator=torch.Generator().manual_seed(2))
    assert float(independence_penalty(measure, zay, zy, za)) < 0.15


@pytest.mark.parametrize("measure", ["corr", "hsic"])
def test_high_on_a_permuted_copy(measure):
    zy, za = _latents(seed=3)
    zay = zy[:, torch.tensor([3, 0, 5, 1, 2, 4])]  # zy's dimensions, shuffled
    independent = independence_penalty(measure, torch.randn(512, 6), zy, za)
    copied = independence_penalty(measure, zay, zy, za)
    assert float(copied) > float(independent) + 0.1
    if measure == "hsic":
        assert float(hsic(zay, zy)) > 0.9


def test_matched_dimensions_miss_a_permuted_copy():
    zy, _ = _latents(seed=4)
    zay = zy[:, torch.tensor([1, 2, 3, 4, 5, 0])]
    assert float(matched_dims_correlation(zay, zy)) < 0.1  # blind
    assert float(mean_abs_correlation(zay, zy)) > 0.15  # sees it: 1/6 of pairs are |r|=1


def test_hsic_sees_nonlinear_dependence_that_correlation_misses():
    x = torch.randn(800, 1, generator=torch.Generator().manual_seed(5))
    y = x.pow(2)  # uncorrelated with x, fully dependent
    assert float(mean_abs_correlation(x, y)) < 0.1
    assert float(hsic(x, y)) > 0.3


def test_hsic_labels_detects_label_leakage():
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 4, (400,), generator=g)
    a = torch.randint(0, 3, (400,), generator=g)
    leaky = torch.nn.functional.one_hot(y, 4).float() + 0.05 * torch.randn(400, 4, generator=g)
    clean = torch.randn(400, 4, generator=g)
    kw = dict(y=y, a=a, n_classes=4, n_domains=3)
    zy, za = _latents(n=400, d=4)
    assert float(independence_penalty("hsic_labels", leaky, zy, za, **kw)) > 0.5
    assert float(independence_penalty("hsic_labels", clean, zy, za, **kw)) < 0.1


def test_penalty_is_differentiable():
    zy, za = _latents()
    zay = torch.randn(512, 6, requires_grad=True)
    for measure in ("corr", "hsic"):
        independence_penalty(measure, zay, zy, za).backward()
        assert zay.grad is not None and torch.isfinite(zay.grad).all()
        zay.grad = None

"""Known answers for the dependence measures (metric in numpy, penalty in torch).

Expected values come from the inputs' construction: a permuted or rotated copy is
fully dependent (1), independent Gaussian noise is independent (0), and a zay that
copies half of zy's 16 i.i.d. unit-variance dimensions has linear CKA
||Cov||_F^2 / sqrt(16 * 16) = 8 / 16 = 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer._independence import (
    hsic,
    independence_penalty,
    linear_cka,
    mean_abs_correlation,
)
from trainer.metrics import (
    linear_dependence,
    mean_squared_canonical_correlation,
    normalised_hsic,
    published_correlation,
)


def _gauss(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


def _rotation(d, seed):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


def test_permuted_copy_and_rotation_score_full_dependence():
    zy = _gauss(2000, 16, 0)
    permuted = zy[:, np.random.default_rng(1).permutation(16)]
    rotated = zy @ _rotation(16, 2)
    for zay in (permuted, rotated, 3.0 * rotated):
        assert linear_dependence(zy, zay) >= 0.9
        assert float(linear_cka(torch.from_numpy(zy), torch.from_numpy(zay))) >= 0.9
    assert mean_squared_canonical_correlation(zy, rotated) >= 0.9


def test_independent_noise_scores_near_zero():
    for seed in range(3):
        zy, zay = _gauss(1000, 16, 10 + seed), _gauss(1000, 16, 20 + seed)
        assert linear_dependence(zy, zay) <= 0.05
        assert abs(float(linear_cka(torch.from_numpy(zy), torch.from_numpy(zay)))) <= 0.05


def test_half_copied_lies_in_between():
    zy = _gauss(4000, 16, 3)
    zay = np.concatenate([zy[:, :8], _gauss(4000, 8, 4)], 1)
    value = linear_dependence(zy, zay)
    assert 0.4 <= value <= 0.6  # 0.5 by construction
    assert linear_dependence(zy, _gauss(4000, 16, 5)) < value < linear_dependence(zy, zy)


def test_new_measure_separates_a_copy_where_the_published_one_does_not():
    zy = _gauss(2000, 16, 6)
    copy = zy[:, np.roll(np.arange(16), 1)]  # zy, dimensions shifted by one
    noise = _gauss(2000, 16, 7)
    # published: matched dimensions of the flattened arrays; blind to the copy
    assert published_correlation(copy, zy) < 0.1 and published_correlation(noise, zy) < 0.1
    assert linear_dependence(zy, copy) > 0.9 > 0.05 > linear_dependence(zy, noise)


def test_penalty_on_independent_batches_is_a_fifth_of_a_full_copy_at_most():
    g = torch.Generator().manual_seed(8)
    for measure in ("corr", "hsic"):
        for _ in range(10):
            zy, za = torch.randn(128, 16, generator=g), torch.randn(128, 16, generator=g)
            copy = zy[:, torch.randperm(16, generator=g)]
            independent = independence_penalty(measure, torch.randn(128, 16, generator=g), zy, za)
            copied = independence_penalty(measure, copy, zy, za)
            assert float(copied) >= 0.9
            assert float(independent) <= float(copied) / 5


def test_unbiased_hsic_does_not_grow_with_the_dimension_of_independent_noise():
    zy = _gauss(1000, 16, 9)
    one = [normalised_hsic(zy, _gauss(1000, 1, 30 + s)) for s in range(4)]
    many = [normalised_hsic(zy, _gauss(1000, 16, 40 + s)) for s in range(4)]
    # both estimate 0; the plain (biased) estimator gave 0.08 vs 0.27 at batch 128
    assert abs(np.mean(one) - np.mean(many)) <= 0.01
    assert max(one + many) <= 0.02
    g = torch.Generator().manual_seed(11)
    zy_t = torch.randn(128, 16, generator=g)
    t_one = [float(hsic(torch.randn(128, 1, generator=g), zy_t)) for _ in range(20)]
    t_many = [float(hsic(torch.randn(128, 16, generator=g), zy_t)) for _ in range(20)]
    spread = np.std(t_one + t_many) / np.sqrt(20)
    assert abs(np.mean(t_one) - np.mean(t_many)) <= 4 * spread + 1e-3


def test_hsic_sees_nonlinear_dependence_that_linear_cka_misses():
    x = torch.randn(800, 1, generator=torch.Generator().manual_seed(5))
    y = x.pow(2)  # uncorrelated with x, fully dependent
    assert float(mean_abs_correlation(x, y)) < 0.1
    assert float(linear_cka(x, y)) < 0.1
    assert float(hsic(x, y)) > 0.3


def test_hsic_labels_detects_label_leakage():
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 4, (400,), generator=g)
    a = torch.randint(0, 3, (400,), generator=g)
    leaky = torch.nn.functional.one_hot(y, 4).float() + 0.05 * torch.randn(400, 4, generator=g)
    clean = torch.randn(400, 4, generator=g)
    kw = dict(y=y, a=a, n_classes=4, n_domains=3)
    zy, za = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    assert float(independence_penalty("hsic_labels", leaky, zy, za, **kw)) > 0.5
    assert float(independence_penalty("hsic_labels", clean, zy, za, **kw)) < 0.1


@pytest.mark.parametrize("measure", ["corr", "hsic"])
def test_penalty_is_differentiable_and_pushes_a_copy_apart(measure):
    g = torch.Generator().manual_seed(12)
    zy, za = torch.randn(128, 6, generator=g), torch.randn(128, 6, generator=g)
    zay = (zy + 0.1 * torch.randn(128, 6, generator=g)).requires_grad_(True)
    before = independence_penalty(measure, zay, zy, za)
    before.backward()
    assert zay.grad is not None and torch.isfinite(zay.grad).all()
    with torch.no_grad():
        after = independence_penalty(measure, zay - 0.5 * zay.grad / zay.grad.norm(), zy, za)
    assert float(after) < float(before)


def test_ragged_batch_gets_no_penalty_instead_of_an_error():
    zy, za = torch.randn(3, 4), torch.randn(3, 4)
    zay = torch.randn(3, 4, requires_grad=True)
    value = independence_penalty("corr", zay, zy, za)
    assert float(value) == 0.0
    value.backward()  # still part of the graph


@pytest.mark.parametrize("scale", [1.0, 1e-2, 1e-3, 1e-5])
def test_a_shrunken_copy_cannot_escape_the_corr_penalty(scale):
    """CKA is scale-invariant, so a copy of zy shrunk to any scale is still a full copy:
    the penalty term stays near 1 on a batch of 128, d = 16 (float32, as in training)."""
    from trainer._independence import linear_cka
    from trainer.metrics import linear_cka as linear_cka_metric

    zy = torch.randn(128, 16, generator=torch.Generator().manual_seed(0))
    assert float(linear_cka(zy * scale, zy)) > 0.99
    assert linear_cka_metric((zy * scale).numpy(), zy.numpy()) > 0.99


def test_the_penalty_pairs_are_checked():
    g = torch.Generator().manual_seed(0)
    zay, zy, za, zx = (torch.randn(16, 4, generator=g) for _ in range(4))
    with pytest.raises(ValueError, match="needs zx"):
        independence_penalty("corr", zay, zy, za, pairs="zy_za_zx")
    with pytest.raises(ValueError, match="unknown penalty pairs"):
        independence_penalty("corr", zay, zy, za, zx=zx, pairs="all")
    # zy_za ignores zx; zy_za_zx adds the zay/zx term: 1 for a copy of zay (linear CKA)
    two = independence_penalty("corr", zay, zy, za)
    assert torch.equal(independence_penalty("corr", zay, zy, za, zx=zx), two)
    three = independence_penalty("corr", zay, zy, za, zx=zay, pairs="zy_za_zx")
    assert float(three - two) == pytest.approx(1.0, abs=1e-5)

"""The torch probes reproduce the scikit-learn reference on inputs of known structure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.metrics import EvalInputs, ProbeBackend, evaluate_latents, fit_probes
from trainer.metrics import _probes as mt
from trainer.metrics._probes_torch import logistic_probes, ridge_probes

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_classes(rng, n: int, d: int, k: int, sep: float):
    """Class k shifts dimension k mod d by ``sep``: a Bayes accuracy between chance and 1."""
    y = rng.integers(0, k, 2 * n)
    x = rng.normal(size=(2 * n, d))
    x[np.arange(2 * n), y % d] += sep
    x[:, 0] *= 50.0  # unequal scales: the standardisation must match StandardScaler's
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.parametrize(("k", "d", "sep"), [(2, 3, 1.0), (6, 8, 1.5), (10, 16, 2.0),
                                             (40, 6, 2.5)])
def test_logistic_probe_matches_sklearn(k, d, sep):
    rng = np.random.default_rng(k)
    xf, yf, xs, ys = gaussian_classes(rng, 1500, d, k, sep)
    reference = mt._fit_logistic(xf, yf)
    (proba, classes), = logistic_probes([(xf, yf, xs)])
    assert list(classes) == list(reference.classes_)
    ref_proba = reference.predict_proba(xs)
    acc = (classes[proba.argmax(1)] == ys).mean()
    ref_acc = (classes[ref_proba.argmax(1)] == ys).mean()
    assert abs(acc - ref_acc) <= 0.01
    assert abs(mt.cross_entropy(proba, classes, ys)
               - mt.cross_entropy(ref_proba, classes, ys)) <= 0.01
    assert 1.0 / k + 0.05 < ref_acc < 1.0  # the problem is neither trivial nor hopeless


def test_labels_unseen_when_fitting_and_padding_across_problems():
    rng = np.random.default_rng(1)
    xf, yf, xs, ys = gaussian_classes(rng, 800, 4, 5, 1.5)
    yf = np.where(yf == 4, 3, yf) + 10  # labels 10..13 at fit; the score split has 14
    x2f, y2f, x2s, _ = gaussian_classes(rng, 300, 2, 2, 1.0)
    problems = [(xf, yf, xs), (x2f, y2f, x2s)]
    # one padded solve (what a GPU runs) against one solve per problem
    (p1, c1), (p2, c2) = logistic_probes(problems, batched=True)
    (q1, _), (q2, _) = logistic_probes(problems, batched=False)
    assert list(c1) == [10, 11, 12, 13] and list(c2) == [0, 1]
    assert p1.shape == (800, 4) and p2.shape == (300, 2)
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-9)
    assert np.abs(p1 - q1).max() < 1e-3 and np.abs(p2 - q2).max() < 1e-3
    ref = mt._fit_logistic(xf, yf).predict_proba(xs)
    assert abs(mt.cross_entropy(p1, c1, ys + 10) - mt.cross_entropy(ref, c1, ys + 10)) <= 0.01


def test_ridge_probe_is_the_numpy_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 6)) * np.array([1, 10, 0.1, 1, 1, 1])
    t = x @ np.array([1.0, 0.1, 5.0, 0.0, 0.0, 0.0]) + 0.5 * rng.normal(size=2000)
    pred, = ridge_probes([(x[:1000], t[:1000], x[1000:])], alpha=mt.RIDGE_ALPHA)
    r2 = 1 - ((t[1000:] - pred) ** 2).sum() / ((t[1000:] - t[1000:].mean()) ** 2).sum()
    reference = mt.regression_scores(x[:1000], t[:1000], x[1000:], t[1000:])["r2"]
    assert abs(r2 - reference) <= 1e-9
    # signal variance 1 + (0.1 * 10)^2 + (5 * 0.1)^2 = 2.25 against noise 0.25: R^2 ~ 0.9
    assert abs(r2 - 2.25 / 2.5) < 0.03


def synthetic_inputs(seed: int, backend: str, n: int = 600) -> EvalInputs:
    """Means of known structure under posterior noise of scale 0.5 to 1."""
    rng = np.random.default_rng(seed)

    def half():
        y, a = rng.integers(0, 10, n), rng.integers(0, 6, n)
        s = (y % 2) ^ (a % 2)
        hue = rng.normal(size=n)
        lat = {g: rng.normal(size=(n, 8)) for g in ("zy", "za", "zay", "zx")}
        lat["zy"][np.arange(n), y % 8] += 3
        lat["za"][np.arange(n), a] += 3
        lat["zay"][:, 0] += 3 * s
        lat["zx"][:, 0] += 2 * hue
        return lat, {"y": y, "a": a, "s": s, "hue": hue}

    (fl, ff), (sl, sf) = half(), half()

    def scales(latents):
        return {g: rng.uniform(0.5, 1.0, size=v.shape) for g, v in latents.items()}

    return EvalInputs(fl, ff, sl, sf, interaction_factor="s",
                      factor_groups={"y": "zy", "a": "za", "s": "zay", "hue": "zx"},
                      task={"acc_y_val": 0.9}, fit_std=scales(fl), score_std=scales(sl),
                      probes=ProbeBackend(backend))


def test_all_metrics_agree_with_the_sklearn_backend_within_001():
    batched = [synthetic_inputs(seed, "torch") for seed in (0, 1)]
    # members x groups x factors, on posterior samples and on the means
    assert fit_probes(batched) == 2 * 4 * 4 * 2
    ours = [evaluate_latents(inp) for inp in batched]
    reference = [evaluate_latents(synthetic_inputs(seed, "sklearn")) for seed in (0, 1)]
    for a, b in zip(ours, reference, strict=True):
        assert set(a) == set(b)
        worst = max(abs(a[k] - b[k]) for k in b)
        assert worst <= 0.01, max(b, key=lambda k: abs(a[k] - b[k]))
    # the known structure is found: zay's first dimension is 3 s + N(0, 1) under posterior
    # noise sigma ~ U(0.5, 1), so s is read right with chance E Phi(1.5 / sqrt(1 + sigma^2))
    # (the threshold 1.5 is optimal by symmetry); 38,400 scored draws: sd 0.002
    sigma = np.linspace(0.5, 1.0, 10_001)
    expected = float(np.mean([0.5 * (1 + math.erf(1.5 / math.sqrt(2 * (1 + v * v))))
                              for v in sigma]))
    assert ours[0]["probe_acc_zay_s"] == pytest.approx(expected, abs=0.02)
    assert ours[0]["probe_acc_zy_y"] > 0.6


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown probe backend 'jax'"):
        ProbeBackend("jax")

from __future__ import annotations

import numpy as np
import pytest

from trainer._metrics import (
    EvalInputs,
    abs_correlation_matrix,
    coinformation,
    combined_score,
    evaluate_latents,
    mean_abs_correlation,
    probe_scores,
)

N = 1500


def _factors(rng, n=N):
    y = rng.integers(0, 10, n)
    a = rng.integers(0, 6, n)
    return {"y": y, "a": a, "s": (y % 2) ^ (a % 2)}


def _copying_latents(rng, f, zay_mode="interaction"):
    """zy holds y, za holds a, zay holds s (or a given pattern), zx is noise."""
    n = len(f["y"])
    noise = lambda d: 0.3 * rng.normal(size=(n, d))  # noqa: E731
    lat = {
        "zy": np.eye(10)[f["y"]] * 3 + noise(10),
        "za": np.eye(6)[f["a"]] * 3 + noise(6),
        "zx": rng.normal(size=(n, 4)),
    }
    if zay_mode == "interaction":
        # one informative dimension; the other stays below the activity threshold
        lat["zay"] = np.stack([f["s"] * 3.0 + 0.3 * rng.normal(size=n),
                               0.05 * rng.normal(size=n)], 1)
    elif zay_mode == "zeros":
        lat["zay"] = np.zeros((n, 4))
    elif zay_mode == "permuted_zy":
        lat["zay"] = lat["zy"][:, [3, 7, 0, 9, 1, 8, 2, 6, 4, 5]]
    elif zay_mode == "noise":
        lat["zay"] = rng.normal(size=(n, 4))
    return lat


def _inputs(zay_mode="interaction", seed=0):
    rng = np.random.default_rng(seed)
    ff, sf = _factors(rng), _factors(rng)
    return EvalInputs(
        fit_latents=_copying_latents(rng, ff, zay_mode), fit_factors=ff,
        score_latents=_copying_latents(rng, sf, zay_mode), score_factors=sf,
        interaction_factor="s", task={"acc_y_val": 0.9, "acc_y_test": 0.88}, seed=seed,
    )


def test_correlation_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 3))
    b = a @ rng.normal(size=(3, 4)) + rng.normal(size=(300, 4))
    expected = np.abs(np.corrcoef(a.T, b.T)[:3, 3:])
    assert np.allclose(abs_correlation_matrix(a, b), expected)
    assert mean_abs_correlation(a, b) == pytest.approx(expected.mean())


def test_factor_copying_latents_score_at_the_top():
    m = evaluate_latents(_inputs())
    assert m["zy_y_specificity_cc"] > 0.9 and m["za_a_specificity_cc"] > 0.9
    assert m["zy_y_specificity"] > 0.8 and m["za_a_specificity"] > 0.8
    assert m["zy_zay_correlation"] < 0.05 and m["za_zay_correlation"] < 0.05
    assert m["zay_independence_score"] > 0.95
    assert m["zay_nonlinear_independence"] > 0.9
    assert m["zay_interaction_content"] > 0.95
    assert m["zay_label_leakage"] < 0.05
    assert m["zay_collapsed"] == 0.0 and m["zay_active_dims"] == 1.0
    assert m["disentanglement_score"] > 0.85
    assert m["task_accuracy"] == 0.9


def test_collapsed_zay_is_flagged_and_cannot_win():
    good = evaluate_latents(_inputs("interaction"))
    collapsed = evaluate_latents(_inputs("zeros"))
    assert collapsed["zay_collapsed"] == 1.0 and collapsed["zay_active_dims"] == 0.0
    # trivially "independent" by the method's score ...
    assert collapsed["zay_independence_score"] == pytest.approx(1.0)
    # ... but not by the combined score
    assert collapsed["disentanglement_score"] == 0.0
    assert good["disentanglement_score"] > collapsed["disentanglement_score"]


def test_noise_zay_holds_no_interaction_and_does_not_win():
    noise = evaluate_latents(_inputs("noise"))
    good = evaluate_latents(_inputs("interaction"))
    assert noise["zay_collapsed"] == 0.0
    assert noise["zay_interaction_content"] < 0.1
    assert noise["disentanglement_score"] < 0.5 * good["disentanglement_score"]


def test_permuted_copy_of_zy_inside_zay_is_caught():
    m = evaluate_latents(_inputs("permuted_zy"))
    clean = evaluate_latents(_inputs("interaction"))
    assert m["zy_zay_correlation"] > 3 * clean["zy_zay_correlation"]
    assert m["zy_zay_hsic"] > 0.8
    assert m["zay_label_leakage"] > 0.4  # y is readable from zay
    assert m["disentanglement_score"] < clean["disentanglement_score"]


def test_xor_gives_negative_coinformation_meaning_synergy():
    rng = np.random.default_rng(0)

    def draw(n=2000):
        y, a = rng.integers(0, 2, n), rng.integers(0, 2, n)
        z = ((y ^ a) + 0.1 * rng.normal(size=n))[:, None]
        return z, y, a

    ci = coinformation(*draw(), *draw())
    assert ci["mi_z_y"] < 0.05  # z alone says nothing about y
    assert ci["mi_z_y_given_a"] == pytest.approx(np.log(2), abs=0.1)  # with a: all of y
    assert ci["coinformation"] < -0.5

    def redundant(n=2000):
        y = rng.integers(0, 2, n)
        a = y.copy()
        return (y + 0.1 * rng.normal(size=n))[:, None], y, a

    assert coinformation(*redundant(), *redundant())["coinformation"] > 0.5


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


def test_evaluation_uses_separate_fit_and_score_data():
    inputs = _inputs()
    inputs.score_factors = {k: np.random.default_rng(9).permutation(v)
                            for k, v in inputs.score_factors.items()}
    m = evaluate_latents(inputs, ["specificity"])
    # shuffled score labels: a probe evaluated on held-out data cannot beat chance
    assert abs(m["zy_y_specificity_cc"]) < 0.1


def test_combined_score_zero_when_any_part_fails():
    parts = dict(zy_y_specificity_cc=0.9, za_a_specificity_cc=0.9, zay_label_leakage=0.0,
                 zay_nonlinear_independence=0.9, zay_interaction_content=0.9, zay_collapsed=0.0)
    assert combined_score(parts) == pytest.approx(0.9 * 1.0 ** 0.2, rel=0.03)
    assert combined_score(parts | {"zay_interaction_content": 0.0}) == 0.0
    assert combined_score(parts | {"zay_collapsed": 1.0}) == 0.0

"""Activity and collapse by information: known rates and flags."""

from __future__ import annotations

import numpy as np

from tests.trainer.metrics.known import (
    FACTOR_GROUPS,
    factors,
    known_inputs,
    latents,
    two_level,
)
from trainer.metrics import (
    EvalInputs,
    evaluate_latents,
)


def test_collapse_of_deterministic_latents_is_scale_free():
    for mode in ("zeros", "constant"):
        m = evaluate_latents(known_inputs(mode), ["activity"])
        assert m["zay_collapsed"] == 1.0 and m["zay_active_dims"] == 0.0
    # latents given without posterior scales are what the decoder receives: carrying s at
    # a scale of 1e-4 is carrying it
    tiny = evaluate_latents(known_inputs("tiny_s"), ["activity", "zay_interaction"])
    assert tiny["zay_collapsed"] == 0.0 and tiny["zay_interaction_content"] > 0.9


def test_means_far_below_unit_noise_are_collapsed():
    rng = np.random.default_rng(5)
    f = factors(rng, 1000)
    fit = latents(rng, f)
    score = latents(rng, f)
    fit["zay"], score["zay"] = 1e-3 * fit["zay"], 1e-3 * score["zay"]  # s at 1e-3 scale
    unit = {g: np.ones_like(v) for g, v in score.items()}
    inputs = EvalInputs(fit, f, score, {k: v.copy() for k, v in f.items()},
                        interaction_factor="s", factor_groups=FACTOR_GROUPS,
                        fit_std={g: np.ones_like(v) for g, v in fit.items()}, score_std=unit,
                        kl={"zay": 0.5 * float((score["zay"] ** 2).sum(1).mean())})
    m = evaluate_latents(inputs, ["activity", "factor_matrix", "disentanglement_score"])
    assert m["zay_kl"] < 1e-4
    assert m["zay_collapsed"] == 1.0 and m["zay_active_dims"] == 0.0
    assert m["factor_s_from_zay_means"] > 0.9  # a standardised probe on means still reads it
    assert m["factor_s_from_zay"] < 0.05
    assert m["disentanglement_score"] == 0.0
    # the other groups carry their factors at 3 / 1 = 3 posterior sd: alive
    assert m["zy_collapsed"] == 0.0 and m["zy_active_dims"] >= 10


def test_rate_survives_a_conditional_prior_that_follows_the_posterior():
    # KL to a learned prior p(zay | y, a) can be ~0 while zay carries s: the flag must
    # not read that as collapse (what the rate bound is for)
    inputs = two_level(3.0)
    inputs.kl["z"] = 0.0
    m = evaluate_latents(inputs, ["activity"])
    assert m["z_collapsed"] == 0.0 and m["z_kl"] == 0.0

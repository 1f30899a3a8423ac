"""Inputs whose metric values are known from their construction: an oracle holding
exactly its factor, copies, noise, constants, and a two-level latent whose best reading
follows from the Gaussian distribution function."""

from __future__ import annotations

import math

import numpy as np

from trainer.metrics import EvalInputs, evaluate_latents, metric_names

N = 800
FACTOR_GROUPS = {"y": "zy", "a": "za", "s": "zay", "hue_residual": "zx"}


def scores(inputs, names=None):
    """Every metric but the (slower) co-information, which has its own tests."""
    return evaluate_latents(inputs, names or [n for n in metric_names() if n != "coinformation"])


def factors(rng, n=N):
    y = rng.integers(0, 10, n)
    a = rng.integers(0, 6, n)
    return {"y": y, "a": a, "s": (y % 2) ^ (a % 2),
            "hue_residual": rng.normal(0.0, 0.05, n).astype(np.float32)}


def latents(rng, f, zay_mode="interaction"):
    """zy holds y, za holds a, zay holds s (or a given pattern), zx holds the residual."""
    n = len(f["y"])
    noise = lambda d: 0.3 * rng.normal(size=(n, d))  # noqa: E731
    lat = {
        "zy": np.eye(10)[f["y"]] * 3 + noise(10),
        "za": np.eye(6)[f["a"]] * 3 + noise(6),
        "zx": np.concatenate([f["hue_residual"][:, None] / 0.05 + 0.1 * rng.normal(size=(n, 1)),
                              rng.normal(size=(n, 3))], 1),
    }
    s_dim = f["s"] * 3.0 + 0.3 * rng.normal(size=n)
    if zay_mode == "interaction":
        # one informative dimension; the other nearly constant
        lat["zay"] = np.stack([s_dim, 0.05 * rng.normal(size=n)], 1)
    elif zay_mode == "s_plus_y":
        lat["zay"] = np.concatenate([s_dim[:, None], lat["zy"]], 1)
    elif zay_mode == "y_only":
        lat["zay"] = lat["zy"].copy()
    elif zay_mode == "zeros":
        lat["zay"] = np.zeros((n, 4))
    elif zay_mode == "constant":
        lat["zay"] = np.full((n, 4), 3.7)
    elif zay_mode == "tiny_s":  # carries s at a scale of 1e-4: active, whatever its size
        lat["zay"] = 1e-4 * np.stack([s_dim, rng.normal(size=n)], 1) + 0.2
    elif zay_mode == "permuted_zy":
        lat["zay"] = lat["zy"][:, [3, 7, 0, 9, 1, 8, 2, 6, 4, 5]]
    elif zay_mode == "noise":
        lat["zay"] = rng.normal(size=(n, 4))
    return lat


def known_inputs(zay_mode="interaction", seed=0, factor_groups=None, kl=None):
    rng = np.random.default_rng(seed)
    ff, sf = factors(rng), factors(rng)
    return EvalInputs(
        fit_latents=latents(rng, ff, zay_mode), fit_factors=ff,
        score_latents=latents(rng, sf, zay_mode), score_factors=sf,
        interaction_factor="s",
        factor_groups=FACTOR_GROUPS if factor_groups is None else factor_groups,
        task={"acc_y_val": 0.9, "acc_y_test": 0.88}, seed=seed, kl=kl or {},
    )


def two_level(ratio, n=4000, sigma=1.0, seed=0, draws=None):
    """z = m (2s - 1) + sigma eps, s balanced exactly (chance 0.5), m = ratio * sigma."""
    s = np.arange(n) % 2
    mu = {"z": (ratio * sigma * (2 * s - 1.0))[:, None]}
    std = {"z": np.full((n, 1), sigma)}
    return EvalInputs(mu, {"s": s}, {"z": mu["z"].copy()}, {"s": s.copy()},
                      factor_groups={"s": "z"}, fit_std=std, score_std=dict(std),
                      seed=seed, draws=draws)


def bayes_cc(ratio):
    """Best chance-corrected accuracy of s from z = m (2s - 1) + sigma eps: 2 Phi(m/sigma) - 1."""
    return math.erf(ratio / math.sqrt(2))

"""Dependence between latent groups, measured on what the decoder receives.

Every measure here reads posterior samples z = mu + sigma * eps
(``EvalInputs.received``: the score split, every scored draw, each group's draws its own,
as the factorised posterior draws them), so a copy of zy that zay's means carry far below
zay's posterior noise reads as independent: the decoder cannot use it. The same measures
on the encoder means stay as ``*_means`` diagnostics (a gap between the two is a copy
drowned in noise). Latents without posterior scales are deterministic: samples and means
are then one thing.

``zy_zay_correlation``, ``za_zay_correlation`` are **debiased linear CKA** (Kornblith et
al., "Similarity of Neural Network Representations Revisited", ICML 2019), with HSIC
replaced by the unbiased estimator of Song et al. ("Feature Selection via Dependence
Maximization", JMLR 2012) as in Nguyen, Raghu & Kornblith ("Do Wide and Deep Networks
Learn the Same Things?", ICLR 2021). It is invariant to permutations, rotations and
isotropic scaling of a group's dimensions, so a permuted or rotated copy scores 1; its
expectation is about 0 for independent groups at any sample size (the plain estimator
is biased upwards by about d/n); it needs no matrix inverse. Its known blind spot: CKA
weighs directions by their variance, so a copy of zy hidden in a low-variance direction
of an otherwise noisy zay scores low. The factor x group matrix standardises features
before probing and so catches such a copy; the mean squared canonical correlation
(``*_cca``, invariant to any invertible linear map) is reported as a diagnostic too.
The RBF HSIC terms run through the penalty's own torch functions in float64.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.metrics._inputs import EvalInputs
from trainer.metrics._registry import register_metric

#: samples for the RBF HSIC metric: at 1,000 its sd over subsamples is 0.0008 on independent
#: groups and 0.004 on weakly dependent ones (0.0001 and 0.0015 at 2,000), far below the
#: seed-to-seed spread of the scores (about 0.08), for a quarter of the Gram arithmetic
HSIC_MAX_SAMPLES = 1000


def abs_correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson r| of every column of ``a`` with every column of ``b``; constant columns give 0."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na = np.linalg.norm(a, axis=0)
    nb = np.linalg.norm(b, axis=0)
    denom = np.outer(na, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 1e-12, (a.T @ b) / np.where(denom > 1e-12, denom, 1.0), 0.0)
    return np.abs(r)


def mean_abs_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |Pearson r| over all dimension pairs (dilutes a full copy by about 1/d)."""
    return float(abs_correlation_matrix(a, b).mean())


def published_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """|Pearson r| of the flattened arrays: the published score, matched dimensions only.

    Flattening pairs ``a[n, i]`` with ``b[n, i]``, so only matched dimensions are
    compared (the first ``min(da, db)`` of each): a permuted copy scores about 0.
    """
    k = min(a.shape[1], b.shape[1])
    fa, fb = a[:, :k].ravel(), b[:, :k].ravel()
    fa, fb = fa - fa.mean(), fb - fb.mean()
    denom = float(np.linalg.norm(fa) * np.linalg.norm(fb))
    return abs(float(fa @ fb) / denom) if denom > 1e-12 else 0.0


def _cka_from_hsic(hab: float, haa: float, hbb: float) -> float:
    if haa <= 1e-12 or hbb <= 1e-12:  # a constant group holds nothing: no dependence
        return 0.0
    return hab / math.sqrt(haa * hbb)


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Debiased linear CKA of two groups (raw: about 0 +- noise when independent, 1 for a
    copy), at any scale of either group: the penalty's own function
    (``trainer._independence.linear_cka``) in float64, so metric and penalty are one
    estimator."""
    import torch

    from trainer._independence import linear_cka as torch_linear_cka

    with torch.no_grad():
        return float(torch_linear_cka(*(torch.as_tensor(np.asarray(x, dtype=np.float64))
                                        for x in (a, b))))


def linear_dependence(a: np.ndarray, b: np.ndarray) -> float:
    """Debiased linear CKA clipped to [0, 1]: the per-pair dependence of the scores."""
    return float(np.clip(linear_cka(a, b), 0.0, 1.0))


def mean_squared_canonical_correlation(
    a: np.ndarray, b: np.ndarray, ridge: float = 1e-3
) -> float:
    """Mean of the squared canonical correlations (regularised), over min(da, db) pairs.

    Invariant to any invertible linear map of either group. ``ridge`` (relative to each
    group's mean variance) keeps near-constant directions from producing spurious 1s.
    A diagnostic: biased upwards by about d/n on independent groups.
    """
    a = a - a.mean(0)
    b = b - b.mean(0)
    n = a.shape[0]
    caa, cbb, cab = a.T @ a / n, b.T @ b / n, a.T @ b / n
    if np.trace(caa) <= 1e-12 or np.trace(cbb) <= 1e-12:
        return 0.0

    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        c = c + ridge * np.trace(c) / len(c) * np.eye(len(c))
        w, v = np.linalg.eigh(c)
        return (v / np.sqrt(w)) @ v.T

    rho = np.linalg.svd(inv_sqrt(caa) @ cab @ inv_sqrt(cbb), compute_uv=False)
    return float(np.mean(np.clip(rho[: min(a.shape[1], b.shape[1])], 0.0, 1.0) ** 2))


def normalised_hsic_against(common: np.ndarray, others: list[np.ndarray]) -> list[float]:
    """``normalised_hsic(other, common)`` for each of ``others``, sharing ``common``'s
    Gram matrix and self-HSIC.

    The penalty's torch functions (``trainer._independence``) in float64: RBF kernels
    with median-heuristic bandwidths, the unbiased estimator on zero-diagonal Grams.
    """
    import torch

    from trainer._independence import rbf_gram, unbiased_hsic_hollow

    def hollow_gram(x: np.ndarray) -> torch.Tensor:
        if len(x) < 4:
            raise ValueError(f"unbiased HSIC needs at least 4 samples (got {len(x)})")
        k = rbf_gram(torch.as_tensor(np.asarray(x, dtype=np.float64)))
        return k.fill_diagonal_(0.0)

    with torch.no_grad():
        kc = hollow_gram(common)
        hcc = float(unbiased_hsic_hollow(kc, kc))
        out = []
        for x in others:
            ko = hollow_gram(x)
            value = _cka_from_hsic(float(unbiased_hsic_hollow(ko, kc)),
                                   float(unbiased_hsic_hollow(ko, ko)), hcc)
            out.append(float(np.clip(value, 0.0, 1.0)))
    return out


def normalised_hsic(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised unbiased RBF HSIC (debiased RBF CKA), clipped to [0, 1].

    Median-heuristic bandwidths. The unbiased estimator's expectation is 0 for
    independent groups whatever their dimension (the biased one grows with it).
    """
    return normalised_hsic_against(b, [a])[0]


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k]) if n > k else np.arange(n)


#: where the dependence metrics read: posterior samples (no suffix), encoder means
#: (``_means``)
SOURCES = (("", "samples"), ("_means", "means"))


def _score_draws(inputs: EvalInputs, on: str) -> list[dict[str, np.ndarray]]:
    """The score split's latents draw by draw: each scored posterior draw of every input
    (``samples``; one draw per input in each, as the decoder receives one), or the encoder
    means once. The estimators need independent rows: the stacked draws of one input
    are not (debiased CKA on them reads independent groups as dependent, more so the
    more zay transmits), so each draw is measured alone and the values averaged."""
    if on == "means":
        return [inputs.score_latents]
    n = len(next(iter(inputs.score_latents.values())))
    stacked = {g: inputs.received(g, "score") for g in inputs.groups}
    return [{g: z[k * n:(k + 1) * n] for g, z in stacked.items()}
            for k in range(inputs.score_draws)]


def _linear(z: dict[str, np.ndarray], tail: str) -> dict[str, float]:
    """The linear measures of one draw (or of the means); the scores are formed from
    their averages over draws (``_with_scores``)."""
    # raw CKA (about 0 +- noise when independent): clipped once, after the average
    out = {f"za_zy_correlation{tail}": linear_cka(z["za"], z["zy"])}
    if "zay" not in z:
        return out
    for other in ("zy", "za"):
        a, b = z[other], z["zay"]
        out[f"{other}_zay_correlation{tail}"] = linear_cka(a, b)
        out[f"{other}_zay_correlation_published{tail}"] = published_correlation(b, a)
        out[f"{other}_zay_correlation_allpairs{tail}"] = mean_abs_correlation(a, b)
        out[f"{other}_zay_cca{tail}"] = mean_squared_canonical_correlation(a, b)
    return out


def _with_scores(out: dict[str, float], tail: str) -> dict[str, float]:
    """CKA clipped to [0, 1] (``linear_dependence``) and the independence scores."""
    for pair in ("za_zy", "zy_zay", "za_zay"):
        key = f"{pair}_correlation{tail}"
        if key in out:
            out[key] = float(np.clip(out[key], 0.0, 1.0))
    if f"zy_zay_correlation{tail}" in out:
        for variant in ("", "_published", "_allpairs"):
            out[f"zay_independence_score{variant}{tail}"] = 1.0 - (
                out[f"zy_zay_correlation{variant}{tail}"]
                + out[f"za_zay_correlation{variant}{tail}"]) / 2.0
    return out


def _mean_over(draws: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}


@register_metric("correlation")
def correlation(inputs: EvalInputs) -> dict[str, float]:
    """Linear dependence of zay on zy and za: debiased linear CKA, plus published variants,
    on posterior samples and (``*_means``) on the means."""
    out: dict[str, float] = {}
    for tail, on in SOURCES:
        out.update(_with_scores(_mean_over([_linear(z, tail)
                                            for z in _score_draws(inputs, on)]), tail))
    return out


@register_metric("nonlinear_dependence")
def nonlinear_dependence(inputs: EvalInputs) -> dict[str, float]:
    """Normalised unbiased RBF HSIC of zay with zy and za, on at most ``HSIC_MAX_SAMPLES``
    inputs (one posterior draw each: the first scored draw), and on their means."""
    if "zay" not in inputs.score_latents:
        return {}
    n = len(inputs.score_latents["zay"])
    keep = _subsample(n, HSIC_MAX_SAMPLES, inputs.seed)  # rows of the first draw
    out: dict[str, float] = {}
    for tail, on in SOURCES:
        z = _score_draws(inputs, on)[0]  # one draw: its Gram matrices cost n^2 each
        zy_h, za_h = normalised_hsic_against(z["zay"][keep], [z["zy"][keep], z["za"][keep]])
        out |= {f"zy_zay_hsic{tail}": zy_h, f"za_zay_hsic{tail}": za_h,
                f"zay_nonlinear_independence{tail}": 1.0 - (zy_h + za_h) / 2.0}
    return out


def correlation_matrices(latents: dict[str, np.ndarray]) -> dict[str, object]:
    """Group-level dependence (debiased linear CKA) and the per-dimension |r| matrix.

    The diagonal of the group matrix is 1 (a group against itself).
    """
    groups = list(latents)
    group_matrix = np.zeros((len(groups), len(groups)))
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            group_matrix[i, j] = 1.0 if i == j else linear_dependence(latents[gi], latents[gj])
    stacked = np.concatenate([latents[g] for g in groups], 1)
    labels = [f"{g}[{k}]" for g in groups for k in range(latents[g].shape[1])]
    return {
        "groups": groups,
        "group_matrix": group_matrix.round(6).tolist(),
        "dim_labels": labels,
        "dim_matrix": abs_correlation_matrix(stacked, stacked).round(4).tolist(),
    }

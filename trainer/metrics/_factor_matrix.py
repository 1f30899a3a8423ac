"""Ground truth: the factor x group matrix, exclusivity and group-level DCI.

``factor_<f>_from_<g>`` is how well factor f is read from group g alone (chance-corrected
probe accuracy for discrete factors, R^2 of a ridge probe for continuous ones, both
clipped to [0, 1]), on posterior samples; ``exclusivity_<f>`` is how much better f is
read from its own group than from the best other group; their mean is the
``disentanglement_score``. Group-level DCI (Eastwood & Williams, ICLR 2018) is reported
beside it. The same names with ``_means`` appended read the encoder means.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.metrics._inputs import EvalInputs
from trainer.metrics._registry import register_metric


def exclusivity_scores(
    matrix: np.ndarray, factors: list[str], groups: list[str], factor_groups: dict[str, str]
) -> dict[str, float]:
    """Per factor: max(0, M[f, own(f)] - max over other groups of M[f, g])."""
    out = {}
    for i, f in enumerate(factors):
        own = groups.index(factor_groups[f])
        others = [matrix[i, j] for j in range(len(groups)) if j != own]
        out[f] = max(0.0, float(matrix[i, own]) - (max(others) if others else 0.0))
    return out


def _entropy_base(p: np.ndarray, n: int) -> float:
    """Entropy of ``p`` (sums to 1) with logarithm base ``n``; 0 when n < 2."""
    if n < 2:
        return 0.0
    q = p[p > 0]
    return float(-(q * np.log(q)).sum() / math.log(n))


def group_dci(
    matrix: np.ndarray, factors: list[str], groups: list[str], factor_groups: dict[str, str]
) -> dict[str, float]:
    """DCI (Eastwood & Williams, ICLR 2018) at the level of latent groups.

    Importance R[f, g] = the factor matrix (how well f is read from group g alone).
    Disentanglement: per group g, 1 - H_F(R[:, g] / sum), base = number of factors,
    weighted by the group's share of total importance. Completeness: per factor f,
    1 - H_G(R[f, :] / sum), base = number of groups, averaged. Informativeness: the mean
    of M[f, own(f)]. Groups or factors with zero importance contribute 0.
    """
    n_f, n_g = matrix.shape
    total = float(matrix.sum())
    d_parts, weights = [], []
    for j in range(n_g):
        col = matrix[:, j]
        s = float(col.sum())
        weights.append(s)
        d_parts.append(1.0 - _entropy_base(col / s, n_f) if s > 0 else 0.0)
    disentanglement = float(np.dot(d_parts, weights) / total) if total > 0 else 0.0
    c_parts = []
    for i in range(n_f):
        row = matrix[i]
        s = float(row.sum())
        c_parts.append(1.0 - _entropy_base(row / s, n_g) if s > 0 else 0.0)
    informativeness = float(np.mean(
        [matrix[i, groups.index(factor_groups[f])] for i, f in enumerate(factors)]))
    return {"dci_disentanglement": disentanglement,
            "dci_completeness": float(np.mean(c_parts)),
            "dci_informativeness": informativeness}


def _matrix_scores(inputs: EvalInputs, fg: dict[str, str], on: str) -> dict[str, float]:
    factors, groups = list(fg), inputs.groups
    matrix = np.array([[inputs.probe(g, f, on)["readout"] for g in groups] for f in factors])
    out = {f"factor_{f}_from_{g}": float(matrix[i, j])
           for i, f in enumerate(factors) for j, g in enumerate(groups)}
    excl = exclusivity_scores(matrix, factors, groups, fg)
    out.update({f"exclusivity_{f}": v for f, v in excl.items()})
    out["factor_exclusivity"] = float(np.mean(list(excl.values())))
    out.update(group_dci(matrix, factors, groups, fg))
    return out


@register_metric("factor_matrix")
def factor_matrix(inputs: EvalInputs) -> dict[str, float]:
    """The factor x group matrix, per-factor exclusivity and group-level DCI.

    Read from posterior samples; the same names with ``_means`` appended read the encoder
    means (a diagnostic: what the ruler said before it measured what the decoder
    receives). Only where the data set names its factors' groups (``factor_groups``).
    """
    fg = {f: g for f, g in inputs.factor_groups.items()
          if g in inputs.score_latents and f in inputs.score_factors}
    if not fg:
        return {}
    out = _matrix_scores(inputs, fg, "samples")
    if inputs.stochastic:
        out.update({f"{k}_means": v for k, v in _matrix_scores(inputs, fg, "means").items()})
    return out

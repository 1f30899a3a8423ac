"""Dependence measures between latent groups, in torch so the penalty can backpropagate.

All take ``(n, d)`` batches. Correlation is taken over *all* dimension pairs: a measure
on matched dimensions only (zay[:, i] vs zy[:, i]) scores a permuted copy as independent.
HSIC uses an RBF kernel with the median heuristic, so it also sees non-linear dependence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every column of ``a`` with every column of ``b``: ``(da, db)``.

    A constant column has no defined correlation and contributes 0.
    """
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a_norm = a.norm(dim=0, keepdim=True)
    b_norm = b.norm(dim=0, keepdim=True)
    cov = a.T @ b
    return cov / (a_norm.T * b_norm).clamp_min(_EPS)


def mean_abs_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean |Pearson r| over all dimension pairs of ``a`` and ``b``."""
    return cross_correlation(a, b).abs().mean()


def _rbf_gram(x: torch.Tensor) -> torch.Tensor:
    sq = torch.cdist(x, x).pow(2)
    n = x.shape[0]
    off_diag = sq[~torch.eye(n, dtype=torch.bool, device=x.device)]
    # Median heuristic; detached so the bandwidth is not itself optimised away.
    bandwidth = off_diag.detach().median().clamp_min(_EPS) if n > 1 else sq.new_tensor(1.0)
    return torch.exp(-sq / bandwidth)


def _centre(k: torch.Tensor) -> torch.Tensor:
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def hsic(a: torch.Tensor, b: torch.Tensor, *, kernel_b: str = "rbf") -> torch.Tensor:
    """Normalised HSIC (kernel CKA) in [0, 1]: 0 for independent, 1 for a bijective copy.

    ``kernel_b="linear"`` uses a linear kernel on ``b``, which is the right kernel for
    one-hot labels.
    """
    ka = _centre(_rbf_gram(a))
    kb = _centre(_rbf_gram(b) if kernel_b == "rbf" else b @ b.T)
    cross = (ka * kb).sum()
    return cross / ((ka * ka).sum().sqrt() * (kb * kb).sum().sqrt()).clamp_min(_EPS)


def independence_penalty(
    measure: str,
    zay: torch.Tensor,
    zy: torch.Tensor,
    za: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    a: torch.Tensor | None = None,
    n_classes: int = 0,
    n_domains: int = 0,
) -> torch.Tensor:
    """The stage-2 penalty: dependence of zay on zy plus dependence of zay on za.

    ``hsic_labels`` measures zay against one-hot y and one-hot a instead of the latents.
    """
    if measure == "corr":
        return mean_abs_correlation(zay, zy) + mean_abs_correlation(zay, za)
    if measure == "hsic":
        return hsic(zay, zy) + hsic(zay, za)
    if measure == "hsic_labels":
        if y is None or a is None:
            raise ValueError("hsic_labels needs the batch labels y and a")
        y1 = F.one_hot(y, n_classes).to(zay.dtype)
        a1 = F.one_hot(a, n_domains).to(zay.dtype)
        return hsic(zay, y1, kernel_b="linear") + hsic(zay, a1, kernel_b="linear")
    raise ValueError(f"unknown penalty measure {measure!r}")

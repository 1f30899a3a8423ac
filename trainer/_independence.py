"""Dependence measures between latent groups, in torch so the penalty can backpropagate.

All take ``(n, d)`` batches (n >= 4). Both measures are normalised *unbiased* HSIC
(Song et al., "Feature Selection via Dependence Maximization", JMLR 2012), i.e.
debiased CKA (Kornblith et al., ICML 2019; Nguyen, Raghu & Kornblith, ICLR 2021):

- ``linear_cka``: linear kernels, computed from features in O(n d^2). Invariant to
  permutations, rotations and isotropic scaling of either group, so a permuted or
  rotated copy of zy in zay scores 1 (a measure on matched dimensions zay[:, i] vs
  zy[:, i] scores it 0; a mean of |r| over all pairs dilutes it to about 1/d). Its
  expectation is about 0 for independent groups at any batch size, with no matrix
  inverse, so it is stable on a batch. The ``corr`` penalty.
- ``hsic``: RBF kernels with median-heuristic bandwidths (detached), which also sees
  non-linear dependence. The unbiased estimator does not grow with the dimension of an
  independent zay, unlike the plain (biased) one. The ``hsic`` penalty.

Penalties clamp each term at 0: below 0 is estimation noise around independence, and a
negative penalty would reward it.
"""

from __future__ import annotations

import functools

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
    """Mean |Pearson r| over all dimension pairs of ``a`` and ``b`` (dilutes a copy by ~1/d)."""
    return cross_correlation(a, b).abs().mean()


def unbiased_hsic_linear(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC with linear kernels from features (no n x n matrix).

    With K = x x^T, L = y y^T and zeroed diagonals:
    ``[tr(KL) + 1'K1 1'L1 / ((n-1)(n-2)) - 2/(n-2) 1'KL1] / (n(n-3))``.
    """
    n = x.shape[0]
    x = x - x.mean(0, keepdim=True)  # shift-invariant estimator; centring helps rounding
    y = y - y.mean(0, keepdim=True)
    kd, ld = (x * x).sum(1), (y * y).sum(1)
    trace = (x.T @ y).pow(2).sum() - (kd * ld).sum()
    sx, sy = x.sum(0), y.sum(0)
    k1, l1 = x @ sx - kd, y @ sy - ld
    sum_k, sum_l = sx @ sx - kd.sum(), sy @ sy - ld.sum()
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)) / (
        n * (n - 3)
    )


def unbiased_hsic_gram(k: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of two ``(n, n)`` Gram matrices in O(n^2)."""
    off = ~torch.eye(k.shape[0], dtype=torch.bool, device=k.device)
    return unbiased_hsic_hollow(k * off, ll * off)


def unbiased_hsic_hollow(k: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
    """``unbiased_hsic_gram`` of Gram matrices whose diagonals are already zero."""
    n = k.shape[0]
    return ((k * ll).sum() + k.sum() * ll.sum() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (k.sum(0) @ ll.sum(1))) / (n * (n - 3))


def _normalise(hab: torch.Tensor, haa: torch.Tensor, hbb: torch.Tensor) -> torch.Tensor:
    # A constant group (self-HSIC ~ 0) holds nothing: no dependence.
    return hab / (haa.clamp_min(_EPS) * hbb.clamp_min(_EPS)).sqrt()


def _check_batch(a: torch.Tensor) -> None:
    if a.shape[0] < 4:
        raise ValueError(f"unbiased HSIC needs a batch of at least 4 samples (got {a.shape[0]})")


def unit_scale(x: torch.Tensor) -> torch.Tensor:
    """Centre ``x`` and divide it by its root-mean-square row norm (a constant stays 0).

    CKA is invariant to this, but its floor against division by zero is absolute: without
    it, a group shrunk to a small scale (per-dimension std below ~5e-3 at d = 16) would
    fall under the floor and escape the penalty.
    """
    x = x - x.mean(0, keepdim=True)
    return x / x.pow(2).sum(1).mean().sqrt().clamp_min(torch.finfo(x.dtype).tiny)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Debiased linear CKA (raw: about 0 +- noise when independent, 1 for a linear copy);
    the same at any scale of either group."""
    _check_batch(a)
    a, b = unit_scale(a), unit_scale(b)
    return _normalise(unbiased_hsic_linear(a, b), unbiased_hsic_linear(a, a),
                      unbiased_hsic_linear(b, b))


@functools.lru_cache(maxsize=4)
def _upper_triangle(n: int, device: torch.device) -> torch.Tensor:
    """Flat indices of an ``(n, n)`` matrix's entries above the diagonal."""
    rows, cols = torch.triu_indices(n, n, 1, device=device)
    return rows * n + cols


def median_off_diagonal(sq: torch.Tensor) -> torch.Tensor:
    """The median of a *symmetric* ``(n, n)`` matrix's off-diagonal entries, as numpy's
    (the mean of the two middle values).

    Each value stands twice off the diagonal, so the median of the n(n-1)/2 entries
    above it is the same number, found in half the time.
    """
    upper = sq.detach().reshape(-1).index_select(0, _upper_triangle(sq.shape[0], sq.device))
    lo = upper.median()  # the lower middle value
    if upper.numel() % 2:
        return lo
    # the upper middle: lo itself when it is repeated past the middle, else the next value
    repeated = (upper <= lo).sum() >= upper.numel() // 2 + 1
    hi = torch.where(repeated, lo,
                     torch.where(upper > lo, upper, upper.new_tensor(float("inf"))).min())
    return (lo + hi) / 2


def rbf_gram(x: torch.Tensor) -> torch.Tensor:
    """exp(-|xi - xj|^2 / median off-diagonal squared distance)."""
    sq = torch.cdist(x, x).pow(2)
    sq = (sq + sq.T) / 2  # exactly symmetric (cdist's rounding need not be)
    # Median heuristic; detached so the bandwidth is not itself optimised away.
    bandwidth = (median_off_diagonal(sq).clamp_min(_EPS) if x.shape[0] > 1
                 else sq.new_tensor(1.0))
    return torch.exp(-sq / bandwidth)


def hsic(a: torch.Tensor, b: torch.Tensor, *, kernel_b: str = "rbf") -> torch.Tensor:
    """Normalised unbiased HSIC (debiased kernel CKA): about 0 when independent, 1 for a copy.

    RBF kernel on ``a``; on ``b`` RBF or, with ``kernel_b="linear"``, linear (the right
    kernel for one-hot labels). Not clamped: noise can make it slightly negative.
    """
    _check_batch(a)
    ka = rbf_gram(a)
    kb = rbf_gram(b) if kernel_b == "rbf" else b @ b.T
    return _normalise(unbiased_hsic_gram(ka, kb), unbiased_hsic_gram(ka, ka),
                      unbiased_hsic_gram(kb, kb))


def independence_penalty(
    measure: str,
    zay: torch.Tensor,
    zy: torch.Tensor,
    za: torch.Tensor,
    *,
    zx: torch.Tensor | None = None,
    pairs: str = "zy_za",
    y: torch.Tensor | None = None,
    a: torch.Tensor | None = None,
    n_classes: int = 0,
    n_domains: int = 0,
) -> torch.Tensor:
    """The stage-2 penalty: dependence of zay on zy plus dependence of zay on za
    (``pairs="zy_za"``), plus dependence of zay on zx with ``pairs="zy_za_zx"``.

    ``corr``: debiased linear CKA; ``hsic``: normalised unbiased RBF HSIC;
    ``hsic_labels``: HSIC of zay against one-hot y and one-hot a instead of the latents
    (zx has no label: its pair is RBF HSIC of zay against zx, as ``hsic`` measures it).
    Each term is clamped at 0. A batch of fewer than 4 samples (a ragged last batch)
    cannot estimate unbiased HSIC and gets no penalty.
    """
    if pairs not in ("zy_za", "zy_za_zx"):
        raise ValueError(f"unknown penalty pairs {pairs!r}")
    if pairs == "zy_za_zx" and zx is None:
        raise ValueError("penalty pairs zy_za_zx needs zx")
    if measure not in ("corr", "hsic", "hsic_labels"):
        raise ValueError(f"unknown penalty measure {measure!r}")
    if zay.shape[0] < 4:
        return zay.new_zeros(()) + 0.0 * zay.sum()
    if measure == "corr":
        value = linear_cka(zay, zy).clamp_min(0) + linear_cka(zay, za).clamp_min(0)
    elif measure == "hsic":
        value = hsic(zay, zy).clamp_min(0) + hsic(zay, za).clamp_min(0)
    else:
        if y is None or a is None:
            raise ValueError("hsic_labels needs the batch labels y and a")
        y1 = F.one_hot(y, n_classes).to(zay.dtype)
        a1 = F.one_hot(a, n_domains).to(zay.dtype)
        value = (hsic(zay, y1, kernel_b="linear").clamp_min(0)
                 + hsic(zay, a1, kernel_b="linear").clamp_min(0))
    if pairs == "zy_za_zx":
        assert zx is not None
        pair = linear_cka(zay, zx) if measure == "corr" else hsic(zay, zx)
        value = value + pair.clamp_min(0)
    return value

"""Activity and collapse, judged by information: what a group transmits, not how far its
means spread.

``information_rate`` bounds I(x; z) per dimension; a dimension is active when its signal
stands above its posterior noise (``ACTIVE_SNR``, Burda et al.'s active units); a group
transmitting less than ``COLLAPSE_RATE_PER_DIM`` nats per dimension is collapsed,
whatever its means do. The torch form serves the per-epoch proxies too, so the final
flag and the proxy are one estimator.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.metrics._inputs import EvalInputs
from trainer.metrics._registry import register_metric

#: a dimension is active when the variance of its encoder mean over the data exceeds this
#: fraction of its mean posterior variance (Burda et al.'s active units, 2016, threshold
#: 0.01 on Cov_x(E[z|x]) against a unit prior, measured against the posterior noise)
ACTIVE_SNR = 0.01
#: latents without posterior scales (deterministic): a dimension is active when its value
#: varies over the data by more than this fraction of its mean square (scale-free)
ACTIVE_RELATIVE_VARIANCE = 1e-8

#: a group transmitting less than this many nats per dimension (``information_rate``) is
#: collapsed, whatever its means do
COLLAPSE_RATE_PER_DIM = 0.01


def information_rate_torch(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per dimension, an upper bound (nats) on what z = mu(x) + sigma(x) eps tells of x.

    I(x; z_j) = h(z_j) - h(z_j | x) <= 1/2 log(2 pi e Var z_j) - E_x[1/2 log(2 pi e sigma_j^2)]
    (a Gaussian has the largest entropy for its variance), and Var z_j = Var mu_j +
    E sigma_j^2: so 1/2 [log(Var mu_j + E sigma_j^2) - E log sigma_j^2]. Equal to the
    Gaussian channel's 1/2 log(1 + SNR) when sigma does not depend on x. Summed over a
    group's dimensions it bounds I(x; z) (the noise is independent across dimensions).
    Unlike KL(q(z|x) || p(z|y, a)), it does not fall to 0 when a learned conditional
    prior follows the posterior: a zay that carries s through its prior keeps its rate.
    Computed in float64.
    """
    mu, var2 = mu.double(), (std.double() ** 2).clamp_min(torch.finfo(torch.float64).tiny)
    rate = 0.5 * ((mu.var(0, unbiased=False) + var2.mean(0)).log() - var2.log().mean(0))
    return rate.clamp_min(0.0)


def posterior_snr(mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per dimension: variance of the encoder mean over the data / mean posterior variance."""
    noise = (np.asarray(std, np.float64) ** 2).mean(0)
    return np.asarray(mu, np.float64).var(0) / np.maximum(noise, np.finfo(np.float64).tiny)


def information_rate(mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``information_rate_torch`` on numpy arrays (per dimension, nats)."""
    return information_rate_torch(torch.as_tensor(np.asarray(mu, np.float64)),
                                  torch.as_tensor(np.asarray(std, np.float64))).numpy()


def active_dims(latent: np.ndarray, std: np.ndarray | None = None) -> int:
    """Dimensions whose signal stands above their posterior noise.

    With posterior scales: ``var(mu) > ACTIVE_SNR * mean(sigma^2)``. Without (a
    deterministic latent): ``var > ACTIVE_RELATIVE_VARIANCE * mean(z^2)``, unit-free, so
    a constant or all-zero dimension is inactive at any scale.
    """
    if std is not None:
        return int((posterior_snr(latent, std) > ACTIVE_SNR).sum())
    var = np.asarray(latent, np.float64).var(0)
    scale = (latent * latent).mean(0)
    return int(((var > ACTIVE_RELATIVE_VARIANCE * scale) & (var > 0)).sum())


def is_collapsed(n_active: int, rate: float | None, dim: int) -> bool:
    """Collapsed: transmits less than ``COLLAPSE_RATE_PER_DIM`` nats per dimension.

    ``rate`` is the group's ``information_rate`` (None for a deterministic latent, which
    is collapsed only when no dimension varies).
    """
    if rate is None:
        return n_active == 0
    return rate < COLLAPSE_RATE_PER_DIM * dim


@register_metric("activity")
def activity(inputs: EvalInputs) -> dict[str, float]:
    """Per group: active dimensions, information rate, KL to its prior, collapse (score split).

    ``<g>_rate`` (nats) bounds what the group transmits about the input
    (``information_rate``); ``<g>_kl`` is the mean KL of its posterior to its prior (what
    the loss pays, which a learned conditional prior can drive to 0 while the group still
    carries its factor). A group is collapsed when its rate is below
    ``COLLAPSE_RATE_PER_DIM`` nats per dimension, whatever its means do.
    """
    out: dict[str, float] = {}
    for g, mu in inputs.score_latents.items():
        std = inputs.score_std.get(g)
        n_active = active_dims(mu, std)
        rate = float(information_rate(mu, std).sum()) if std is not None else None
        out[f"{g}_active_dims"] = float(n_active)
        if rate is not None:
            out[f"{g}_rate"] = rate
        if g in inputs.kl:
            out[f"{g}_kl"] = float(inputs.kl[g])
        out[f"{g}_collapsed"] = float(is_collapsed(n_active, rate, mu.shape[1]))
    if "zay" in inputs.score_latents:
        out["zay_active_fraction"] = out["zay_active_dims"] / inputs.score_latents["zay"].shape[1]
    return out

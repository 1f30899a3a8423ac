"""Cheap per-epoch stand-ins of the final disentanglement metrics, in torch on the device.

The search's scheduler (ASHA) compares trials every epoch, on validation data only, so
each final metric the search can select has a proxy here that costs milliseconds:

- ``val_zay_independence`` (for ``zay_independence_score``): 1 - mean debiased linear
  CKA of zay with zy and with za, on one posterior draw of every validation input;
- ``val_zay_nonlinear_independence`` (for ``zay_nonlinear_independence``): the same
  with normalised unbiased RBF HSIC on at most 512 validation samples;
- ``val_zay_label_leakage`` (for ``zay_label_leakage``): max chance-corrected accuracy
  of y and of a read from zay;
- ``val_disentanglement_score`` (for ``disentanglement_score``): mean exclusivity of the
  factor x group matrix;
- ``val_zay_collapsed`` (for ``zay_collapsed``): 1 when zay transmits (almost) nothing,
  what a scheduler's rung reads as infeasible.

Probes here are closed-form ridge regressions on standardised features (one-hot targets
for discrete factors, argmax as the prediction), fit on one half of the validation
sources and scored on the other half, so no source image is on both sides. Like the
final metrics they read what the decoder receives: one posterior draw per input to fit,
``PROXY_DRAWS`` draws per input to score (their scores averaged), from a generator of
their own so that training's random stream is untouched; zay counts as collapsed when its
information rate (``_activity.information_rate_torch``) is below
``COLLAPSE_RATE_PER_DIM``.
"""

from __future__ import annotations

import torch

from trainer._independence import hsic, linear_cka
from trainer.metrics._activity import ACTIVE_RELATIVE_VARIANCE, COLLAPSE_RATE_PER_DIM
from trainer.metrics._activity import information_rate_torch as information_rate

PROXY_HSIC_SAMPLES = 512
PROXY_RIDGE_ALPHA = 1.0
#: posterior draws per scored input (the fit uses one)
PROXY_DRAWS = 4
PROXY_SEED = 0


def ridge_readout(
    z_fit: torch.Tensor, t_fit: torch.Tensor, z_score: torch.Tensor, t_score: torch.Tensor,
    *, n_classes: int | None,
) -> torch.Tensor:
    """How well a closed-form ridge probe reads a factor, in [0, 1].

    ``n_classes`` given: the factor is discrete; the score is chance-corrected accuracy
    (chance = the most frequent class of the score half). ``None``: continuous; R^2.
    """
    mean, std = z_fit.mean(0), z_fit.std(0)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    xf = torch.cat([(z_fit - mean) / std, torch.ones_like(z_fit[:, :1])], 1)
    xs = torch.cat([(z_score - mean) / std, torch.ones_like(z_score[:, :1])], 1)
    eye = torch.eye(xf.shape[1], dtype=xf.dtype, device=xf.device)
    eye[-1, -1] = 0.0  # the intercept is not penalised
    gram = xf.T @ xf + PROXY_RIDGE_ALPHA * eye
    if n_classes is not None:
        target = torch.nn.functional.one_hot(t_fit, n_classes).to(xf.dtype)
        w = torch.linalg.solve(gram, xf.T @ target)
        acc = ((xs @ w).argmax(1) == t_score).to(xf.dtype).mean()
        chance = torch.bincount(t_score, minlength=n_classes).max().to(xf.dtype) / len(t_score)
        cc = (acc - chance) / (1.0 - chance).clamp_min(1e-12)
        return cc.clamp(0.0, 1.0)
    t_fit, t_score = t_fit.to(xf.dtype), t_score.to(xf.dtype)
    w = torch.linalg.solve(gram, xf.T @ t_fit[:, None])
    resid = ((t_score[:, None] - xs @ w) ** 2).sum()
    total = ((t_score - t_score.mean()) ** 2).sum().clamp_min(1e-12)
    return (1.0 - resid / total).clamp(0.0, 1.0)


def epoch_proxies(
    latents: dict[str, torch.Tensor],
    factors: dict[str, tuple[torch.Tensor, int | None]],
    factor_groups: dict[str, str],
    half: torch.Tensor,
    *,
    std: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The per-epoch proxies of every selectable disentanglement metric (device tensors).

    Args:
        latents: group -> validation encoder means ``(n, d)``.
        factors: name -> (values ``(n,)``, number of classes or None if continuous);
            must include ``y`` and ``a``.
        factor_groups: factor -> its intended group ({} = labels only: y -> zy, a -> za).
        half: boolean ``(n,)``, True for the samples the probes are fit on.
        std: group -> posterior standard deviations ``(n, d)``; the probes then read
            posterior samples and collapse is judged by the information rate. None:
            deterministic latents (the probes read the means).
    """
    if "zay" not in latents:
        return {}
    zay = latents["zay"].double()
    # one generator for every draw below, in this order: the dependence proxies' draw,
    # then each group's probe draws when a readout first needs them
    gen = torch.Generator(device=zay.device).manual_seed(PROXY_SEED) if std else None
    out = _dependence_proxies(latents, std, gen)
    readout = _Readouts(latents, factors, half, std, gen)
    out["val_zay_label_leakage"] = torch.maximum(readout("zay", "y"), readout("zay", "a"))
    score_value = _mean_exclusivity(readout, latents, factors, factor_groups)
    alive = _zay_alive(zay, std)
    out["val_disentanglement_score"] = torch.where(alive, score_value,
                                                   torch.zeros_like(score_value))
    # for a scheduler's feasibility at a rung, as zay_collapsed is the final one's
    out["val_zay_collapsed"] = (~alive).to(score_value.dtype)
    return out


def _dependence_proxies(latents: dict[str, torch.Tensor], std: dict[str, torch.Tensor] | None,
                        gen: torch.Generator | None) -> dict[str, torch.Tensor]:
    """1 - the mean linear CKA and RBF HSIC of zay with zy and with za, on one posterior
    draw per input: what the decoder receives."""
    device = latents["zay"].device
    zy, za, zay_z = (latents[g].double() if std is None else
                     latents[g].double() + std[g].double() * torch.randn(
                         latents[g].shape, generator=gen, device=device,
                         dtype=torch.float64)
                     for g in ("zy", "za", "zay"))
    out = {"val_zay_independence": 1.0 - (
        linear_cka(zy, zay_z).clamp(0, 1) + linear_cka(za, zay_z).clamp(0, 1)) / 2}
    n = zay_z.shape[0]
    keep = torch.linspace(0, n - 1, min(n, PROXY_HSIC_SAMPLES), device=device).long()
    out["val_zay_nonlinear_independence"] = 1.0 - (
        hsic(zy[keep], zay_z[keep]).clamp(0, 1) + hsic(za[keep], zay_z[keep]).clamp(0, 1)) / 2
    return out


class _Readouts:
    """``readout(group, factor)``: how well a ridge probe fit on the ``half`` reads
    ``factor`` from ``group`` on the other half, computed once per pair. A group's
    posterior draws are made once, when a readout first needs them."""

    def __init__(self, latents: dict[str, torch.Tensor],
                 factors: dict[str, tuple[torch.Tensor, int | None]], half: torch.Tensor,
                 std: dict[str, torch.Tensor] | None, gen: torch.Generator | None) -> None:
        self.latents, self.factors, self.std, self.gen = latents, factors, std, gen
        self.fit, self.score = half, ~half
        self.draws = PROXY_DRAWS if std is not None else 1
        self._samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def _received(self, group: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One posterior draw of the fit half; ``draws`` stacked draws of the score half."""
        mu = self.latents[group].double()
        if self.std is None:
            return mu[self.fit], mu[self.score]
        sd = self.std[group].double()
        eps = torch.randn((1 + self.draws, *mu.shape), generator=self.gen, device=mu.device,
                          dtype=mu.dtype)
        z = mu + sd * eps
        return z[0][self.fit], z[1:][:, self.score].reshape(-1, mu.shape[1])

    def __call__(self, group: str, factor: str) -> torch.Tensor:
        if (group, factor) not in self._cache:
            if group not in self._samples:
                self._samples[group] = self._received(group)
            z_fit, z_score = self._samples[group]
            values, n_classes = self.factors[factor]
            self._cache[group, factor] = ridge_readout(z_fit, values[self.fit], z_score,
                                                       values[self.score].repeat(self.draws),
                                                       n_classes=n_classes)
        return self._cache[group, factor]


def _mean_exclusivity(readout: _Readouts, latents: dict[str, torch.Tensor],
                      factors: dict[str, tuple[torch.Tensor, int | None]],
                      factor_groups: dict[str, str]) -> torch.Tensor:
    """The mean over factors of how much better the factor's own group reads it than the
    best other group does (0 where another reads it as well)."""
    groups = list(latents)
    fg = {f: g for f, g in (factor_groups or {"y": "zy", "a": "za"}).items()
          if f in factors and g in latents}
    exclusivity = []
    for f, own in fg.items():
        others = torch.stack([readout(g, f) for g in groups if g != own])
        exclusivity.append((readout(own, f) - others.max()).clamp_min(0.0))
    return torch.stack(exclusivity).mean()


def _zay_alive(zay: torch.Tensor, std: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Whether zay transmits anything: its information rate reaches the collapse
    threshold, or (deterministic latents) at least one dimension varies."""
    if std is not None:
        rate = information_rate(zay, std["zay"]).sum()
        return rate >= COLLAPSE_RATE_PER_DIM * zay.shape[1]
    var, scale = zay.var(0), (zay * zay).mean(0)
    return ((var > ACTIVE_RELATIVE_VARIANCE * scale) & (var > 0)).any()

"""The four-latent VAE (DIVA with an interaction latent zay) and its staged loss.

Encoders q(zy|x), q(za|x), q(zay|x), q(zx|x); learned conditional Gaussian priors
p(zy|y), p(za|a), p(zay|y,a) and p(zx) = N(0, I); a Bernoulli decoder p(x|zy,za,zay,zx);
auxiliary heads q(y|zy) and q(a|za). The ``diva`` variant has no zay.

Two architectures share everything but the encoders and the decoder: ``mlp`` (two
hidden layers, for small inputs) and ``conv`` (DIVA-style strided convolution stacks
per latent group and a transposed-convolution decoder, for 28-96 px images).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer._config import ConfigError, ModelConfig, RunConfig
from trainer._independence import independence_penalty

_LOGVAR_RANGE = (-10.0, 10.0)
# The conv stacks halve the image until it is at most this many pixels on a side.
_CONV_MIN_SIDE = 4
_CONV_MAX_CHANNEL_FACTOR = 8  # channels double per block up to base * 8


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, d_out),
    )


def conv_sides(side: int) -> list[int]:
    """Spatial side after each stride-2 block: ``[side, ceil(side/2), ...]`` down to <= 4.

    28 -> [28, 14, 7, 4], 32 -> [32, 16, 8, 4], 64 -> [.., 8, 4], 96 -> [.., 6, 3].
    The depth follows the input size, so every size ends at a 3-4 px feature map.
    """
    sides = [side]
    while sides[-1] > _CONV_MIN_SIDE:
        sides.append((sides[-1] + 1) // 2)
    if len(sides) == 1:  # tiny inputs still get one block
        sides.append((side + 1) // 2)
    return sides


def _conv_channels(base: int, n_blocks: int) -> list[int]:
    return [base * min(2**i, _CONV_MAX_CHANNEL_FACTOR) for i in range(n_blocks)]


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: no running statistics (nothing updated in place, so
    # torch.func.vmap over stacked copies works), train and eval modes compute the same
    # function, and a sample's latents do not depend on the rest of its batch (which the
    # batch-level independence penalty and the probes would otherwise see).
    groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _conv_encoder(in_channels: int, hw: tuple[int, int], base: int, d_out: int) -> nn.Sequential:
    """Strided conv-GroupNorm-ReLU blocks, then one linear layer to ``d_out``."""
    sides_h, sides_w = conv_sides(hw[0]), conv_sides(hw[1])
    n_blocks = max(len(sides_h), len(sides_w)) - 1
    channels = _conv_channels(base, n_blocks)
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), _norm(c), nn.ReLU()]
        c_in = c
    h, w = _downsampled(hw[0], n_blocks), _downsampled(hw[1], n_blocks)
    layers += [nn.Flatten(), nn.Linear(c_in * h * w, d_out)]
    return nn.Sequential(*layers)


def _downsampled(side: int, n_blocks: int) -> int:
    for _ in range(n_blocks):
        side = (side + 1) // 2
    return side


def _conv_decoder(d_z: int, out_channels: int, hw: tuple[int, int], base: int) -> nn.Sequential:
    """Linear to the smallest feature map, then transposed convs back to ``hw`` exactly.

    The first module is the ``Linear`` that reads the concatenated latents (zy, za, zay,
    zx in that order), as in the MLP decoder.
    """
    n_blocks = max(len(conv_sides(hw[0])), len(conv_sides(hw[1]))) - 1
    sizes = [(_downsampled(hw[0], k), _downsampled(hw[1], k)) for k in range(n_blocks + 1)]
    channels = _conv_channels(base, n_blocks)
    h, w = sizes[-1]
    layers: list[nn.Module] = [
        nn.Linear(d_z, channels[-1] * h * w), nn.ReLU(), nn.Unflatten(1, (channels[-1], h, w)),
    ]
    for k in range(n_blocks, 0, -1):
        (h_in, w_in), (h_out, w_out) = sizes[k], sizes[k - 1]
        # kernel 3, stride 2, padding 1 gives 2*side - 1 + output_padding: pad to the
        # exact size the encoder halved from (odd sizes such as 7 -> 14 need no pad).
        pad = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))
        c_in = channels[k - 1]
        c_out = channels[k - 2] if k >= 2 else out_channels
        layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1,
                                         output_padding=pad))
        if k >= 2:
            layers += [_norm(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


ARCHS: tuple[str, ...] = ("mlp", "conv")


def resolve_arch(cfg: RunConfig) -> str:
    """The architecture a run uses: ``cfg.model.arch``, or the data set's default if auto."""
    if cfg.model.arch != "auto":
        return cfg.model.arch
    from trainer._data import dataset_default_arch

    return dataset_default_arch(cfg.data.dataset)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """Closed-form KL(q || p) of diagonal Gaussians, summed over dimensions: shape (n,)."""
    var_ratio = torch.exp(logvar_q - logvar_p)
    mean_term = (mu_q - mu_p).pow(2) * torch.exp(-logvar_p)
    return 0.5 * (var_ratio + mean_term - 1.0 - (logvar_q - logvar_p)).sum(-1)


@dataclass
class Posterior:
    """One latent group's posterior parameters and its sample."""

    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


class StagedVAE(nn.Module):
    """DIVA-style VAE with latents zy, za, zay (absent in the ``diva`` variant) and zx.

    ``arch`` overrides ``cfg.arch``; ``build_model`` passes the resolved one (``auto``
    means the data set's default, see ``resolve_arch``). Left at ``auto`` here, with no
    data set to ask, the model is the MLP.
    """

    def __init__(
        self, cfg: ModelConfig, *, input_shape: tuple[int, ...], n_classes: int,
        n_domains: int, arch: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self.n_domains = n_domains
        arch = arch or cfg.arch
        self.arch = "mlp" if arch == "auto" else arch
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch {arch!r}; choose one of auto, {', '.join(ARCHS)}")
        d_in = math.prod(input_shape)
        h = cfg.hidden_dim
        self.has_zay = cfg.variant == "staged"
        self.dims = {"zy": cfg.zy_dim, "za": cfg.za_dim, "zx": cfg.zx_dim}
        if self.has_zay:
            self.dims["zay"] = cfg.zay_dim
        d_z = sum(self.dims.values())
        if self.arch == "mlp":
            self.encoders = nn.ModuleDict(
                {g: _mlp(d_in, h, 2 * d) for g, d in self.dims.items()}
            )
            self.decoder = _mlp(d_z, h, d_in)
        else:
            if len(self.input_shape) != 3:
                raise ConfigError(
                    f"--arch conv needs images (channels, height, width); got input shape "
                    f"{self.input_shape}"
                )
            c, hh, ww = self.input_shape
            base = cfg.conv_channels
            self.encoders = nn.ModuleDict(
                {g: _conv_encoder(c, (hh, ww), base, 2 * d) for g, d in self.dims.items()}
            )
            self.decoder = _conv_decoder(d_z, c, (hh, ww), base)
        self.prior_zy = nn.Embedding(n_classes, 2 * cfg.zy_dim)
        self.prior_za = nn.Embedding(n_domains, 2 * cfg.za_dim)
        if self.has_zay:
            # One embedding per (y, a) pair: the prior can express any interaction.
            self.prior_zay = nn.Embedding(n_classes * n_domains, 2 * cfg.zay_dim)
        head_extra = cfg.zay_dim if (self.has_zay and cfg.heads_read_zay) else 0
        self.head_y = nn.Linear(cfg.zy_dim + head_extra, n_classes)
        self.head_a = nn.Linear(cfg.za_dim + head_extra, n_domains)
        for emb in self._priors():
            nn.init.zeros_(emb.weight)  # start every prior at N(0, I)

    def _priors(self) -> list[nn.Embedding]:
        priors = [self.prior_zy, self.prior_za]
        if self.has_zay:
            priors.append(self.prior_zay)
        return priors

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.dims)

    def encode(self, x: torch.Tensor, group: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of one latent group."""
        out = self.encoders[group](x.flatten(1) if self.arch == "mlp" else x)
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)

    def encode_means(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder means of every group (what the evaluation uses)."""
        return {g: self.encode(x, g)[0] for g in self.groups}

    def prior_params(
        self, group: str, y: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if group == "zy":
            out = self.prior_zy(y)
        elif group == "za":
            out = self.prior_za(a)
        elif group == "zay":
            out = self.prior_zay(y * self.n_domains + a)
        else:
            zeros = y.new_zeros((y.shape[0], self.dims["zx"]), dtype=torch.float32)
            return zeros, zeros
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)

    def forward(
        self,
        x: torch.Tensor,
        *,
        zay_gate: float = 1.0,
        zay_frozen: bool = False,
        sample: bool = True,
        generator: torch.Generator | None = None,
        noise: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, object]:
        """One pass: posteriors, reconstruction logits and head logits.

        ``zay_gate`` multiplies zay before it reaches the decoder and the heads.
        ``zay_frozen`` runs zay's encoder without a graph, so no gradient reaches it.
        ``sample=False`` uses the posterior means (validation).
        ``noise`` (group -> standard normal draws) replaces the draws from ``generator``:
        the population trainer draws each member's noise outside ``vmap``.
        """
        post: dict[str, Posterior] = {}
        for g in self.groups:
            if g == "zay" and zay_frozen:
                with torch.no_grad():
                    mu, logvar = self.encode(x, g)
            else:
                mu, logvar = self.encode(x, g)
            if sample:
                eps = noise[g] if noise is not None else torch.randn(
                    mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
                post[g] = Posterior(mu, logvar, mu + torch.exp(0.5 * logvar) * eps)
            else:
                post[g] = Posterior(mu, logvar, mu)
        z_dec = [post["zy"].z, post["za"].z]
        if self.has_zay:
            z_dec.append(post["zay"].z * zay_gate)
        z_dec.append(post["zx"].z)
        recon_logits = self.decoder(torch.cat(z_dec, dim=-1)).view(x.shape)
        hy_in, ha_in = post["zy"].z, post["za"].z
        if self.has_zay and self.cfg.heads_read_zay:
            gated = post["zay"].z * zay_gate
            hy_in = torch.cat([hy_in, gated], -1)
            ha_in = torch.cat([ha_in, gated], -1)
        return {
            "posteriors": post,
            "recon_logits": recon_logits,
            "y_logits": self.head_y(hy_in),
            "a_logits": self.head_a(ha_in),
        }

    @torch.no_grad()
    def predict_y(self, x: torch.Tensor) -> torch.Tensor:
        """Class prediction from q(y|zy) at the posterior mean (zay gated fully in)."""
        mu_zy, _ = self.encode(x, "zy")
        if self.has_zay and self.cfg.heads_read_zay:
            mu_zy = torch.cat([mu_zy, self.encode(x, "zay")[0]], -1)
        return self.head_y(mu_zy).argmax(-1)


@dataclass
class LossTerms:
    """The loss and its parts for one batch, all tensors (no host sync)."""

    total: torch.Tensor
    recon: torch.Tensor
    kl: dict[str, torch.Tensor]
    kl_zay_term: torch.Tensor
    ce_y: torch.Tensor
    ce_a: torch.Tensor
    penalty: torch.Tensor


#: each latent group's KL weight, by its ``ModelConfig`` field (a registry parameter)
KL_WEIGHT_FIELDS: dict[str, str] = {"zy": "beta_y", "za": "beta_a", "zay": "beta_ay",
                                    "zx": "beta_x"}


def kl_weights(cfg: RunConfig) -> dict[str, float]:
    """Each group's KL weight in ``cfg`` (``{"zy": beta_y, ...}``)."""
    return {g: getattr(cfg.model, f) for g, f in KL_WEIGHT_FIELDS.items()}


def staged_loss(
    model: StagedVAE,
    out: dict[str, object],
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    cfg: RunConfig,
    *,
    capacity: float | torch.Tensor,
    beta_scale: float | torch.Tensor = 1.0,
    with_penalty: bool | torch.Tensor = False,
    penalty_weight: float | torch.Tensor | None = None,
    weights: Mapping[str, float | torch.Tensor] | None = None,
) -> LossTerms:
    """recon + beta*(b_y KL_zy + b_x KL_zx + [zay term] + b_a KL_za) + a_y CE_y + a_a CE_a
    (+ lambda * independence penalty).

    The zay term is ``capacity * b_ay * KL_zay`` in ``kl_weight`` mode (the literal
    formula), ``b_ay * KL_zay`` in ``gate`` mode (capacity acts on the decoder input), and
    ``gamma * |KL_zay - capacity * C_max|`` in ``kl_target`` mode. The KL weights b_g are
    ``cfg.model``'s (``beta_y``, ``beta_x``, ``beta_a``, ``beta_ay``) unless ``weights``
    (group -> weight, e.g. a population member's 0-d tensors) gives them.

    The penalty (the one place it is computed) measures ``cfg.stages.penalty_pairs``: zay
    with zy and za, or also zay with zx. ``with_penalty`` is a run's switch (a bool) or,
    under ``vmap``, a member's (a 0-d bool tensor): ``vmap`` cannot branch per member, so
    the penalty is then computed for every member and kept where the switch is on.
    ``penalty_weight`` is λ (None: ``cfg.stages.independence_penalty``).
    """
    m, s = cfg.model, cfg.stages
    w = kl_weights(cfg) if weights is None else weights
    post: dict[str, Posterior] = out["posteriors"]  # type: ignore[assignment]
    recon = F.binary_cross_entropy_with_logits(
        out["recon_logits"], x, reduction="none"  # type: ignore[arg-type]
    ).flatten(1).sum(-1).mean()
    kl = {}
    for g, p in post.items():
        mu_p, logvar_p = model.prior_params(g, y, a)
        kl[g] = gaussian_kl(p.mu, p.logvar, mu_p, logvar_p).mean()
    weighted = w["zy"] * kl["zy"] + w["zx"] * kl["zx"] + w["za"] * kl["za"]
    zero = recon.new_zeros(())
    kl_zay_term = zero
    if "zay" in kl:
        if s.zay_suppression == "kl_weight":
            kl_zay_term = capacity * w["zay"] * kl["zay"]
        elif s.zay_suppression == "gate":
            kl_zay_term = w["zay"] * kl["zay"]
        else:  # kl_target
            kl_zay_term = s.kl_target_gamma * (kl["zay"] - capacity * s.kl_target_max).abs()
    ce_y = F.cross_entropy(out["y_logits"], y)  # type: ignore[arg-type]
    ce_a = F.cross_entropy(out["a_logits"], a)  # type: ignore[arg-type]
    if s.zay_suppression == "kl_target" and "zay" in kl:
        kl_total = beta_scale * weighted + kl_zay_term  # the target term is not annealed
    else:
        kl_total = beta_scale * (weighted + kl_zay_term)
    total = m.recon_weight * recon + kl_total + m.alpha_y * ce_y + m.alpha_a * ce_a
    penalty = zero
    if with_penalty is not False and "zay" in post:
        penalty = independence_penalty(
            s.penalty_measure, post["zay"].mu, post["zy"].mu, post["za"].mu,
            zx=post["zx"].mu, pairs=s.penalty_pairs, y=y, a=a,
            n_classes=model.n_classes, n_domains=model.n_domains,
        )
        weight = s.independence_penalty if penalty_weight is None else penalty_weight
        penalised = total + weight * penalty
        if isinstance(with_penalty, torch.Tensor):  # a member's switch, under vmap
            total = torch.where(with_penalty, penalised, total)
            penalty = torch.where(with_penalty, penalty, zero)
        else:
            total = penalised
    return LossTerms(total, recon, kl, kl_zay_term, ce_y, ce_a, penalty)

"""Optimisation: Adam with the warm-up (one formula, ``warmup_factor``), gradient-norm
clipping, and ``StackedAdam``, the same Adam for K stacked population members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trainer._config import RunConfig
from trainer._model import StagedVAE


def warmup_steps(cfg: RunConfig, batches_per_epoch: int) -> int:
    """The warm-up's length in optimiser steps (at least 1)."""
    return max(1, cfg.optim.warmup_epochs * batches_per_epoch)


def warmup_factor(step: Any, warmup: Any) -> Any:
    """The learning-rate factor after ``step`` steps: ``min(1, (step + 1) / warmup)``.

    Python numbers (``LambdaLR``'s lambda) or tensors (one entry per member).
    """
    ratio = (step + 1) / warmup
    return ratio.clamp(max=1.0) if isinstance(ratio, torch.Tensor) else min(1.0, ratio)


def learning_rate(cfg: RunConfig, n_steps: int, batches_per_epoch: int) -> float:
    """The learning rate after ``n_steps`` steps, as ``LambdaLR`` computes it."""
    return cfg.optim.lr * warmup_factor(n_steps, warmup_steps(cfg, batches_per_epoch))


def make_optimiser(model: StagedVAE, cfg: RunConfig, batches_per_epoch: int
                   ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """A run's Adam and its warm-up scheduler (stepped once per optimiser step)."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay)
    warmup = warmup_steps(cfg, batches_per_epoch)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_factor(step, warmup))


def clip_gradients(model: StagedVAE, max_norm: float) -> None:
    """Clip the model's gradient norm to ``max_norm`` (``<= 0``: no clipping)."""
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def clip_per_member(grads: dict[str, torch.Tensor], max_norm: torch.Tensor) -> None:
    """``clip_gradients`` per member of stacked gradients (``max_norm[k] <= 0``: member
    k is not clipped), with ``clip_grad_norm_``'s rule: scale by
    ``min(1, max_norm / (norm + 1e-6))``."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads.values()])
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    for name, g in grads.items():
        grads[name] = g * coef.view((-1,) + (1,) * (g.dim() - 1))


class StackedAdam:
    """``make_optimiser``'s Adam and warm-up for K stacked members at once.

    The arithmetic is that of ``torch.optim.Adam`` (single-tensor path) element by
    element. Steps are counted per member and per parameter, since a member's frozen
    parameters take no step (a solo run's Adam skips parameters without a gradient).
    A member's state converts to and from the solo optimiser's state dicts, so that its
    checkpoint entry is a solo one.
    """

    def __init__(self, params: dict[str, torch.Tensor], configs: Sequence[RunConfig],
                 batches_per_epoch: int) -> None:
        defaults = torch.optim.Adam([torch.zeros(1)]).defaults
        self.beta1, self.beta2 = defaults["betas"]
        self.eps = defaults["eps"]
        device = next(iter(params.values())).device

        def per_member(values: list[float], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        # float64 where torch's Adam computes on the host in Python floats
        self.lr = per_member([c.optim.lr for c in configs], torch.float64)
        self.weight_decay = per_member([c.optim.weight_decay for c in configs], torch.float32)
        self.warmup_steps = per_member(
            [warmup_steps(c, batches_per_epoch) for c in configs], torch.float64)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.step = {n: per_member([0.0] * len(configs), torch.float64) for n in params}
        self.n_steps = per_member([0.0] * len(configs), torch.float64)  # LambdaLR's

    def current_lr(self) -> torch.Tensor:
        """Each member's learning rate now."""
        return self.lr * warmup_factor(self.n_steps, self.warmup_steps)

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
               masks: dict[str, torch.Tensor], stepped: torch.Tensor) -> None:
        """One step where ``masks[name][k]``; ``stepped[k]``: member k's scheduler steps."""
        lr = self.current_lr()
        for name, p in params.items():
            mask = masks[name]
            g = grads[name]
            shape = (-1,) + (1,) * (p.dim() - 1)
            wd = self.weight_decay.view(shape)
            g = torch.where(wd != 0, g + wd * p, g)
            m = self.exp_avg[name].lerp(g, 1 - self.beta1)
            v = self.exp_avg_sq[name].mul(self.beta2).addcmul(g, g, value=1 - self.beta2)
            step = self.step[name] + mask.to(torch.float64)
            # float64 on the host side of torch's Adam: bias corrections of Python floats
            bc1 = 1.0 - self.beta1 ** step
            bc2_sqrt = (1.0 - self.beta2 ** step).sqrt()
            step_size = (lr / bc1).to(p.dtype).view(shape)
            denom = (v.sqrt() / bc2_sqrt.to(p.dtype).view(shape)).add(self.eps)
            new_p = p + (-step_size) * m / denom
            keep = mask.view(shape)
            p.copy_(torch.where(keep, new_p, p))
            self.exp_avg[name] = torch.where(keep, m, self.exp_avg[name])
            self.exp_avg_sq[name] = torch.where(keep, v, self.exp_avg_sq[name])
            self.step[name] = step
        self.n_steps = self.n_steps + stepped.to(torch.float64)

    def append(self, params: dict[str, torch.Tensor], configs: Sequence[RunConfig],
               batches_per_epoch: int) -> None:
        """Add members (``params``: their stacked parameters) with a fresh Adam state and
        no steps taken, as a solo optimiser starts."""
        joined = StackedAdam(params, configs, batches_per_epoch)
        for mine, theirs in ((self.exp_avg, joined.exp_avg), (self.exp_avg_sq,
                                                              joined.exp_avg_sq),
                             (self.step, joined.step)):
            for n in mine:
                mine[n] = torch.cat([mine[n], theirs[n]])
        for attr in ("lr", "weight_decay", "warmup_steps", "n_steps"):
            setattr(self, attr, torch.cat([getattr(self, attr), getattr(joined, attr)]))

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices ``keep``."""
        for d in (self.exp_avg, self.exp_avg_sq, self.step):
            for n in d:
                d[n] = d[n][keep]
        for attr in ("lr", "weight_decay", "warmup_steps", "n_steps"):
            setattr(self, attr, getattr(self, attr)[keep])

    def member_state_dicts(self, row: int, model: StagedVAE, cfg: RunConfig,
                           batches_per_epoch: int) -> tuple[dict, dict]:
        """Member ``row``'s optimiser and scheduler state dicts, as ``make_optimiser``'s
        Adam and LambdaLR for ``model`` (a solo model of the members' shape) save them."""
        opt, sched = make_optimiser(model, cfg, batches_per_epoch)
        params = dict(model.named_parameters())
        for name in self.exp_avg:
            step = float(self.step[name][row])
            if step > 0:  # Adam keeps no state for a parameter that never took a step
                opt.state[params[name]] = {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": self.exp_avg[name][row].clone(),
                    "exp_avg_sq": self.exp_avg_sq[name][row].clone(),
                }
        n_steps = int(self.n_steps[row])
        lr = learning_rate(cfg, n_steps, batches_per_epoch)
        opt.param_groups[0]["lr"] = lr
        sd = sched.state_dict()  # LambdaLR's counters as after ``n_steps`` steps
        sched.load_state_dict(sd | {"last_epoch": n_steps, "_step_count": n_steps + 1,
                                    "_is_initial": sd.get("_is_initial", False)
                                    and n_steps == 0, "_last_lr": [lr]})
        return opt.state_dict(), sched.state_dict()

    def load_member_state_dicts(self, row: int, model: StagedVAE, cfg: RunConfig,
                                batches_per_epoch: int, entry: dict[str, Any]) -> None:
        """Set member ``row`` from a checkpoint entry's solo optimiser and scheduler."""
        opt, sched = make_optimiser(model, cfg, batches_per_epoch)
        opt.load_state_dict(entry["optimizer"])
        sched.load_state_dict(entry["scheduler"])
        params = dict(model.named_parameters())
        for name in self.exp_avg:
            st = opt.state.get(params[name])
            if st:
                self.step[name][row] = float(st["step"])
                self.exp_avg[name][row] = st["exp_avg"].to(self.exp_avg[name].device)
                self.exp_avg_sq[name][row] = st["exp_avg_sq"].to(self.exp_avg[name].device)
        self.n_steps[row] = float(sched.last_epoch)

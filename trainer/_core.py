"""The training core: every piece of a staged run that solo ``fit`` and ``fit_population``
share, written once.

``trainer._fit`` (one model, torch's Adam) and ``trainer._population`` (K stacked
members under ``vmap``) are two drivers over these pieces:

- set-up: device, seeds, data, model, generator, batches, checkpoint folder;
- schedule: the per-epoch knobs of a config (stage, zay capacity and gate, beta scale,
  penalty switch and weight, zay freezing), from ``trainer._stages``;
- the step: the batch's loss terms (``staged_loss`` plus the independence penalty, with
  one switch per run or per member) and its statistics;
- optimisation: Adam with the warm-up (one formula, ``warmup_factor``), for one model and
  for stacked members, and gradient-norm clipping;
- the epoch: validation, the one read-back, the epoch row and the end-of-epoch rules
  (``RunProgress``: divergence, early stopping, best weights);
- checkpoints: entries in one format, atomic writes, reads that refuse a tampered file
  or another configuration; RNG capture and restore;
- the final evaluation, whose failures say that they are the evaluation's.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer._config import EARLY_STOPPING_METRICS, ConfigError, RunConfig
from trainer._data import DataBundle, check_evaluable, load_dataset
from trainer._independence import independence_penalty
from trainer._model import LossTerms, StagedVAE, resolve_arch, staged_loss
from trainer._stages import beta_scale, penalty_active, stage_of, zay_capacity
from trainer.metrics import epoch_proxies

ModelState = dict[str, torch.Tensor]
#: the note an exception raised in the final evaluation carries (``noted``)
EVALUATION = "the final evaluation, after the last training epoch"


# -- what a run returns -------------------------------------------------------------------


class DivergenceError(RuntimeError):
    """Training kept producing non-finite losses."""


@dataclass
class FitResult:
    """What a finished run returns."""

    config: RunConfig
    history: list[dict[str, float]]
    final: dict[str, float]
    stopped_early: bool
    best_epoch: int
    analysis: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunProgress:
    """A run's end-of-epoch state: its rows, the divergence streak, early stopping and the
    best weights. ``fit`` keeps one; ``fit_population`` keeps one per member.

    Early stopping follows the row's ``optim.early_stopping_metric`` column (the
    validation loss by default). ``best_loss`` is its best stage-3 value so far as a
    loss, lower better: a maximised column's value negated (the name is kept, for the
    checkpoints that store it).
    """

    cfg: RunConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = -1
    since_best: int = 0
    bad_streak: int = 0
    best_state: ModelState | None = None
    stopped_early: bool = False

    CHECKPOINTED = ("history", "best_loss", "best_epoch", "since_best", "bad_streak",
                    "best_state", "stopped_early")

    def checkpoint(self) -> dict[str, Any]:
        """The fields a checkpoint holds (the history as a copy: an entry kept in memory
        must not grow with the run)."""
        fields = {name: getattr(self, name) for name in self.CHECKPOINTED}
        fields["history"] = list(self.history)
        return fields

    def load(self, ckpt: dict[str, Any]) -> None:
        for name in self.CHECKPOINTED:
            setattr(self, name, ckpt.get(name, False) if name == "stopped_early" else ckpt[name])
        self.history = list(self.history)

    def end_epoch(self, row: dict[str, float], *, bad: int, batches_per_epoch: int,
                  epoch: int, stage: int, state: Callable[[], ModelState]) -> None:
        """Apply the end-of-epoch rules to the epoch's ``row`` and keep it.

        Raises:
            DivergenceError: too many non-finite batches for too many epochs in a row.
        """
        o = self.cfg.optim
        if bad > o.max_bad_batch_fraction * batches_per_epoch:
            self.bad_streak += 1
            if self.bad_streak >= o.max_bad_epochs:
                raise DivergenceError(
                    f"training diverged: {bad}/{batches_per_epoch} batches had a non-finite "
                    f"loss for {self.bad_streak} epochs in a row (epoch {epoch}, stage "
                    f"{stage}); lower --lr or the loss weights"
                )
        else:
            self.bad_streak = 0
        # Early stopping only compares stage-3 rows: earlier stages optimise another
        # objective (zay suppressed or ramping), so their losses are not comparable.
        loss = self.stopping_loss(row) if stage == 3 else math.nan
        if math.isfinite(loss):
            if loss < self.best_loss:
                self.best_loss, self.best_epoch, self.since_best = loss, epoch, 0
                self.best_state = state()
            else:
                self.since_best += 1
                if self.since_best >= o.patience:
                    self.stopped_early = True
        row["stopped_early"] = float(self.stopped_early)
        self.history.append(row)

    def stopping_loss(self, row: dict[str, float]) -> float:
        """The row's value of the early-stopping column, as a loss (lower is better).

        Raises:
            ConfigError: the row lacks the column (``val_acc_y_val_domain`` on data
                without a ``val_domain`` split).
        """
        name = self.cfg.optim.early_stopping_metric
        if name not in row:
            raise ConfigError(
                f"early_stopping_metric {name} is not measured on this data (no "
                f"val_domain split); give --val_domain K"
            )
        value = float(row[name])
        return value if EARLY_STOPPING_METRICS[name] == "minimize" else -value

    def result(self, analysis: dict[str, Any], out_dir: str | Path | None = None
               ) -> FitResult:
        """The run's ``FitResult`` from its final evaluation (outputs written if asked)."""
        final = dict(analysis["metrics"])
        final["epochs_run"] = float(len(self.history))
        final["best_epoch"] = float(self.best_epoch)
        final["stopped_early"] = float(self.stopped_early)
        final["final_stage"] = float(self.history[-1]["stage"]) if self.history else 0.0
        result = FitResult(self.cfg, self.history, final, self.stopped_early, self.best_epoch,
                           analysis)
        if out_dir is not None:
            from trainer._outputs import write_run_outputs

            write_run_outputs(result, Path(out_dir))
        return result


# -- set-up -------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def prepare_run(cfg: RunConfig, data: DataBundle | None) -> tuple[torch.device, DataBundle]:
    """The device, the seeded global generators and the data set (loaded by name if
    ``data`` is None, checked for the evaluation, moved to the device)."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if data is None:
        data = load_dataset(cfg.data, cfg.data_seed)
    check_evaluable(data, cfg.data.dataset)
    if cfg.optim.early_stopping_metric == "val_acc_y_val_domain" and not data.split_size(
            "val_domain"):
        raise ConfigError(
            "early_stopping_metric val_acc_y_val_domain needs a val_domain split, and "
            "the data given has none (load it with --val_domain K)"
        )
    data.to(device)
    return device, data


def build_model(cfg: RunConfig, data: DataBundle) -> StagedVAE:
    """The run's model, with ``--arch auto`` resolved to the data set's default."""
    return StagedVAE(
        cfg.model, input_shape=data.input_shape, n_classes=data.n_classes,
        n_domains=data.n_domains, arch=resolve_arch(cfg),
    )


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A run's own stream: the batch order and the posterior noise."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@dataclass(frozen=True)
class BatchPlan:
    """How an epoch walks the training split."""

    train_idx: torch.Tensor
    batch_size: int

    @classmethod
    def of(cls, cfg: RunConfig, data: DataBundle) -> BatchPlan:
        train_idx = data.splits["train"]
        return cls(train_idx, min(cfg.optim.batch_size, train_idx.numel()))

    @property
    def n_train(self) -> int:
        return self.train_idx.numel()

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)

    def starts(self) -> range:
        return range(0, self.n_train, self.batch_size)

    def shuffled(self, gen: torch.Generator) -> torch.Tensor:
        """The epoch's order of the training indices (one ``randperm`` from ``gen``)."""
        return self.train_idx[torch.randperm(self.n_train, generator=gen,
                                             device=self.train_idx.device)]


def checkpoint_path(checkpoint_dir: str | Path | None, name: str, *, resume: bool
                    ) -> Path | None:
    """Where the run's checkpoint ``name`` goes (None: no checkpoints).

    Raises:
        ConfigError: ``resume`` with no checkpoint to resume from.
    """
    path = Path(checkpoint_dir) / name if checkpoint_dir is not None else None
    if resume and (path is None or not path.exists()):
        raise ConfigError(f"nothing to resume: no {name} in {checkpoint_dir}")
    if path is not None and not resume:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- the schedule -------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochKnobs:
    """What the schedule sets for one epoch of one config."""

    epoch: int
    stage: int
    capacity: float  # zay's c: its KL weight or target, and its gate in ``gate`` mode
    gate: float  # multiplies zay before the decoder and the heads
    beta: float  # global KL weight (annealing)
    penalty: bool  # the independence penalty is in the loss
    penalty_weight: float  # its λ
    frozen: bool  # zay's encoder runs without a graph (stage 1 of ``gate`` mode)

    def row(self) -> dict[str, float]:
        """The schedule's columns of the epoch row."""
        return {"epoch": float(self.epoch), "stage": float(self.stage),
                "capacity": float(self.capacity), "beta_scale": float(self.beta),
                "penalty_active": float(self.penalty)}


def epoch_knobs(epoch: int, cfg: RunConfig, *, has_zay: bool) -> EpochKnobs:
    """The schedule of a 0-based epoch (a model without zay has capacity 0)."""
    stage = stage_of(epoch, cfg)
    capacity = zay_capacity(epoch, cfg) if has_zay else 0.0
    gated = cfg.stages.zay_suppression == "gate"
    return EpochKnobs(
        epoch=epoch, stage=stage, capacity=capacity, gate=capacity if gated else 1.0,
        beta=beta_scale(epoch, cfg), penalty=penalty_active(epoch, cfg),
        penalty_weight=cfg.stages.independence_penalty,
        frozen=has_zay and gated and stage == 1,
    )


# -- one batch step -----------------------------------------------------------------------


def step_losses(model: StagedVAE, out: dict[str, object], x: torch.Tensor, y: torch.Tensor,
                a: torch.Tensor, cfg: RunConfig, *, capacity: float | torch.Tensor,
                beta: float | torch.Tensor, penalty: bool | torch.Tensor,
                penalty_weight: float | torch.Tensor,
                weights: Mapping[str, float | torch.Tensor] | None = None) -> LossTerms:
    """The batch's loss terms: ``staged_loss`` plus the independence penalty where on.

    ``penalty`` is the run's switch (a bool) or, under ``vmap``, a member's (a 0-d
    tensor, with ``penalty_weight`` its λ); the penalty is then computed for every member
    and kept where the switch is on, since ``vmap`` cannot branch per member. ``weights``
    (group -> KL weight) are a member's KL weights; ``None``: ``cfg.model``'s.
    """
    if not isinstance(penalty, torch.Tensor):
        # λ of a run is its config's, which ``staged_loss`` reads itself
        return staged_loss(model, out, x, y, a, cfg, capacity=capacity, beta_scale=beta,
                           with_penalty=penalty, weights=weights)
    terms = staged_loss(model, out, x, y, a, cfg, capacity=capacity, beta_scale=beta,
                        weights=weights)
    if not model.has_zay:
        return terms
    post = out["posteriors"]
    value = independence_penalty(
        cfg.stages.penalty_measure, post["zay"].mu, post["zy"].mu, post["za"].mu,  # type: ignore[index]
        zx=post["zx"].mu, pairs=cfg.stages.penalty_pairs,  # type: ignore[index]
        y=y, a=a, n_classes=model.n_classes, n_domains=model.n_domains,
    )
    return replace(terms, total=torch.where(penalty, terms.total + penalty_weight * value,
                                             terms.total),
                   penalty=torch.where(penalty, value, torch.zeros_like(value)))


def batch_statistics(terms: LossTerms, out: dict[str, Any], y: torch.Tensor,
                     a: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch's training columns: mean loss terms and correct-prediction counts."""
    stats = {
        "train_loss": terms.total, "train_recon": terms.recon, "train_ce_y": terms.ce_y,
        "train_ce_a": terms.ce_a, "train_penalty": terms.penalty,
        "train_kl_zay_term": terms.kl_zay_term,
        "train_acc_y": (out["y_logits"].argmax(-1) == y).sum(),
        "train_acc_a": (out["a_logits"].argmax(-1) == a).sum(),
    }
    for g, v in terms.kl.items():
        stats[f"train_kl_{g}"] = v
    return stats


def accumulate(sums: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], n: int,
               keep: torch.Tensor | None = None) -> None:
    """Add a batch of ``n`` samples to the epoch's device sums (means weighted by ``n``,
    counts as they are; ``keep``: per member, whether its batch counts)."""
    for k, v in stats.items():
        v = v.detach() * n if v.is_floating_point() else v
        if keep is not None:
            v = torch.where(keep, v, torch.zeros_like(v))
        sums[k] = sums[k] + v if k in sums else v


# -- optimisation -------------------------------------------------------------------------


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


# -- the epoch ----------------------------------------------------------------------------


@torch.no_grad()
def validate_epoch(
    model: StagedVAE, data: DataBundle, cfg: RunConfig, *, capacity: float, beta: float,
    chunk: int = 4096,
) -> dict[str, torch.Tensor]:
    """Validation loss (at posterior means), accuracies and disentanglement proxies (on
    posterior samples).

    All device tensors (read back once per epoch by the caller). The proxies
    (``trainer.metrics._proxies``) are the per-epoch stand-ins of every disentanglement
    metric the search can select. Where the data has a validation domain (a non-empty
    ``val_domain`` split), ``val_acc_y_val_domain`` is q(y|zy)'s accuracy on it
    (``val_domain_accuracy``): the column ``--early_stopping_metric`` can follow.
    """
    model.eval()
    idx = data.splits["val"]
    sums = {"val_loss": 0.0, "val_acc_y": 0.0, "val_acc_a": 0.0}
    means: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    stds: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    gate = capacity if cfg.stages.zay_suppression == "gate" else 1.0
    for start in range(0, idx.numel(), chunk):
        b = idx[start : start + chunk]
        x, y, a = data.x[b], data.y[b], data.a[b]
        out = model(x, zay_gate=gate, sample=False)
        terms = staged_loss(model, out, x, y, a, cfg, capacity=capacity, beta_scale=beta)
        n = b.numel()
        sums["val_loss"] = sums["val_loss"] + terms.total * n
        sums["val_acc_y"] = sums["val_acc_y"] + (out["y_logits"].argmax(-1) == y).sum()
        sums["val_acc_a"] = sums["val_acc_a"] + (out["a_logits"].argmax(-1) == a).sum()
        for g, p in out["posteriors"].items():
            means[g].append(p.mu)
            stds[g].append((0.5 * p.logvar).exp())
    n_val = idx.numel()
    result = {k: v / n_val for k, v in sums.items()}
    if "zay" in means and n_val >= 8:
        factors: dict[str, tuple[torch.Tensor, int | None]] = {
            "y": (data.y[idx], data.n_classes), "a": (data.a[idx], data.n_domains)}
        for name, values in data.factors.items():
            if name in data.factor_groups:
                t = torch.from_numpy(values).to(idx.device)[idx]
                discrete = not t.is_floating_point()
                factors[name] = (t, int(values.max()) + 1 if discrete else None)
        # probes: fit on the sources with an even id, scored on the others
        half = data.source[idx] % 2 == 0
        one_sided = half.all() | (~half).all()  # a tensor: no host sync
        by_position = torch.arange(n_val, device=idx.device) % 2 == 0
        half = torch.where(one_sided, by_position, half)
        latents = {g: torch.cat(v) for g, v in means.items()}
        scales = {g: torch.cat(v) for g, v in stds.items()}
        result.update(epoch_proxies(latents, factors, data.factor_groups, half, std=scales))
    if data.split_size("val_domain"):
        result["val_acc_y_val_domain"] = val_domain_accuracy(model, data, chunk=chunk)
    return result


@torch.no_grad()
def val_domain_accuracy(model: StagedVAE, data: DataBundle, *, chunk: int = 4096
                        ) -> torch.Tensor:
    """q(y|zy)'s accuracy on the whole ``val_domain`` split, a device scalar.

    ``model.predict_y`` (the posterior mean of zy, read by the head), as the final
    ``acc_y_val_domain`` measures it: one encoder and the head per chunk, no more.
    """
    model.eval()
    idx = data.splits["val_domain"]
    correct = torch.zeros((), dtype=torch.int64, device=idx.device)
    for start in range(0, idx.numel(), chunk):
        b = idx[start : start + chunk]
        correct = correct + (model.predict_y(data.x[b]) == data.y[b]).sum()
    return correct / idx.numel()


def to_floats(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Device scalars as Python floats, in one read-back (float32, as the rows hold them)."""
    if not tensors:
        return {}
    values = torch.stack([v.float() for v in tensors.values()]).tolist()
    return dict(zip(tensors, values, strict=True))


def epoch_row(knobs: EpochKnobs, *, lr: float, bad: int, train: dict[str, float],
              n_done: float, val: dict[str, float], seconds: float) -> dict[str, float]:
    """An epoch's row: schedule, learning rate, skipped batches, training means over the
    ``n_done`` samples of its finite batches (none without one), validation, timing."""
    row = knobs.row() | {"lr": float(lr), "bad_batches": float(bad)}
    if n_done:
        row.update({k: v / n_done for k, v in train.items()})
    row.update(val)
    row["epoch_time_s"] = seconds
    row["samples_per_s"] = n_done / seconds if seconds > 0 else 0.0
    return row


# -- random state -------------------------------------------------------------------------


def rng_state(gen: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state of a run (``gen``'s too if given), as tensors and plain Python
    values only (what ``torch.load(weights_only=True)`` accepts: no numpy objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {} if gen is None else {"generator": gen.get_state()}
    state |= {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    # a process that never started CUDA has no CUDA stream in use (reading one starts it)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator | None = None) -> None:
    """Restore what ``rng_state`` captured (``gen``'s state too if given)."""
    if gen is not None:
        gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- checkpoints --------------------------------------------------------------------------


def flatten_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"optim": {"lr": ..}}`` -> ``{"optim.lr": ..}``."""
    flat: dict[str, Any] = {}
    for section, value in cfg_dict.items():
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[section] = value
    return flat


def _comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """A config without the fields that may differ on resume (where it runs)."""
    out = copy.deepcopy(cfg_dict)
    out.pop("device", None)
    return out


def checkpoint_entry(cfg: RunConfig, epoch: int, stage: int, *, model: ModelState,
                     optimizer: dict, scheduler: dict, rng: dict[str, Any],
                     progress: RunProgress, **extra: Any) -> dict[str, Any]:
    """A run's checkpoint after ``epoch``: what ``fit(resume=True)`` continues from."""
    return {"config_json": cfg.to_json(), "epoch": epoch, "stage": stage, "model": model,
            "optimizer": optimizer, "scheduler": scheduler, "rng": rng,
            **progress.checkpoint(), **extra}


def save_checkpoint(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` atomically: a crash mid-write leaves the last one whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, kind: str = "checkpoint") -> Any:
    """A checkpoint file's contents (``kind`` names it in messages).

    Only tensors and plain Python values are unpickled (``weights_only=True``): a
    tampered or foreign file cannot run code, it is refused.

    Raises:
        ConfigError: the file holds other objects, or cannot be read.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # objects other than tensors and plain data
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"refusing {kind} {path}: it holds objects other than tensors and plain "
            f"data, so it was tampered with or not written by stagetune ({detail[:200]})"
        ) from None
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"cannot read {kind} {path}: {exc}") from exc


def check_checkpoint_config(ckpt: Any, cfg: RunConfig, name: str) -> None:
    """Refuse a checkpoint (``name`` says which, in the message) of another configuration."""
    raw = ckpt.get("config_json") if isinstance(ckpt, dict) else None
    if isinstance(ckpt, dict) and raw is None and isinstance(ckpt.get("config"), dict):
        raw = json.dumps(ckpt["config"])  # an entry written as a plain dict
    if not isinstance(raw, str):
        raise ConfigError(f"{name} is not a stagetune checkpoint")
    try:
        stored = RunConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name} holds an unreadable configuration: {exc}") from None
    theirs = flatten_config(_comparable(stored.to_dict()))
    ours = flatten_config(_comparable(cfg.to_dict()))
    diff = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    if diff:
        raise ConfigError(
            f"checkpoint {name} was written by another configuration (differs in "
            f"{', '.join(diff)}); resume with the same flags or choose another --out"
        )


def load_checkpoint(path: Path, cfg: RunConfig) -> dict[str, Any]:
    """Load a run's checkpoint, refusing a tampered one or one of another configuration."""
    ckpt = read_checkpoint(path)
    check_checkpoint_config(ckpt, cfg, str(path))
    return ckpt


# -- the final evaluation -----------------------------------------------------------------


@contextmanager
def noted(place: str) -> Iterator[None]:
    """Note on any exception raised inside where in the run it was raised: the message
    and type stay as they are, the traceback (what a failed trial stores) says it."""
    try:
        yield
    except Exception as exc:
        note = f"stagetune: raised in {place}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10: the attribute 3.11 keeps and prints
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
        raise


def final_analyses(model: StagedVAE, data: DataBundle,
                   runs: Sequence[tuple[RunConfig, ModelState | None]]
                   ) -> list[dict[str, Any] | DivergenceError]:
    """The final evaluation of trained runs that share ``model``'s shape.

    Each ``(config, weights)`` is loaded into ``model`` in turn (None: its weights as
    they are) and its inputs read; then every run's probes are fit in one batch and each
    run's metrics computed. A run whose encoder gives non-finite latents or posterior
    scales (weights that went non-finite without enough bad batches to stop training)
    gets a ``DivergenceError`` in its place and is left out of the batch, so that it
    fails alone. Any other exception raised here carries the note ``EVALUATION``.
    """
    from trainer._evaluation import eval_inputs, evaluate_inputs  # pulls in scikit-learn
    from trainer.metrics import fit_probes

    with noted(EVALUATION):
        inputs: list[Any] = []
        for cfg, state in runs:
            if state is not None:
                model.load_state_dict(state)
            got = eval_inputs(model, data, cfg)
            bad = non_finite_groups(got)
            if bad:
                got = DivergenceError(f"the final evaluation found non-finite latents in "
                                      f"{', '.join(bad)}: the trained weights are not finite")
                got.add_note(EVALUATION)
            inputs.append(got)
        fine = [i for i in inputs if not isinstance(i, DivergenceError)]
        if fine:
            fit_probes(fine)
        return [i if isinstance(i, DivergenceError) else evaluate_inputs(i, data, model.groups)
                for i in inputs]


def non_finite_groups(inputs: Any) -> list[str]:
    """The latent groups whose means or posterior scales hold a non-finite value."""
    bad = []
    for table in (inputs.fit_latents, inputs.score_latents, inputs.fit_std, inputs.score_std):
        bad += [g for g, z in table.items() if not np.isfinite(z).all() and g not in bad]
    return bad

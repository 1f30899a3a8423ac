"""Population training: K configurations that share a model shape, trained as one model.

The members' parameters are stacked (``torch.func.stack_module_state``) and one batch step
runs ``vmap(functional_call(...))`` over the ``StagedVAE`` and the solo trainer's own
``staged_loss``, so any architecture the solo trainer builds works unchanged. Everything
a member would see alone stays its own:

- schedule: stage, zay capacity and gate, beta scale and the penalty switch per epoch come
  from ``trainer._stages`` for each member's config and enter as per-member tensors;
- zay freezing (stage 1 of gate mode): the parameters that a solo frozen pass leaves
  without a gradient get neither gradient nor Adam update for that member;
- randomness: one generator per seed, used exactly as ``fit`` uses it (``randperm`` per
  epoch, then one normal draw per latent group per batch), drawn outside ``vmap``;
- optimisation: Adam and the warm-up schedule over stacked tensors with per-member step
  counts, and gradient-norm clipping per member;
- early stopping, best state, divergence (a diverging member fails and is dropped, the
  others go on), checkpoints (each member's entry is a solo ``fit`` checkpoint) and the
  final evaluation.

Members that cannot share one model (another architecture, data set, batch size, zay
suppression mode or penalty measure) go to separate populations: ``group_population``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from trainer._config import ConfigError, RunConfig
from trainer._data import DataBundle, check_evaluable, load_dataset
from trainer._fit import (
    DivergenceError,
    FitResult,
    RunProgress,
    _atomic_save,
    _flatten,
    _rng_state,
    _set_rng_state,
    build_model,
    check_checkpoint_config,
    resolve_device,
    validate_epoch,
)
from trainer._independence import independence_penalty
from trainer._model import StagedVAE, staged_loss
from trainer._stages import beta_scale, penalty_active, stage_of, zay_capacity

PopulationReportFn = Callable[[int, dict[str, float]], None]
POPULATION_CHECKPOINT = "population.pt"

#: fields every member of a population must share: they shape the model, the data, the
#: batches or a branch of the loss that ``vmap`` cannot take per member
SHARED_FIELDS = (
    "model.*", "data.*", "optim.batch_size", "stages.zay_suppression",
    "stages.penalty_measure", "stages.kl_target_gamma", "stages.kl_target_max", "device",
)


def population_key(cfg: RunConfig, *, shared_data: bool = False) -> str:
    """What members of one population share, as a JSON string.

    The seed is part of it unless the caller passes one data set to all members
    (``shared_data``): ``load_dataset`` draws the splits from the seed.
    """
    flat = _flatten(cfg.to_dict())
    keep = {}
    for name, value in flat.items():
        if any(name == f or (f.endswith(".*") and name.startswith(f[:-1]))
               for f in SHARED_FIELDS):
            keep[name] = value
    if not shared_data:
        keep["seed"] = cfg.seed
    return json.dumps(keep, sort_keys=True, default=str)


def group_population(configs: Sequence[RunConfig], *, shared_data: bool = False
                     ) -> list[list[int]]:
    """Indices of ``configs`` grouped into populations, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(population_key(cfg, shared_data=shared_data), []).append(i)
    return list(groups.values())


# -- one member's batch step, for vmap ---------------------------------------------------


class _MemberStep(nn.Module):
    """One member's training loss and batch statistics: what ``fit`` computes per batch.

    Written for ``functional_call`` under ``vmap``: every per-member setting arrives as a
    0-d tensor, the loss is the solo ``staged_loss`` (without its penalty, whose λ is a
    per-member tensor here) plus ``independence_penalty`` where the member's switch is on.
    """

    def __init__(self, model: StagedVAE, cfg: RunConfig, *, with_penalty: bool) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.with_penalty = with_penalty

    def forward(self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                noise: dict[str, torch.Tensor], knobs: dict[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        model = self.model
        out = model(x, zay_gate=knobs["gate"], noise=noise)
        terms = staged_loss(model, out, x, y, a, self.cfg, capacity=knobs["capacity"],
                            beta_scale=knobs["beta"])
        total, penalty = terms.total, terms.penalty
        if self.with_penalty and model.has_zay:
            post = out["posteriors"]
            value = independence_penalty(
                self.cfg.stages.penalty_measure, post["zay"].mu, post["zy"].mu,
                post["za"].mu, y=y, a=a, n_classes=model.n_classes,
                n_domains=model.n_domains,
            )
            on = knobs["penalty_on"]
            total = torch.where(on, total + knobs["lam"] * value, total)
            penalty = torch.where(on, value, torch.zeros_like(value))
        stats = {
            "train_loss": total, "train_recon": terms.recon, "train_ce_y": terms.ce_y,
            "train_ce_a": terms.ce_a, "train_penalty": penalty,
            "train_kl_zay_term": terms.kl_zay_term,
            "train_acc_y": (out["y_logits"].argmax(-1) == y).sum(),
            "train_acc_a": (out["a_logits"].argmax(-1) == a).sum(),
        }
        for g, v in terms.kl.items():
            stats[f"train_kl_{g}"] = v
        return stats


def _grad_receivers(model: StagedVAE, cfg: RunConfig, data: DataBundle, *, frozen: bool
                    ) -> set[str]:
    """Names of the parameters a solo training pass gives a gradient (``frozen``: zay's
    encoder runs without a graph, as in stage 1 of gate mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    b = data.splits["train"][:2]
    gen = torch.Generator(device=data.x.device)
    gen.manual_seed(0)  # a private stream: the members' and the global ones stay untouched
    gate = 0.0 if frozen else 1.0
    out = model(data.x[b], zay_gate=gate, zay_frozen=frozen, generator=gen)
    staged_loss(model, out, data.x[b], data.y[b], data.a[b], cfg, capacity=gate
                ).total.backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return names


# -- Adam over stacked parameters ---------------------------------------------------------


class _StackedAdam:
    """``torch.optim.Adam`` + ``LambdaLR`` warm-up for K members at once.

    The arithmetic is that of ``torch.optim.Adam`` (single-tensor path) element by
    element. Steps are counted per member and per parameter, since a member's frozen
    parameters take no step (a solo run's Adam skips parameters without a gradient).
    """

    def __init__(self, params: dict[str, torch.Tensor], *, lr: torch.Tensor,
                 weight_decay: torch.Tensor, warmup_steps: torch.Tensor) -> None:
        defaults = torch.optim.Adam([torch.zeros(1)]).defaults
        self.beta1, self.beta2 = defaults["betas"]
        self.eps = defaults["eps"]
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        k = lr.shape[0]
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.step = {n: torch.zeros(k, dtype=torch.float64, device=lr.device) for n in params}
        self.n_steps = torch.zeros(k, dtype=torch.float64, device=lr.device)  # LambdaLR's

    def current_lr(self) -> torch.Tensor:
        """Each member's learning rate now: ``lr * min(1, (steps + 1) / warmup_steps)``."""
        return self.lr * torch.clamp((self.n_steps + 1.0) / self.warmup_steps, max=1.0)

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


def _clip_per_member(grads: dict[str, torch.Tensor], max_norm: torch.Tensor) -> None:
    """``clip_grad_norm_`` per member (``max_norm[k] <= 0``: member k is not clipped)."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads.values()])
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    for name, g in grads.items():
        grads[name] = g * coef.view((-1,) + (1,) * (g.dim() - 1))


# -- per-member bookkeeping ---------------------------------------------------------------


@dataclass
class _Member:
    """One member: its config, ``fit``'s end-of-epoch state, and how it ended."""

    index: int
    cfg: RunConfig
    progress: RunProgress
    error: str | None = None
    last: dict[str, Any] = field(default_factory=dict)  # its latest checkpoint entry
    final_state: dict[str, torch.Tensor] | None = None  # its weights when it finished

    @property
    def next_epoch(self) -> int:
        return len(self.progress.history)

    @property
    def finished(self) -> bool:
        return (self.error is not None or self.progress.stopped_early
                or self.next_epoch >= self.cfg.optim.epochs)

    def after_epoch(self, row: dict[str, float], batches_per_epoch: int, epoch: int,
                    stage: int, state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """``fit``'s end-of-epoch rules; False if the member failed (no row is kept)."""
        try:
            self.progress.end_epoch(row, bad=int(row["bad_batches"]),
                                    batches_per_epoch=batches_per_epoch, epoch=epoch,
                                    stage=stage, state=state)
        except DivergenceError as exc:
            self.error = str(exc)
            return False
        return True


def _scratch_optimiser(model: StagedVAE, cfg: RunConfig, batches_per_epoch: int):
    """The solo run's Adam and warm-up scheduler, to read and write their state dicts."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay)
    warmup = max(1, cfg.optim.warmup_epochs * batches_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return opt, sched


# -- the trainer --------------------------------------------------------------------------


class _Population:
    """The stacked state of the members still training, and one epoch of all of them."""

    def __init__(self, configs: list[RunConfig], data: DataBundle, device: torch.device,
                 init_rng: dict[str, Any]) -> None:
        self.data, self.device = data, device
        self.template_cfg = configs[0]
        self.members = [_Member(i, c, RunProgress(c)) for i, c in enumerate(configs)]
        self.train_idx = data.splits["train"]
        self.n_train = self.train_idx.numel()
        self.bs = min(self.template_cfg.optim.batch_size, self.n_train)
        self.batches_per_epoch = math.ceil(self.n_train / self.bs)
        models = []
        for cfg in configs:
            # each member starts from the weights ``fit`` would give it with its seed
            if cfg.seed == self.template_cfg.seed:
                _set_global_rng(init_rng)
            else:  # only with a data set passed in, which ``fit`` would not load
                _seed_all(cfg.seed)
            models.append(build_model(cfg, data).to(device))
        self.scratch = models[0]  # a solo model: validation, evaluation, state dicts
        self.step_module = _MemberStep(self.scratch, self.template_cfg, with_penalty=False)
        self.names = [n for n, _ in self.scratch.named_parameters()]
        receivers_open = _grad_receivers(self.scratch, self.template_cfg, data, frozen=False)
        receivers_frozen = (_grad_receivers(self.scratch, self.template_cfg, data, frozen=True)
                            if self.scratch.has_zay else receivers_open)
        self.receives = {n: (n in receivers_open, n in receivers_frozen) for n in self.names}
        params, buffers = stack_module_state(models)
        self.params = {n: params[n].detach().clone() for n in self.names}
        self.buffers = {n: b.clone() for n, b in buffers.items()}
        self.active = list(range(len(configs)))  # member index of each stacked row
        self.generators: dict[int, torch.Generator] = {}
        for cfg in configs:
            if cfg.seed not in self.generators:
                gen = torch.Generator(device=device)
                gen.manual_seed(cfg.seed)
                self.generators[cfg.seed] = gen
        opt = [c.optim for c in configs]
        self.adam = _StackedAdam(
            self.params,
            lr=self._tensor([o.lr for o in opt], torch.float64),
            weight_decay=self._tensor([o.weight_decay for o in opt], torch.float32),
            warmup_steps=self._tensor(
                [max(1, o.warmup_epochs * self.batches_per_epoch) for o in opt], torch.float64),
        )
        self.grad_clip = self._tensor([o.grad_clip for o in opt], torch.float32)

    def _tensor(self, values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    # -- state of one member, in the solo trainer's formats ---------------------------

    def member_state(self, row: int) -> dict[str, torch.Tensor]:
        state = {n: p[row].detach().clone() for n, p in self.params.items()}
        state.update({n: b[row].clone() for n, b in self.buffers.items()})
        return dict(state)

    def load_scratch(self, state: dict[str, torch.Tensor]) -> StagedVAE:
        self.scratch.load_state_dict(state)
        return self.scratch

    def solo_optimiser_state(self, row: int, cfg: RunConfig) -> tuple[dict, dict]:
        """Member ``row``'s optimiser and scheduler as ``fit``'s Adam and LambdaLR save them."""
        opt, sched = _scratch_optimiser(self.scratch, cfg, self.batches_per_epoch)
        params = dict(self.scratch.named_parameters())
        for name in self.names:
            step = float(self.adam.step[name][row])
            if step > 0:  # Adam keeps no state for a parameter that never took a step
                opt.state[params[name]] = {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": self.adam.exp_avg[name][row].clone(),
                    "exp_avg_sq": self.adam.exp_avg_sq[name][row].clone(),
                }
        n_steps = int(self.adam.n_steps[row])
        lr = _lambda_lr(cfg, n_steps, self.batches_per_epoch)
        opt.param_groups[0]["lr"] = lr
        sd = sched.state_dict()  # LambdaLR's counters as after ``n_steps`` steps
        sched.load_state_dict(sd | {"last_epoch": n_steps, "_step_count": n_steps + 1,
                                    "_is_initial": sd.get("_is_initial", False)
                                    and n_steps == 0, "_last_lr": [lr]})
        return opt.state_dict(), sched.state_dict()

    def load_solo_optimiser_state(self, row: int, cfg: RunConfig, ckpt: dict) -> None:
        opt, sched = _scratch_optimiser(self.scratch, cfg, self.batches_per_epoch)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        params = dict(self.scratch.named_parameters())
        for name in self.names:
            st = opt.state.get(params[name])
            if st:
                self.adam.step[name][row] = float(st["step"])
                self.adam.exp_avg[name][row] = st["exp_avg"].to(self.device)
                self.adam.exp_avg_sq[name][row] = st["exp_avg_sq"].to(self.device)
        self.adam.n_steps[row] = float(sched.last_epoch)

    # -- one epoch ------------------------------------------------------------------

    def select(self, keep_rows: list[int]) -> None:
        """Drop the stacked rows of members that have finished."""
        keep = torch.tensor(keep_rows, dtype=torch.long, device=self.device)
        self.params = {n: p[keep] for n, p in self.params.items()}
        self.buffers = {n: b[keep] for n, b in self.buffers.items()}
        self.adam.select(keep)
        self.grad_clip = self.grad_clip[keep]
        self.active = [self.active[r] for r in keep_rows]

    def run_epoch(self, epoch: int) -> tuple[list[dict[str, float]], list[float], float]:
        """Train every active member for one epoch; their rows (without validation)."""
        members = [self.members[i] for i in self.active]
        cfgs = [m.cfg for m in members]
        has_zay = self.scratch.has_zay
        mode = self.template_cfg.stages.zay_suppression
        stage = [stage_of(epoch, c) for c in cfgs]
        cap = [zay_capacity(epoch, c) if has_zay else 0.0 for c in cfgs]
        beta = [beta_scale(epoch, c) for c in cfgs]
        pen = [penalty_active(epoch, c) for c in cfgs]
        frozen = [has_zay and mode == "gate" and s == 1 for s in stage]
        knobs = {
            "gate": self._tensor([c if mode == "gate" else 1.0 for c in cap], torch.float32),
            "capacity": self._tensor(cap, torch.float32),
            "beta": self._tensor(beta, torch.float32),
            "lam": self._tensor([c.stages.independence_penalty for c in cfgs], torch.float32),
            "penalty_on": self._tensor(pen, torch.bool),
        }
        frozen_t = self._tensor(frozen, torch.bool)
        receive = {n: torch.where(frozen_t, torch.tensor(fr, device=self.device),
                                  torch.tensor(op, device=self.device))
                   for n, (op, fr) in self.receives.items()}
        self.step_module.with_penalty = any(pen)

        seeds = sorted({c.seed for c in cfgs})
        stream = self._tensor([seeds.index(c.seed) for c in cfgs], torch.long)
        perms = torch.stack([
            self.train_idx[torch.randperm(self.n_train, generator=self.generators[s],
                                          device=self.device)] for s in seeds])
        groups = self.scratch.groups
        dims = self.scratch.dims

        def step_fn(params, buffers, x, y, a, noise, kn):
            return functional_call(self.step_module, ({f"model.{n}": p for n, p in
                                                       params.items()} | buffers),
                                   (x, y, a, noise, kn))

        one_stream = len(seeds) == 1
        data_dim = None if one_stream else 0
        batched = vmap(step_fn, in_dims=(0, 0, data_dim, data_dim, data_dim, data_dim, 0))
        buffers = {f"model.{n}": b for n, b in self.buffers.items()}
        sums: dict[str, torch.Tensor] = {}
        bad = torch.zeros(len(cfgs), dtype=torch.long, device=self.device)
        n_done = torch.zeros(len(cfgs), dtype=torch.long, device=self.device)
        t0 = time.perf_counter()
        for start in range(0, self.n_train, self.bs):
            b = perms[:, start : start + self.bs]
            n = b.shape[1]
            noise = {g: torch.stack([torch.randn((n, dims[g]), generator=self.generators[s],
                                                 device=self.device) for s in seeds])
                     for g in groups}
            if one_stream:
                b, noise = b[0], {g: v[0] for g, v in noise.items()}
            else:
                b, noise = b[stream], {g: v[stream] for g, v in noise.items()}
            x, y, a = self.data.x[b], self.data.y[b], self.data.a[b]
            leaves = {nm: p.detach().requires_grad_(True) for nm, p in self.params.items()}
            stats = batched(leaves, buffers, x, y, a, noise, knobs)
            total = stats["train_loss"]
            finite = torch.isfinite(total)
            torch.where(finite, total, torch.zeros_like(total)).sum().backward()
            grads = {nm: torch.zeros_like(p) if leaves[nm].grad is None else torch.where(
                         receive[nm].view((-1,) + (1,) * (p.dim() - 1)), leaves[nm].grad, 0.0)
                     for nm, p in self.params.items()}
            _clip_per_member(grads, self.grad_clip)
            masks = {nm: receive[nm] & finite for nm in self.names}
            self.adam.update(self.params, grads, masks, finite)
            bad += (~finite).long()
            n_done += finite.long() * n
            for k, v in stats.items():
                v = torch.where(finite, v.detach() * n if v.is_floating_point() else v,
                                torch.zeros_like(v))
                sums[k] = sums[k] + v if k in sums else v
        # One read-back per epoch for all members; float32 sums as ``fit`` reads them.
        keys = list(sums)
        table = torch.stack([*(sums[k].float() for k in keys), n_done.float()]).T.tolist()
        counts = torch.stack([bad, self.adam.n_steps.long()]).T.tolist()
        elapsed = time.perf_counter() - t0
        rows = []
        for i, m in enumerate(members):
            done = table[i][-1]
            n_bad, n_steps = counts[i]
            row: dict[str, float] = {
                "epoch": float(epoch), "stage": float(stage[i]), "capacity": float(cap[i]),
                "beta_scale": float(beta[i]), "penalty_active": float(pen[i]),
                "lr": _lambda_lr(m.cfg, n_steps, self.batches_per_epoch),
                "bad_batches": float(n_bad),
            }
            if done:  # ``fit`` has no training sums in an epoch without a finite batch
                for k, v in zip(keys, table[i][:-1], strict=True):
                    row[k] = v / done
            rows.append(row)
        return rows, [t[-1] for t in table], elapsed


def _lambda_lr(cfg: RunConfig, n_steps: int, batches_per_epoch: int) -> float:
    """The warm-up's learning rate after ``n_steps`` steps, as ``LambdaLR`` computes it."""
    warmup = max(1, cfg.optim.warmup_epochs * batches_per_epoch)
    return cfg.optim.lr * min(1.0, (n_steps + 1) / warmup)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _global_rng() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def _set_global_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


# -- checkpoints --------------------------------------------------------------------------


def load_population_checkpoint(path: str | Path, configs: Sequence[RunConfig]
                               ) -> list[dict[str, Any]]:
    """The members' entries of a population checkpoint, refusing other configurations.

    Each entry is a solo ``fit`` checkpoint (plus ``error`` for a failed member): save
    one with ``torch.save(entry, dir / "checkpoint.pt")`` and ``fit(resume=True)`` goes on.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"cannot read population checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or "members" not in ckpt:
        raise ConfigError(f"{path} is not a stagetune population checkpoint")
    entries = ckpt["members"]
    if len(entries) != len(configs):
        raise ConfigError(f"checkpoint {path} holds {len(entries)} members, not "
                          f"{len(configs)}; resume with the same configurations")
    for k, (entry, cfg) in enumerate(zip(entries, configs, strict=True)):
        check_checkpoint_config(entry, cfg, f"{path} member {k}")
    return entries


def _entry(pop: _Population, row: int, m: _Member, epoch: int, stage: int) -> dict[str, Any]:
    """Member ``m``'s checkpoint in the solo trainer's format."""
    optimizer, scheduler = pop.solo_optimiser_state(row, m.cfg)
    return {
        "config_json": m.cfg.to_json(), "epoch": epoch, "stage": stage,
        "model": pop.member_state(row), "optimizer": optimizer, "scheduler": scheduler,
        "rng": _rng_state(pop.generators[m.cfg.seed]),
        **m.progress.checkpoint() | {"history": list(m.progress.history)}, "error": m.error,
    }


def _resume(pop: _Population, entries: list[dict[str, Any]]) -> None:
    """Load every member's entry; all members still training must stand at one epoch."""
    epochs = set()
    for row, (m, e) in enumerate(zip(pop.members, entries, strict=True)):
        m.progress.load(e)
        m.progress.history = list(m.progress.history)
        m.error, m.last, m.final_state = e.get("error"), e, e["model"]
        for name, value in e["model"].items():
            target = pop.params if name in pop.params else pop.buffers
            target[name][row] = value.to(pop.device)
        pop.load_solo_optimiser_state(row, m.cfg, e)
        if not m.finished:
            epochs.add(m.next_epoch)
    if len(epochs) > 1:
        raise ConfigError(f"population checkpoint members stand at different epochs "
                          f"{sorted(epochs)}; it was not written by fit_population")
    # one generator per seed: members of one seed share it and so its state
    for m, e in zip(pop.members, entries, strict=True):
        if not m.finished:
            _set_rng_state(pop.generators[m.cfg.seed], e["rng"])


# -- the public entry point ---------------------------------------------------------------


def fit_population(
    configs: Sequence[RunConfig],
    *,
    report: PopulationReportFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    data: DataBundle | None = None,
    evaluate: bool = True,
) -> list[FitResult | DivergenceError]:
    """Train K configurations that share a model shape as one vectorised model.

    Each member gets what ``fit(configs[k])`` would give it, up to float reassociation:
    its own schedule, batches, noise, optimiser, early stopping and evaluation.

    Args:
        configs: the members; they must share ``population_key`` (see
            ``group_population`` to split a mixed list).
        report: called as ``report(k, row)`` once per epoch of member ``k``.
        checkpoint_dir: where ``population.pt`` is written after every epoch.
        resume: continue from ``checkpoint_dir/population.pt`` (same configs required).
        out_dir: each member's analysis files go to ``out_dir/member_<k>``.
        data: an already-loaded data set; members may then differ in seed.
        evaluate: run the final evaluation (``False``: ``final`` holds only the run's
            bookkeeping; for tests and benchmarks of the training loop).

    Returns:
        One entry per config, in order: its ``FitResult``, or the ``DivergenceError`` that
        failed it (the other members are unaffected).

    Raises:
        ConfigError: configs that cannot share a model, bad configuration, missing data
            or a mismatched checkpoint.
    """
    configs = list(configs)
    if not configs:
        raise ConfigError("fit_population needs at least one configuration")
    shared_data = data is not None
    keys = [population_key(c, shared_data=shared_data) for c in configs]
    if len(set(keys)) > 1:
        bad = sorted({n for k in keys for n, v in json.loads(k).items()
                      if v != json.loads(keys[0]).get(n)})
        raise ConfigError(f"these configurations cannot share one model (they differ in "
                          f"{', '.join(bad)}); split them with group_population")
    first = configs[0]
    device = resolve_device(first.device)
    _seed_all(first.seed)
    if data is None:
        data = load_dataset(first.data, first.seed)
    check_evaluable(data, first.data.dataset)
    data.to(device)
    pop = _Population(configs, data, device, _global_rng())
    ckpt_path = (Path(checkpoint_dir) / POPULATION_CHECKPOINT
                 if checkpoint_dir is not None else None)
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise ConfigError(f"nothing to resume: no {POPULATION_CHECKPOINT} in "
                              f"{checkpoint_dir}")
        _resume(pop, load_population_checkpoint(ckpt_path, configs))
    elif ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    live = [r for r, m in enumerate(pop.members) if not m.finished]
    if len(live) < len(pop.members):
        pop.select(live)
    while pop.active:
        epoch = pop.members[pop.active[0]].next_epoch
        rows, done, elapsed = pop.run_epoch(epoch)
        reported: list[int] = []
        for r, (i, row) in enumerate(zip(pop.active, rows, strict=True)):
            m = pop.members[i]
            stage = int(row["stage"])
            t_val = time.perf_counter()
            model = pop.load_scratch(pop.member_state(r))
            val = validate_epoch(model, data, m.cfg, capacity=row["capacity"],
                                 beta=row["beta_scale"])
            for k, v in zip(val, torch.stack([v.float() for v in val.values()]).tolist(),
                            strict=True):
                row[k] = v
            # the epoch's wall time: the shared batch loop plus this member's validation
            row["epoch_time_s"] = elapsed + time.perf_counter() - t_val
            row["samples_per_s"] = done[r] / row["epoch_time_s"]
            kept = m.after_epoch(row, pop.batches_per_epoch, epoch, stage,
                                 lambda r=r: pop.member_state(r))
            if kept and report is not None:
                reported.append(i)
            if m.finished:
                m.final_state = pop.member_state(r)
        if ckpt_path is not None:
            for r, i in enumerate(pop.active):
                m = pop.members[i]
                m.last = _entry(pop, r, m, epoch, int(rows[r]["stage"]))
            _atomic_save({"members": [m.last for m in pop.members]}, ckpt_path)
        for i in reported:
            report(i, dict(pop.members[i].progress.history[-1]))  # type: ignore[misc]
        keep = [r for r, i in enumerate(pop.active) if not pop.members[i].finished]
        if len(keep) < len(pop.active):
            pop.select(keep)

    # pulls in scikit-learn
    from trainer._evaluation import eval_inputs, evaluate_inputs, prepare_probes

    inputs = {}
    for m in pop.members:
        if m.error is None and evaluate:
            best = m.progress.best_state
            state = best if best is not None else m.final_state
            inputs[m.index] = eval_inputs(pop.load_scratch(state), data, m.cfg)
    prepare_probes(list(inputs.values()))  # every member's probes in one batch
    results: list[FitResult | DivergenceError] = []
    for m in pop.members:
        if m.error is not None:
            results.append(DivergenceError(m.error))
            continue
        analysis = (evaluate_inputs(inputs[m.index], data, pop.scratch.groups) if evaluate
                    else {"metrics": {}})
        results.append(m.progress.result(
            analysis, Path(out_dir) / f"member_{m.index}" if out_dir is not None else None))
    return results

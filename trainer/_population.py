"""Population training: K configurations that share a model shape, trained as one model.

A driver for K stacked members over the pieces ``fit`` uses too (``trainer._setup``,
``_schedule``, ``_step``, ``_optimiser``, ``_validation``, ``_progress``,
``_checkpoints``, ``_final_evaluation``). The members' parameters are stacked
(``torch.func.stack_module_state``) and one batch step runs
``vmap(functional_call(...))`` over the ``StagedVAE`` and the solo trainer's loss terms
(``staged_loss``) and batch statistics, so any architecture the solo trainer builds
works unchanged. Everything a member would see alone stays its own:

- schedule: ``epoch_knobs`` of each member's own epoch and config, and its KL weights,
  entering as per-member tensors (members stand at different epochs once one refilled);
- zay freezing (stage 1 of gate mode): the parameters that a solo frozen pass leaves
  without a gradient get neither gradient nor Adam update for that member;
- randomness: one generator per stream, used exactly as ``fit`` uses it (``randperm``
  per epoch, then one normal draw per latent group per batch), drawn outside ``vmap``.
  A stream is (seed, the tick the member joined): members that joined together with one
  seed share it (their solo runs draw the same numbers), a member that joins later with
  a running member's seed gets a fresh ``make_generator(seed)`` of its own;
- optimisation: ``StackedAdam`` (Adam and the warm-up with per-member step counts) and
  ``clip_per_member``;
- early stopping, best state, divergence (a diverging member fails and is dropped, the
  others go on), checkpoints (each member's entry is a solo ``fit`` checkpoint) and the
  final evaluation, all ``fit``'s own.

The population's capacity is the number of initial configurations. A member that
finishes (its epochs, early stopping, divergence, or stopped by its caller) leaves the
stacked model; with ``refill`` its slot goes to a new configuration, which starts at
epoch 0 on the next tick (one tick: one epoch of every member training) beside the
others, with the weights, Adam state and stream a solo ``fit`` would start it with.
A member its caller stops (``report_epoch``, a scheduler's rung) ends as ``Pruned``:
its rows, and no final evaluation. A checkpoint holds every member, refilled ones with
their configurations and join ticks, and every stream's state, so a resumed population
goes on as the uninterrupted one would.

Which fields members may differ in is declared beside each field
(``trainer._config.per_member``): the schedule's, the KL weights, the optimiser's, early
stopping's, the seeds and the evaluation's. Every other field (the model's shape, the
data, the batch size, the zay suppression mode, the penalty's measure and pairs, the
loss weights the step reads from the first member's config) is shared: members that
differ in one go to separate populations (``group_population``), and ``fit_population``
refuses them (and a refill that differs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from trainer._checkpoints import (
    check_checkpoint_config,
    checkpoint_entry,
    checkpoint_path,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainer._config import ConfigError, RunConfig, flatten_config, member_variable_fields
from trainer._data import DataBundle
from trainer._final_evaluation import final_analyses
from trainer._model import KL_WEIGHT_FIELDS, StagedVAE, staged_loss
from trainer._optimiser import StackedAdam, clip_per_member, learning_rate
from trainer._progress import (
    DivergenceError,
    FitResult,
    ModelState,
    RunProgress,
    epoch_row,
    to_floats,
)
from trainer._schedule import EpochKnobs, epoch_knobs
from trainer._setup import BatchPlan, build_model, make_generator, prepare_run, seed_everything
from trainer._step import accumulate, batch_statistics
from trainer._validation import validate_epoch

PopulationReportFn = Callable[[int, dict[str, float]], None]
#: called once per epoch with every row that epoch produced, by member index; may return
#: the members to stop now
PopulationEpochFn = Callable[[dict[int, dict[str, float]]], Iterable[int] | None]
#: called with the number of free slots; the configurations that take them
RefillFn = Callable[[int], Sequence[RunConfig]]
#: called with a member's index and its result as soon as it has one
ResultFn = Callable[[int, FitResult | DivergenceError], None]


@dataclass(frozen=True)
class Pruned:
    """A population member its caller stopped (``report_epoch``): the rows it trained,
    and no final evaluation."""

    history: list[dict[str, float]]
    epochs_run: int


POPULATION_CHECKPOINT = "population.pt"


def population_key(cfg: RunConfig, *, shared_data: bool = False) -> str:
    """What members of one population share, as a JSON string: every field of the
    config but those declared member-variable (``trainer._config.per_member``).

    The data's seed (``RunConfig.data_seed``: ``split_seed``, else the seed) is part of it
    unless the caller passes one data set to all members (``shared_data``):
    ``load_dataset`` draws the splits from it. Members that differ only in ``seed`` but
    share a ``split_seed`` (a setting's replicates) share one population.
    """
    per_member = member_variable_fields(cfg)
    keep = {name: value for name, value in flatten_config(cfg.to_dict()).items()
            if name not in per_member}
    if not shared_data:
        keep["data_seed"] = cfg.data_seed
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
    """One member's batch statistics (its ``train_loss`` the loss): the core's step.

    Written for ``functional_call`` under ``vmap``: every per-member setting arrives as a
    0-d tensor in ``knobs``; ``with_penalty`` says whether any member has its penalty on
    this epoch (if none has, no member computes it).
    """

    def __init__(self, model: StagedVAE, cfg: RunConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.with_penalty = False

    def forward(self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                noise: dict[str, torch.Tensor], knobs: dict[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        out = self.model(x, zay_gate=knobs["gate"], noise=noise)
        terms = staged_loss(self.model, out, x, y, a, self.cfg, capacity=knobs["capacity"],
                            beta_scale=knobs["beta"],
                            with_penalty=knobs["penalty"] if self.with_penalty else False,
                            penalty_weight=knobs["penalty_weight"],
                            weights={g: knobs[f] for g, f in KL_WEIGHT_FIELDS.items()})
        return batch_statistics(terms, out, y, a)


def _grad_receivers(model: StagedVAE, cfg: RunConfig, data: DataBundle, *, frozen: bool
                    ) -> set[str]:
    """Names of the parameters a solo training pass gives a gradient (``frozen``: zay's
    encoder runs without a graph, as in stage 1 of gate mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    b = data.splits["train"][:2]
    gen = make_generator(0, data.x.device)  # a private stream: the runs' stay untouched
    gate = 0.0 if frozen else 1.0
    x, y, a = data.x[b], data.y[b], data.a[b]
    out = model(x, zay_gate=gate, zay_frozen=frozen, generator=gen)
    staged_loss(model, out, x, y, a, cfg, capacity=gate).total.backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return names


# -- per-member bookkeeping ---------------------------------------------------------------


@dataclass
class _Member:
    """One member: its config, ``fit``'s end-of-epoch state, and how it ended."""

    index: int
    cfg: RunConfig
    progress: RunProgress
    stream: tuple[int, int] = (0, 0)  # (seed, tick it joined): whose random stream it uses
    error: str | None = None
    pruned: bool = False  # stopped by the caller (a scheduler's rung): no final evaluation
    last: dict[str, Any] = field(default_factory=dict)  # its latest checkpoint entry
    final_state: ModelState | None = None  # its weights when it finished

    @property
    def next_epoch(self) -> int:
        return len(self.progress.history)

    @property
    def finished(self) -> bool:
        return (self.error is not None or self.pruned or self.progress.stopped_early
                or self.next_epoch >= self.cfg.optim.epochs)

    def after_epoch(self, row: dict[str, float], batches_per_epoch: int,
                    knobs: EpochKnobs, state: Callable[[], ModelState]) -> bool:
        """``fit``'s end-of-epoch rules; False if the member failed (no row is kept)."""
        try:
            self.progress.end_epoch(row, bad=int(row["bad_batches"]),
                                    batches_per_epoch=batches_per_epoch, epoch=knobs.epoch,
                                    stage=knobs.stage, state=state)
        except DivergenceError as exc:
            self.error = str(exc)
            return False
        return True


@dataclass
class _Trained:
    """What one epoch's batch loop measured for one member (validation comes after)."""

    knobs: EpochKnobs
    lr: float
    bad: int
    train: dict[str, float]
    n_done: float


# -- the trainer --------------------------------------------------------------------------


class _Population:
    """The stacked state of the members still training, and one epoch of all of them."""

    def __init__(self, configs: list[RunConfig], data: DataBundle, device: torch.device,
                 init_rng: dict[str, Any]) -> None:
        self.data, self.device, self.init_rng = data, device, init_rng
        self.template_cfg = configs[0]
        self.capacity = len(configs)
        self.tick = 0  # epochs the population has run
        self.asked = -1  # the tick at which refill was last asked
        self.members = [_Member(i, c, RunProgress(c), stream=(c.seed, 0))
                        for i, c in enumerate(configs)]
        self.plan = BatchPlan.of(self.template_cfg, data)
        models = self._initial_models(configs)
        self.scratch = models[0]  # a solo model: validation, evaluation, state dicts
        self.step_module = _MemberStep(self.scratch, self.template_cfg)
        self.names = [n for n, _ in self.scratch.named_parameters()]
        receivers_open = _grad_receivers(self.scratch, self.template_cfg, data, frozen=False)
        receivers_frozen = (_grad_receivers(self.scratch, self.template_cfg, data, frozen=True)
                            if self.scratch.has_zay else receivers_open)
        self.receives = {n: (n in receivers_open, n in receivers_frozen) for n in self.names}
        params, buffers = stack_module_state(models)
        self.params = {n: params[n].detach().clone() for n in self.names}
        self.buffers = {n: b.clone() for n, b in buffers.items()}
        self.active = list(range(len(configs)))  # member index of each stacked row
        #: results given early (``fit_population(on_result=)``), by member index
        self.results: dict[int, FitResult | DivergenceError] = {}
        # one generator per stream: members that joined together with one seed share it
        self.generators: dict[tuple[int, int], torch.Generator] = {}
        for m in self.members:
            if m.stream not in self.generators:
                self.generators[m.stream] = make_generator(m.cfg.seed, device)
        self.adam = StackedAdam(self.params, configs, self.plan.batches_per_epoch)
        self.grad_clip = self._tensor([c.optim.grad_clip for c in configs], torch.float32)

    def _initial_models(self, configs: list[RunConfig]) -> list[StagedVAE]:
        """Each member's model with the weights ``fit`` would give it with its seed."""
        models = []
        for cfg in configs:
            if cfg.seed == self.template_cfg.seed:
                set_rng_state(self.init_rng)
            else:  # another seed (a replicate on a pinned split, or data passed in)
                seed_everything(cfg.seed)
            models.append(build_model(cfg, self.data).to(self.device))
        return models

    def append(self, configs: list[RunConfig], *, at: int | None = None) -> None:
        """Members joining at epoch 0 (a refill) on tick ``at`` (None: the next), as new
        stacked rows: their weights, Adam state, clipping and random stream as a solo
        ``fit`` starts them. Nothing of the running members changes (their streams are
        their own generators; the global random state, which only model building reads,
        is reset for each new model)."""
        at = self.tick if at is None else at
        models = self._initial_models(configs)
        params, buffers = stack_module_state(models)
        new = {n: params[n].detach().clone() for n in self.names}
        self.params = {n: torch.cat([p, new[n]]) for n, p in self.params.items()}
        self.buffers = {n: torch.cat([b, buffers[n].clone()]) for n, b in self.buffers.items()}
        self.adam.append(new, configs, self.plan.batches_per_epoch)
        self.grad_clip = torch.cat([self.grad_clip, self._tensor(
            [c.optim.grad_clip for c in configs], torch.float32)])
        for cfg in configs:
            m = _Member(len(self.members), cfg, RunProgress(cfg), stream=(cfg.seed, at))
            self.members.append(m)
            self.active.append(m.index)
            if m.stream not in self.generators:
                self.generators[m.stream] = make_generator(cfg.seed, self.device)

    def _tensor(self, values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    # -- state of one member, in the solo trainer's formats ---------------------------

    def member_state(self, row: int) -> ModelState:
        state = {n: p[row].detach().clone() for n, p in self.params.items()}
        state.update({n: b[row].clone() for n, b in self.buffers.items()})
        return dict(state)

    def load_scratch(self, state: ModelState) -> StagedVAE:
        self.scratch.load_state_dict(state)
        return self.scratch

    def entry(self, row: int, m: _Member, epoch: int, stage: int) -> dict[str, Any]:
        """Member ``m``'s checkpoint entry after ``epoch``, in the solo trainer's format."""
        optimizer, scheduler = self.adam.member_state_dicts(
            row, self.scratch, m.cfg, self.plan.batches_per_epoch)
        return checkpoint_entry(
            m.cfg, epoch, stage, model=self.member_state(row),
            optimizer=optimizer, scheduler=scheduler, rng=rng_state(self.generators[m.stream]),
            progress=m.progress, error=m.error)

    def checkpoint(self) -> dict[str, Any]:
        """The population's checkpoint: every member's latest entry (a solo checkpoint;
        one that joined since the last epoch as epoch -1, where ``fit`` starts it; a
        pruned one marked), config and join tick, and every stream's generator state."""
        for row, i in enumerate(self.active):
            m = self.members[i]
            if not m.last:
                m.last = self.entry(row, m, -1, epoch_knobs(
                    0, m.cfg, has_zay=self.scratch.has_zay).stage)
        return {"members": [m.last | {"pruned": True} if m.pruned else m.last
                            for m in self.members],
                "configs": [m.cfg.to_dict() for m in self.members],
                "joined": [m.stream[1] for m in self.members],
                "tick": self.tick, "refill_asked": self.asked,
                "streams": [{"seed": seed, "tick": tick, "state": gen.get_state()}
                            for (seed, tick), gen in self.generators.items()]}

    def resume(self, saved: _Saved) -> None:
        """Go on from a checkpoint: the members that joined later join again at their
        ticks, every member's entry is loaded and every live stream's generator set."""
        for cfg, at in zip(saved.configs[self.capacity:], saved.joined[self.capacity:],
                           strict=True):
            self.append([cfg], at=at)
        self.tick, self.asked = saved.tick, saved.asked
        for row, (m, e) in enumerate(zip(self.members, saved.entries, strict=True)):
            m.progress.load(e)
            m.error, m.last, m.final_state = e.get("error"), e, e["model"]
            m.pruned = bool(e.get("pruned", False))
            for name, value in e["model"].items():
                target = self.params if name in self.params else self.buffers
                target[name][row] = value.to(self.device)
            self.adam.load_member_state_dicts(row, self.scratch, m.cfg,
                                              self.plan.batches_per_epoch, e)
            if not m.finished and m.next_epoch != self.tick - m.stream[1]:
                raise ConfigError(
                    f"population checkpoint member {m.index} stands at epoch "
                    f"{m.next_epoch}, not {self.tick - m.stream[1]} (tick {self.tick}, "
                    f"joined at {m.stream[1]}); it was not written by fit_population")
        for m, e in zip(self.members, saved.entries, strict=True):
            if m.finished:
                continue
            if saved.streams is None:  # an old checkpoint: the state is in the entries
                set_rng_state(e["rng"], self.generators[m.stream])
            elif m.stream not in saved.streams:
                raise ConfigError(f"population checkpoint lacks the random stream of "
                                  f"member {m.index}; it was not written by fit_population")
            else:
                self.generators[m.stream].set_state(saved.streams[m.stream])

    # -- one epoch ------------------------------------------------------------------

    def select(self, keep_rows: list[int]) -> None:
        """Keep only the stacked rows ``keep_rows`` (drop the members that finished),
        and the generators of their streams."""
        keep = torch.tensor(keep_rows, dtype=torch.long, device=self.device)
        self.params = {n: p[keep] for n, p in self.params.items()}
        self.buffers = {n: b[keep] for n, b in self.buffers.items()}
        self.adam.select(keep)
        self.grad_clip = self.grad_clip[keep]
        self.active = [self.active[r] for r in keep_rows]
        streams = {self.members[i].stream for i in self.active}
        self.generators = {s: g for s, g in self.generators.items() if s in streams}

    def run_epoch(self) -> tuple[list[_Trained], float]:
        """Train every active member for one epoch, each at its own (members that joined
        later are behind): what each measured, and the seconds the shared batch loop
        took."""
        members = [self.members[i] for i in self.active]
        cfgs = [m.cfg for m in members]
        knobs = [epoch_knobs(m.next_epoch, m.cfg, has_zay=self.scratch.has_zay)
                 for m in members]
        per_member = {
            name: self._tensor([getattr(k, name) for k in knobs], dtype)
            for name, dtype in (("gate", torch.float32), ("capacity", torch.float32),
                                ("beta", torch.float32), ("penalty_weight", torch.float32),
                                ("penalty", torch.bool))}
        for name in KL_WEIGHT_FIELDS.values():  # each member's KL weights
            per_member[name] = self._tensor([getattr(c.model, name) for c in cfgs],
                                            torch.float32)
        frozen = self._tensor([k.frozen for k in knobs], torch.bool)
        receive = {n: torch.where(frozen, torch.tensor(fr, device=self.device),
                                  torch.tensor(op, device=self.device))
                   for n, (op, fr) in self.receives.items()}
        self.step_module.with_penalty = any(k.penalty for k in knobs)

        seeds = sorted({m.stream for m in members})  # the streams, each drawn from once
        stream = self._tensor([seeds.index(m.stream) for m in members], torch.long)
        perms = torch.stack([self.plan.shuffled(self.generators[s]) for s in seeds])
        groups, dims = self.scratch.groups, self.scratch.dims

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
        for start in self.plan.starts():
            b = perms[:, start : start + self.plan.batch_size]
            n = b.shape[1]
            noise = {g: torch.stack([torch.randn((n, dims[g]), generator=self.generators[s],
                                                 device=self.device) for s in seeds])
                     for g in groups}  # per stream: one draw per group, as ``fit`` draws
            if one_stream:
                b, noise = b[0], {g: v[0] for g, v in noise.items()}
            else:
                b, noise = b[stream], {g: v[stream] for g, v in noise.items()}
            x, y, a = self.data.x[b], self.data.y[b], self.data.a[b]
            leaves = {nm: p.detach().requires_grad_(True) for nm, p in self.params.items()}
            stats = batched(leaves, buffers, x, y, a, noise, per_member)
            total = stats["train_loss"]
            finite = torch.isfinite(total)
            torch.where(finite, total, torch.zeros_like(total)).sum().backward()
            grads = {nm: torch.zeros_like(p) if leaves[nm].grad is None else torch.where(
                         receive[nm].view((-1,) + (1,) * (p.dim() - 1)), leaves[nm].grad, 0.0)
                     for nm, p in self.params.items()}
            clip_per_member(grads, self.grad_clip)
            masks = {nm: receive[nm] & finite for nm in self.names}
            self.adam.update(self.params, grads, masks, finite)
            bad += (~finite).long()
            n_done += finite.long() * n
            accumulate(sums, stats, n, keep=finite)
        # One read-back per epoch for all members; float32 sums as ``fit`` reads them.
        keys = list(sums)
        table = torch.stack([*(sums[k].float() for k in keys), n_done.float()]).T.tolist()
        counts = torch.stack([bad, self.adam.n_steps.long()]).T.tolist()
        elapsed = time.perf_counter() - t0
        trained = []
        for i, cfg in enumerate(cfgs):
            n_bad, n_steps = counts[i]
            trained.append(_Trained(
                knobs[i], learning_rate(cfg, n_steps, self.plan.batches_per_epoch), n_bad,
                dict(zip(keys, table[i][:-1], strict=True)), table[i][-1]))
        return trained, elapsed

    def end_epoch(self, trained: list[_Trained], elapsed: float) -> list[int]:
        """Validate each active member, apply ``fit``'s end-of-epoch rules to its row;
        the members whose row was kept."""
        kept = []
        for r, (i, t) in enumerate(zip(self.active, trained, strict=True)):
            m = self.members[i]
            t_val = time.perf_counter()
            val = to_floats(validate_epoch(self.load_scratch(self.member_state(r)), self.data,
                                           m.cfg, capacity=t.knobs.capacity,
                                           beta=t.knobs.beta))
            # the epoch's wall time: the shared batch loop plus this member's validation
            row = epoch_row(t.knobs, lr=t.lr, bad=t.bad, train=t.train, n_done=t.n_done,
                            val=val, seconds=elapsed + time.perf_counter() - t_val)
            if m.after_epoch(row, self.plan.batches_per_epoch, t.knobs,
                             lambda r=r: self.member_state(r)):
                kept.append(i)
            if m.finished:
                m.final_state = self.member_state(r)
        return kept


# -- checkpoints --------------------------------------------------------------------------


@dataclass
class _Saved:
    """A population checkpoint, read and checked: every member's entry, configuration and
    join tick (the initial members first), the tick it was written at, the tick refill
    was last asked at, and the streams' generator states (None: an old checkpoint, whose
    entries hold them)."""

    entries: list[dict[str, Any]]
    configs: list[RunConfig]
    joined: list[int]
    tick: int
    asked: int
    streams: dict[tuple[int, int], torch.Tensor] | None


def load_population_checkpoint(path: str | Path, configs: Sequence[RunConfig]
                               ) -> list[dict[str, Any]]:
    """The members' entries of a population checkpoint (``configs``: the initial
    members; the refilled ones follow, in order of joining), refusing a tampered file
    and other configurations, as ``fit`` refuses a checkpoint.

    Each entry is a solo ``fit`` checkpoint (plus ``error`` for a failed member, ``pruned``
    for one its caller stopped): save one with ``torch.save(entry, dir / "checkpoint.pt")``
    and ``fit(resume=True)`` goes on.
    """
    return _read_population_checkpoint(Path(path), list(configs)).entries


def _read_population_checkpoint(path: Path, configs: list[RunConfig]) -> _Saved:
    ckpt = read_checkpoint(path, "population checkpoint")
    if not isinstance(ckpt, dict) or "members" not in ckpt:
        raise ConfigError(f"{path} is not a stagetune population checkpoint")
    entries = ckpt["members"]
    stored = ckpt.get("configs", [])[len(configs):]  # the refilled members'
    if len(entries) != len(configs) + len(stored):
        raise ConfigError(f"checkpoint {path} holds {len(entries)} members, not "
                          f"{len(configs)}; resume with the same configurations")
    try:
        joined_cfgs = [RunConfig.from_dict(raw) for raw in stored]
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} holds an unreadable configuration: {exc}") from None
    everyone = configs + joined_cfgs
    for k, (entry, cfg) in enumerate(zip(entries, everyone, strict=True)):
        check_checkpoint_config(entry, cfg, f"{path} member {k}")
    # refills join after an epoch, so at tick 0 only the initial members (all of them)
    joined = [int(t) for t in ckpt.get("joined", [0] * len(entries))]
    if len(joined) != len(entries) or [t > 0 for t in joined] != [
            k >= len(configs) for k in range(len(entries))]:
        raise ConfigError(f"checkpoint {path} started with other members than these "
                          f"{len(configs)}; resume with the same configurations")
    streams = ckpt.get("streams")
    return _Saved(entries, everyone, joined,
                  tick=int(ckpt.get("tick", 1 + max(int(e["epoch"]) for e in entries))),
                  asked=int(ckpt.get("refill_asked", -1)),
                  streams=None if streams is None else {
                      (int(st["seed"]), int(st["tick"])): st["state"] for st in streams})


# -- the public entry point ---------------------------------------------------------------


def _check_shared(configs: list[RunConfig], *, shared_data: bool) -> None:
    """Refuse configurations that differ in a field their members must share, naming it."""
    keys = [json.loads(population_key(c, shared_data=shared_data)) for c in configs]
    bad = sorted({n for k in keys for n in k.keys() | keys[0].keys()
                  if k.get(n) != keys[0].get(n)})
    if bad:
        raise ConfigError(
            f"these configurations cannot share one model (they differ in "
            f"{', '.join(bad)}, which members of a population share: only fields declared "
            f"per_member in trainer/_config.py may differ); split them with group_population")


def fit_population(
    configs: Sequence[RunConfig],
    *,
    report: PopulationReportFn | None = None,
    report_epoch: PopulationEpochFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    data: DataBundle | None = None,
    evaluate: bool = True,
    refill: RefillFn | None = None,
    on_result: ResultFn | None = None,
) -> list[FitResult | DivergenceError | Pruned]:
    """Train K configurations that share a model shape as one vectorised model.

    Each member gets what ``fit(configs[k])`` would give it, up to float reassociation:
    its own schedule, batches, noise, optimiser, early stopping and evaluation.

    Args:
        configs: the members; they must share ``population_key`` (see
            ``group_population`` to split a mixed list). Their number is the
            population's capacity.
        report: called as ``report(k, row)`` once per epoch of member ``k``.
        report_epoch: called once per epoch, after ``report``, with that epoch's rows of
            every member still training, ``{k: row}`` (e.g. to average replicates); it
            may return the indices of members to stop now (a scheduler's rung): each
            keeps its rows, gets no final evaluation and frees its slot.
        checkpoint_dir: where ``population.pt`` is written after every epoch (before
            its rows are told) and again after an epoch's refill or stopped members: every
            member's entry, the refilled members' configurations and join ticks, and the
            random streams.
        resume: continue from ``checkpoint_dir/population.pt`` (the same initial
            ``configs`` required; the refilled members come from the file). Slots the
            checkpoint left free are offered to ``refill`` before the first epoch,
            unless it was already asked after the checkpoint's epoch.
        out_dir: each member's analysis files go to ``out_dir/member_<k>``.
        data: an already-loaded data set; members may then differ in seed.
        evaluate: run the final evaluation (``False``: ``final`` holds only the run's
            bookkeeping; for tests and benchmarks of the training loop).
        refill: called after an epoch's bookkeeping (rows told, finished and stopped
            members dropped) whenever slots are free (fewer members training than the
            capacity), as ``refill(free)``; it may return none. The configurations it
            returns (at most ``free``, sharing the members' ``population_key``) start
            at epoch 0 on the next epoch, with their own random streams, as members
            ``len(configs)``, ``len(configs) + 1``, ... in order of joining. It is
            asked again after every later epoch that leaves a slot free.
        on_result: called as ``on_result(k, result)`` with each member's ``FitResult``
            or ``DivergenceError`` (not a pruned one's) at the end of the epoch it ended,
            its final evaluation batched with the members that ended with it, not with
            all at the end; the same results (each draws its own seeded streams; on a
            GPU, whose probes are solved as one problem, to the solver's tolerance).

    Returns:
        One entry per member, in order (the initial ones, then those that joined): its
        ``FitResult``, the ``DivergenceError`` that failed it (the other members are
        unaffected), or ``Pruned`` for a member ``report_epoch`` stopped.

    Raises:
        ConfigError: configs (or a refill's) that cannot share a model, bad
            configuration, missing data, a mismatched checkpoint, or more refilled
            configurations than free slots.
    """
    configs = list(configs)
    if not configs:
        raise ConfigError("fit_population needs at least one configuration")
    shared_data = data is not None
    _check_shared(configs, shared_data=shared_data)
    device, data = prepare_run(configs[0], data)
    pop = _Population(configs, data, device, rng_state())
    ckpt_path = checkpoint_path(checkpoint_dir, POPULATION_CHECKPOINT, resume=resume)
    if resume:
        saved = _read_population_checkpoint(ckpt_path, configs)  # type: ignore[arg-type]
        _check_shared([configs[0], *saved.configs[len(configs):]], shared_data=shared_data)
        pop.resume(saved)

    _train(pop, ckpt_path, report, report_epoch, refill, shared_data=shared_data,
           on_result=on_result, out_dir=out_dir, evaluate=evaluate)
    return _results(pop, out_dir, evaluate=evaluate)


def _train(pop: _Population, ckpt_path: Path | None, report: PopulationReportFn | None,
           report_epoch: PopulationEpochFn | None, refill: RefillFn | None, *,
           shared_data: bool, on_result: ResultFn | None = None,
           out_dir: str | Path | None = None, evaluate: bool = True) -> None:
    """Epochs until no member trains: the checkpoint written, each epoch's rows told,
    the members that finished given their results (with ``on_result``), finished and
    stopped members dropped, freed slots refilled (a resumed population's free slots
    before its first epoch)."""
    _refill(pop, refill, ckpt_path, shared_data=shared_data, stopped=False)
    while pop.active:
        trained, elapsed = pop.run_epoch()
        reported = pop.end_epoch(trained, elapsed)
        pop.tick += 1
        if ckpt_path is not None:
            for r, (i, t) in enumerate(zip(pop.active, trained, strict=True)):
                pop.members[i].last = pop.entry(r, pop.members[i], t.knobs.epoch,
                                                t.knobs.stage)
            save_checkpoint(pop.checkpoint(), ckpt_path)
        stopped = _tell(pop, reported, report, report_epoch)
        if on_result is not None:
            _give_results(pop, on_result, out_dir, evaluate)
        _refill(pop, refill, ckpt_path, shared_data=shared_data, stopped=stopped)


def _give_results(pop: _Population, on_result: ResultFn, out_dir: str | Path | None,
                  evaluate: bool) -> None:
    """The members that finished this epoch (not pruned ones) get their results, one
    batched evaluation, through ``on_result``; kept for ``_results``."""
    done = [pop.members[i] for i in pop.active
            if pop.members[i].finished and not pop.members[i].pruned]
    if done:
        for m, got in zip(done, _member_results(pop, done, out_dir, evaluate), strict=True):
            pop.results[m.index] = got
            on_result(m.index, got)


def _refill(pop: _Population, refill: RefillFn | None, ckpt_path: Path | None, *,
            shared_data: bool, stopped: bool) -> None:
    """Drop the members that finished and offer their slots to ``refill`` (asked once per
    tick); checkpoint again if members joined or were ``stopped``, so that a resumed
    population neither trains a stopped member nor asks for the same slots twice."""
    keep = [r for r, i in enumerate(pop.active) if not pop.members[i].finished]
    if len(keep) < len(pop.active):
        pop.select(keep)
    free = pop.capacity - len(pop.active)
    joining: list[RunConfig] = []
    if refill is not None and free > 0 and pop.asked < pop.tick:
        pop.asked = pop.tick
        joining = list(refill(free))
        if len(joining) > free:
            raise ConfigError(f"refill returned {len(joining)} configurations for "
                              f"{free} free slots")
        if joining:
            _check_shared([pop.template_cfg, *joining], shared_data=shared_data)
            pop.append(joining)
    if ckpt_path is not None and (stopped or joining):
        save_checkpoint(pop.checkpoint(), ckpt_path)


def _tell(pop: _Population, reported: list[int], report: PopulationReportFn | None,
          report_epoch: PopulationEpochFn | None) -> bool:
    """The epoch's rows to the callers; the members ``report_epoch`` stops are pruned
    (whether there were any)."""
    if report is not None:
        for i in reported:
            report(i, dict(pop.members[i].progress.history[-1]))
    if report_epoch is None or not reported:
        return False
    stop = report_epoch({i: dict(pop.members[i].progress.history[-1]) for i in reported})
    stopped = False
    for i in stop or ():
        m = pop.members[i] if i in pop.active else None
        if m is not None and not m.finished:
            m.pruned = stopped = True
    return stopped


def _results(pop: _Population, out_dir: str | Path | None, *,
             evaluate: bool) -> list[FitResult | DivergenceError | Pruned]:
    """Every member's result: its final evaluation on its best (else last) state, its
    failure, or ``Pruned``; those ``on_result`` was given already as they were."""
    left = [m for m in pop.members if not m.pruned and m.index not in pop.results]
    got = dict(zip((m.index for m in left), _member_results(pop, left, out_dir, evaluate),
                   strict=True))
    return [Pruned([dict(r) for r in m.progress.history], m.next_epoch) if m.pruned
            else pop.results[m.index] if m.index in pop.results else got[m.index]
            for m in pop.members]


def _member_results(pop: _Population, members: list[_Member], out_dir: str | Path | None,
                    evaluate: bool) -> list[FitResult | DivergenceError]:
    """The results of ``members`` (none pruned): one batched final evaluation of those
    that trained without failing, on each one's best (else last) state."""
    trained_ok = [m for m in members if m.error is None]
    analyses = (final_analyses(pop.scratch, pop.data, [
        (m.cfg, m.progress.best_state if m.progress.best_state is not None else m.final_state)
        for m in trained_ok]) if evaluate else [{"metrics": {}} for _ in trained_ok])
    by_member = dict(zip((m.index for m in trained_ok), analyses, strict=True))
    out: list[FitResult | DivergenceError] = []
    for m in members:
        if m.error is not None:
            out.append(DivergenceError(m.error))
        elif isinstance(by_member[m.index], DivergenceError):
            out.append(by_member[m.index])
        else:
            out.append(m.progress.result(
                by_member[m.index],
                Path(out_dir) / f"member_{m.index}" if out_dir is not None else None))
    return out

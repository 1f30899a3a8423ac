"""The staged training loop: ``fit(config, *, report, checkpoint_dir)``.

A driver for one model over the pieces it shares with ``trainer._population``
(``_setup``, ``_schedule``, ``_step``, ``_optimiser``, ``_validation``, ``_progress``,
``_checkpoints``, ``_final_evaluation``). One forward pass per training batch; the
loss, the independence penalty and the training accuracies all reuse it. Batch
statistics stay on the device and are read back once per epoch. The loop knows nothing
of logging or search: it calls ``report``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainer._checkpoints import (
    check_checkpoint_config,
    checkpoint_entry,
    checkpoint_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainer._config import RunConfig
from trainer._data import DataBundle
from trainer._final_evaluation import final_analyses
from trainer._model import staged_loss
from trainer._optimiser import clip_gradients, make_optimiser
from trainer._progress import DivergenceError, FitResult, RunProgress, epoch_row, to_floats
from trainer._schedule import EpochKnobs, epoch_knobs
from trainer._setup import BatchPlan, build_model, make_generator, prepare_run, resolve_device
from trainer._step import accumulate, batch_statistics
from trainer._validation import validate_epoch

# what other modules have always imported from here
__all__ = [
    "CHECKPOINT_NAME", "DivergenceError", "FitResult", "ReportFn", "RunProgress",
    "build_model", "check_checkpoint_config", "fit", "load_checkpoint", "resolve_device",
    "validate_epoch",
]

ReportFn = Callable[[dict[str, float]], None]
BatchFn = Callable[[int, int, int], None]
CHECKPOINT_NAME = "checkpoint.pt"


class _SoloRun:
    """One model, its optimiser and its generator: what ``fit`` trains."""

    def __init__(self, cfg: RunConfig, data: DataBundle, device: torch.device) -> None:
        self.cfg, self.data = cfg, data
        self.model = build_model(cfg, data).to(device)
        self.plan = BatchPlan.of(cfg, data)
        self.opt, self.sched = make_optimiser(self.model, cfg, self.plan.batches_per_epoch)
        self.gen = make_generator(cfg.seed, device)
        self.progress = RunProgress(cfg)

    def resume(self, path: Path) -> int:
        """Continue from the checkpoint at ``path``; the epoch to start at."""
        ckpt = load_checkpoint(path, self.cfg)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], self.gen)
        self.progress.load(ckpt)
        return ckpt["epoch"] + 1

    def train_epoch(self, knobs: EpochKnobs, on_batch: BatchFn | None
                    ) -> tuple[dict[str, torch.Tensor], int, int]:
        """One epoch of optimiser steps: the device sums of its finite batches, how
        many samples those held, and how many batches were skipped as non-finite."""
        model, data, cfg = self.model, self.data, self.cfg
        model.train()
        perm = self.plan.shuffled(self.gen)
        sums: dict[str, torch.Tensor] = {}
        n_done = bad = 0
        for i, start in enumerate(self.plan.starts()):
            b = perm[start : start + self.plan.batch_size]
            x, y, a = data.x[b], data.y[b], data.a[b]
            out = model(x, zay_gate=knobs.gate, zay_frozen=knobs.frozen, generator=self.gen)
            terms = staged_loss(model, out, x, y, a, cfg, capacity=knobs.capacity,
                                beta_scale=knobs.beta, with_penalty=knobs.penalty,
                                penalty_weight=knobs.penalty_weight)
            self.opt.zero_grad(set_to_none=True)
            if not torch.isfinite(terms.total):
                bad += 1
                continue
            terms.total.backward()
            clip_gradients(model, cfg.optim.grad_clip)
            self.opt.step()
            self.sched.step()
            accumulate(sums, batch_statistics(terms, out, y, a), b.numel())
            n_done += b.numel()
            if on_batch is not None:
                on_batch(knobs.epoch, i + 1, self.plan.batches_per_epoch)
        return sums, n_done, bad

    def epoch(self, epoch: int, on_batch: BatchFn | None) -> tuple[EpochKnobs, dict[str, float]]:
        """Train and validate one epoch; its schedule and its row."""
        t0 = time.perf_counter()
        knobs = epoch_knobs(epoch, self.cfg, has_zay=self.model.has_zay)
        sums, n_done, bad = self.train_epoch(knobs, on_batch)
        val = validate_epoch(self.model, self.data, self.cfg, capacity=knobs.capacity,
                             beta=knobs.beta)
        read = to_floats(sums | val)  # one host sync per epoch: everything it measured
        row = epoch_row(knobs, lr=self.opt.param_groups[0]["lr"], bad=bad,
                        train={k: read[k] for k in sums}, n_done=n_done,
                        val={k: read[k] for k in val}, seconds=time.perf_counter() - t0)
        self.progress.end_epoch(
            row, bad=bad, batches_per_epoch=self.plan.batches_per_epoch, epoch=epoch,
            stage=knobs.stage,
            state=lambda: {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return knobs, row

    def save(self, knobs: EpochKnobs, path: Path) -> None:
        save_checkpoint(checkpoint_entry(
            self.cfg, knobs.epoch, knobs.stage, model=self.model.state_dict(),
            optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(),
            rng=rng_state(self.gen), progress=self.progress), path)


def fit(
    config: RunConfig,
    *,
    report: ReportFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    data: DataBundle | None = None,
    on_batch: BatchFn | None = None,
) -> FitResult:
    """Train one staged run and evaluate it.

    Args:
        config: the whole configuration.
        report: called once per epoch with a flat ``dict[str, float]``.
        checkpoint_dir: where ``checkpoint.pt`` is written after every epoch.
        resume: continue from ``checkpoint_dir/checkpoint.pt`` (same config required).
        out_dir: where the final analysis files and plots go (none if ``None``).
        data: an already-loaded data set (tests and benchmarks); loaded by name if None.
        on_batch: called after every batch with ``(epoch, batches_done, batches_per_epoch)``
            (a progress bar; nothing is read back from the device for it).

    Returns:
        The history, the final metrics and the disentanglement analysis.

    Raises:
        ConfigError: bad configuration, missing data or a mismatched checkpoint.
        DivergenceError: the loss kept being non-finite.
    """
    cfg = config
    device, data = prepare_run(cfg, data)
    run = _SoloRun(cfg, data, device)
    ckpt_path = checkpoint_path(checkpoint_dir, CHECKPOINT_NAME, resume=resume)
    start_epoch = run.resume(ckpt_path) if resume else 0  # type: ignore[arg-type]
    for epoch in range(start_epoch, cfg.optim.epochs):
        if run.progress.stopped_early:
            break
        knobs, row = run.epoch(epoch, on_batch)
        if ckpt_path is not None:
            run.save(knobs, ckpt_path)
        if report is not None:
            report(dict(row))
    [analysis] = final_analyses(run.model, data, [(cfg, run.progress.best_state)])
    if isinstance(analysis, DivergenceError):  # noted as raised in the evaluation
        raise analysis
    return run.progress.result(analysis, out_dir)

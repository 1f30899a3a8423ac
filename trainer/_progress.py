"""A run's epochs as rows, and what it keeps of them: the end-of-epoch rules.

``epoch_row`` builds an epoch's row (schedule, training means, validation, timing) from
device sums read back once (``to_floats``); ``RunProgress`` applies the rules at the end
of each epoch (divergence, early stopping, the best weights) and turns the run into its
``FitResult``. ``fit`` keeps one ``RunProgress``; ``fit_population`` keeps one per member.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer._config import EARLY_STOPPING_METRICS, ConfigError, RunConfig
from trainer._schedule import EpochKnobs

ModelState = dict[str, torch.Tensor]


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

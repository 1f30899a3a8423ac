"""The schedule of one epoch of one config: stage, zay's capacity and gate, the beta
scale, the penalty's switch and weight, zay's freezing (from ``trainer._stages``)."""

from __future__ import annotations

from dataclasses import dataclass

from trainer._config import RunConfig
from trainer._stages import beta_scale, penalty_active, stage_of, zay_capacity


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

"""The three-stage schedule: which stage an epoch is in, and zay's capacity c.

Epochs are counted from 0. Stage 1 is ``[0, s1)``, stage 2 ``[s1, s1 + s2)`` and
stage 3 the rest. Without staged training every epoch is stage 3 with c = 1.
"""

from __future__ import annotations

from trainer._config import RunConfig


def stage_of(epoch: int, cfg: RunConfig) -> int:
    """The stage (1, 2 or 3) of a 0-based epoch."""
    if epoch < cfg.stage1_epochs:
        return 1
    if epoch < cfg.stage3_start:
        return 2
    return 3


def zay_capacity(epoch: int, cfg: RunConfig) -> float:
    """zay's capacity c at a 0-based epoch.

    Stage 1: ``stage1_capacity`` (0.01) for the KL modes, exactly 0 for ``gate``, whose
    point is that zay is cut out. Stage 2: ``stage_epoch / max(1, stage2_epochs - 1)``,
    a linear ramp from 0 to 1. Stage 3: 1.
    """
    stage = stage_of(epoch, cfg)
    if stage == 1:
        return 0.0 if cfg.stages.zay_suppression == "gate" else cfg.stages.stage1_capacity
    if stage == 2:
        stage_epoch = epoch - cfg.stage1_epochs
        return min(1.0, stage_epoch / max(1, cfg.stage2_epochs - 1))
    return 1.0


def penalty_active(epoch: int, cfg: RunConfig) -> bool:
    """Whether the independence penalty is in the loss at this epoch."""
    if not cfg.stages.use_independence_penalty or cfg.stages.independence_penalty == 0:
        return False
    if cfg.model.variant == "diva":
        return False
    stage = stage_of(epoch, cfg)
    return stage == 2 or (stage == 3 and cfg.stages.penalty_in_stage3)


def beta_scale(epoch: int, cfg: RunConfig) -> float:
    """Global KL weight: 1, or a linear warm-up over ``beta_anneal_epochs`` when annealing."""
    if not cfg.optim.beta_annealing:
        return 1.0
    return min(1.0, (epoch + 1) / max(1, cfg.optim.beta_anneal_epochs))

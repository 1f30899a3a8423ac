"""What one batch step measures: its training columns, and their sums over an epoch.

The step's loss terms are ``trainer._model.staged_loss`` (the independence penalty
included); the sums stay on the device until the epoch's one read-back.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer._model import LossTerms


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

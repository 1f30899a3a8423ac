"""The scheduler's per-epoch score follows the chosen disentanglement metric."""

from __future__ import annotations

import pytest

from search.objective import EPOCH_PROXIES, Objective
from trainer.objectives import DISENTANGLEMENT_OBJECTIVES, direction


def test_every_selectable_metric_has_its_own_proxy():
    names = [EPOCH_PROXIES[m] for m in DISENTANGLEMENT_OBJECTIVES]
    assert len(set(names)) == len(names)
    assert "disentanglement_score" in DISENTANGLEMENT_OBJECTIVES


@pytest.mark.parametrize("metric", DISENTANGLEMENT_OBJECTIVES)
def test_epoch_score_reads_the_chosen_metrics_proxy(metric):
    objective = Objective(mode="scalar", disentanglement=metric, weight=1.0)
    row = {"val_acc_y": 0.5} | {p: 0.1 for p in EPOCH_PROXIES.values() if p != "val_acc_y"}
    row[EPOCH_PROXIES[metric]] = 0.8
    expected = 0.8 if direction(metric) == "maximize" else 1.0 - 0.8
    assert objective.epoch_score(row) == pytest.approx(expected)
    # without its own proxy there is no score (never another metric's)
    del row[EPOCH_PROXIES[metric]]
    assert objective.epoch_score(row) is None

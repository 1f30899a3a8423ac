"""Group DCI and exclusivity on hand-made matrices."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import (
    exclusivity_scores,
    group_dci,
)


def test_group_dci_and_exclusivity_on_hand_made_matrices():
    f, g = ["y", "a", "s", "r"], ["zy", "za", "zay", "zx"]
    fg = dict(zip(f, g, strict=True))
    ideal = group_dci(np.eye(4), f, g, fg)
    assert ideal == {"dci_disentanglement": 1.0, "dci_completeness": 1.0,
                     "dci_informativeness": 1.0}
    flat = group_dci(np.full((4, 4), 0.7), f, g, fg)
    assert flat["dci_disentanglement"] == pytest.approx(0.0, abs=1e-12)
    assert flat["dci_completeness"] == pytest.approx(0.0, abs=1e-12)
    assert flat["dci_informativeness"] == pytest.approx(0.7)
    # DCI cannot see *which* group holds a factor; exclusivity can
    swapped = np.eye(4)[[1, 0, 2, 3]]  # y in za, a in zy
    assert group_dci(swapped, f, g, fg)["dci_disentanglement"] == 1.0
    excl = exclusivity_scores(swapped, f, g, fg)
    assert excl["y"] == 0.0 and excl["a"] == 0.0 and excl["s"] == 1.0
    m = np.eye(4) * 0.9
    m[0, 2] = 0.4
    assert exclusivity_scores(m, f, g, fg)["y"] == pytest.approx(0.5)

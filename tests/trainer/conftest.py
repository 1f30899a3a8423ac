from __future__ import annotations

import pytest

from trainer import RunConfig


def tiny_config(**flat) -> RunConfig:
    """A run that trains the whole staged loop on CPU in about a second."""
    base = dict(
        epochs=6, stage1_epochs=2, stage2_epochs=2, staged_training=True,
        max_samples=80, image_size=8, hidden_dim=32, zy_dim=4, za_dim=4, zay_dim=4,
        zx_dim=4, batch_size=64, device="cpu", write_plots=False, eval_max_samples=500,
    )
    base.update(flat)
    return RunConfig().replace(**base)


@pytest.fixture
def tiny():
    return tiny_config

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


class Interrupt(Exception):
    """Raised from a report callback to cut a run short, as a crash would."""


def interrupted_then_resumed(cfg: RunConfig, folder, *, stop_epoch: int):
    """Run ``cfg`` into ``folder`` until ``stop_epoch`` ends, then resume it to the end."""
    from trainer import fit

    def stop(row):
        if row["epoch"] == stop_epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(cfg, checkpoint_dir=folder, report=stop)
    return fit(cfg, checkpoint_dir=folder, resume=True)


def interrupted_population(configs, folder, *, stop_epoch: int) -> None:
    """Train ``configs`` as a population checkpointing into ``folder`` until a member
    ends ``stop_epoch``, then cut it short (no final evaluation)."""
    from trainer import fit_population

    def stop(k, row):
        if row["epoch"] == stop_epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit_population(configs, checkpoint_dir=folder, report=stop, evaluate=False)


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture
def one_thread():
    """One torch thread: tiny models gain nothing from two, and on a shared 2-core
    machine two threads per process oversubscribe it several times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

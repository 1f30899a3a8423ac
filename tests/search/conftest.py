from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from search.driver.sweep import SweepOptions
from search.space import SearchSpace
from trainer import RunConfig

TINY_TRIAL = dict(
    # 60 samples: the evaluation's probes need a few per class (40 made them raise)
    epochs=4, staged_training=True, max_samples=60, image_size=8, hidden_dim=32, zy_dim=4,
    za_dim=4, zay_dim=4, zx_dim=4, batch_size=64, eval_max_samples=300, write_plots=False,
    device="cpu",
)


def tiny_options(storage: str, study: str, n_trials: int, tmp_path: Path, **kw) -> SweepOptions:
    base = RunConfig().replace(**TINY_TRIAL).to_dict()
    return SweepOptions(storage=storage, study=study, n_trials=n_trials, base_config=base,
                        space=SearchSpace(epochs=4, stage1_epochs=(0, 4),
                                          stage2_epochs=(0, 4)),
                        sampler="random", seed=0, cpus_per_trial=1, num_cpus=2,
                        tune_dir=str(tmp_path / "tune"), quiet=True, **kw)


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()

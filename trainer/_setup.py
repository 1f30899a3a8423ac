"""A run's set-up: device, seeded generators, data, model, and how an epoch walks the
training split (``BatchPlan``)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from trainer._config import ConfigError, RunConfig
from trainer._data import DataBundle, check_evaluable, load_dataset
from trainer._model import StagedVAE, resolve_arch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def prepare_run(cfg: RunConfig, data: DataBundle | None) -> tuple[torch.device, DataBundle]:
    """The device, the seeded global generators and the data set (loaded by name if
    ``data`` is None, checked for the evaluation, moved to the device)."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if data is None:
        data = load_dataset(cfg.data, cfg.data_seed)
    check_evaluable(data, cfg.data.dataset)
    if cfg.optim.early_stopping_metric == "val_acc_y_val_domain" and not data.split_size(
            "val_domain"):
        raise ConfigError(
            "early_stopping_metric val_acc_y_val_domain needs a val_domain split, and "
            "the data given has none (load it with --val_domain K)"
        )
    data.to(device)
    return device, data


def build_model(cfg: RunConfig, data: DataBundle) -> StagedVAE:
    """The run's model, with ``--arch auto`` resolved to the data set's default."""
    return StagedVAE(
        cfg.model, input_shape=data.input_shape, n_classes=data.n_classes,
        n_domains=data.n_domains, arch=resolve_arch(cfg),
    )


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A run's own stream: the batch order and the posterior noise."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@dataclass(frozen=True)
class BatchPlan:
    """How an epoch walks the training split."""

    train_idx: torch.Tensor
    batch_size: int

    @classmethod
    def of(cls, cfg: RunConfig, data: DataBundle) -> BatchPlan:
        train_idx = data.splits["train"]
        return cls(train_idx, min(cfg.optim.batch_size, train_idx.numel()))

    @property
    def n_train(self) -> int:
        return self.train_idx.numel()

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)

    def starts(self) -> range:
        return range(0, self.n_train, self.batch_size)

    def shuffled(self, gen: torch.Generator) -> torch.Tensor:
        """The epoch's order of the training indices (one ``randperm`` from ``gen``)."""
        return self.train_idx[torch.randperm(self.n_train, generator=gen,
                                             device=self.train_idx.device)]

from __future__ import annotations

import pytest
import torch

from tests.trainer.metrics.known import known_inputs, scores
from trainer import RunConfig, load_dataset
from trainer._evaluation import evaluate
from trainer._fit import build_model


@pytest.fixture(scope="module")
def oracle():
    return scores(known_inputs())


@pytest.fixture(scope="module")
def digits():
    cfg = RunConfig().replace(max_samples=300, device="cpu", write_plots=False)
    return cfg, load_dataset(cfg.data, 0)


@pytest.fixture(scope="module")
def untrained(digits):
    cfg, data = digits
    torch.manual_seed(0)
    model = build_model(cfg, data)
    return model, evaluate(model, data, cfg)["metrics"]

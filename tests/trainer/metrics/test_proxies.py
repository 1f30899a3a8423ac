"""The per-epoch proxies follow the final metrics on known latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.metrics.known import (
    FACTOR_GROUPS,
    factors,
    latents,
)
from trainer._fit import validate_epoch
from trainer.metrics import (
    epoch_proxies,
)


def test_epoch_proxies_follow_the_final_metrics_on_known_latents():
    rng = np.random.default_rng(4)
    f = factors(rng, 1000)
    half = torch.arange(1000) % 2 == 0
    targets = {"y": (torch.from_numpy(f["y"]), 10), "a": (torch.from_numpy(f["a"]), 6),
               "s": (torch.from_numpy(f["s"]), 2),
               "hue_residual": (torch.from_numpy(f["hue_residual"]), None)}

    def proxies(mode):
        lat = {k: torch.from_numpy(v) for k, v in latents(rng, f, mode).items()}
        return {k: float(v) for k, v in epoch_proxies(lat, targets, FACTOR_GROUPS, half).items()}

    good, copy, leaky = proxies("interaction"), proxies("permuted_zy"), proxies("s_plus_y")
    assert good["val_disentanglement_score"] >= 0.8
    assert good["val_zay_independence"] >= 0.95 and good["val_zay_label_leakage"] <= 0.05
    assert copy["val_zay_independence"] <= 0.55
    assert copy["val_zay_nonlinear_independence"] <= 0.6
    assert leaky["val_zay_label_leakage"] >= 0.9
    assert leaky["val_disentanglement_score"] <= good["val_disentanglement_score"] - 0.2
    zeros = {k: torch.from_numpy(v) for k, v in latents(rng, f, "zeros").items()}
    assert float(epoch_proxies(zeros, targets, FACTOR_GROUPS, half)[
        "val_disentanglement_score"]) == 0.0


def test_epoch_proxies_read_posterior_samples():
    rng = np.random.default_rng(6)
    f = factors(rng, 1000)
    half = torch.arange(1000) % 2 == 0
    targets = {"y": (torch.from_numpy(f["y"]), 10), "a": (torch.from_numpy(f["a"]), 6),
               "s": (torch.from_numpy(f["s"]), 2)}
    groups = {"y": "zy", "a": "za", "s": "zay"}
    lat = {k: torch.from_numpy(v) for k, v in latents(rng, f, "y_only").items()}
    lat["zay"] = 1e-3 * lat["zay"]  # a copy of y, far below unit posterior noise
    unit = {g: torch.ones_like(v) for g, v in lat.items()}
    on_means = epoch_proxies(lat, targets, groups, half)
    on_samples = epoch_proxies(lat, targets, groups, half, std=unit)
    assert float(on_means["val_zay_label_leakage"]) >= 0.9
    assert float(on_samples["val_zay_label_leakage"]) <= 0.05
    assert float(on_samples["val_disentanglement_score"]) == 0.0  # zay transmits nothing
    # the oracle under noise a tenth of its signal: alive, and scored as on its means
    good = {k: torch.from_numpy(v) for k, v in latents(rng, f).items()}
    small = {g: torch.full_like(v, 0.01) for g, v in good.items()}
    good_samples = epoch_proxies(good, targets, groups, half, std=small)
    assert float(good_samples["val_disentanglement_score"]) == pytest.approx(
        float(epoch_proxies(good, targets, groups, half)["val_disentanglement_score"]),
        abs=0.02)
    assert float(good_samples["val_disentanglement_score"]) >= 0.8


def test_validate_epoch_reports_every_proxy(digits, untrained):
    cfg, data = digits
    model, _ = untrained
    row = validate_epoch(model, data, cfg, capacity=1.0, beta=1.0)
    for key in ("val_zay_independence", "val_zay_nonlinear_independence",
                "val_zay_label_leakage", "val_disentanglement_score"):
        assert 0.0 <= float(row[key]) <= 1.0
    assert float(row["val_disentanglement_score"]) <= 0.3  # untrained

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
from trainer import RunConfig
from trainer._bundle import DataBundle, make_splits
from trainer._fit import build_model, validate_epoch
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
    # the oracle: each factor read from its own group alone, zay independent of zy and za
    assert good["val_disentanglement_score"] == pytest.approx(1.0, abs=0.01)
    assert good["val_zay_independence"] == pytest.approx(1.0, abs=0.01)
    assert good["val_zay_nonlinear_independence"] == pytest.approx(1.0, abs=0.01)
    assert good["val_zay_label_leakage"] == pytest.approx(0.0, abs=0.02)
    # zay a permuted copy of zy: fully dependent on zy, not on za (1 - (1 + 0) / 2), leaks
    # y fully; y and s are no longer exclusive to their groups, a and the residual are
    for key in ("val_zay_independence", "val_zay_nonlinear_independence"):
        assert copy[key] == pytest.approx(0.5, abs=0.01)
    assert copy["val_zay_label_leakage"] == 1.0
    assert copy["val_disentanglement_score"] == pytest.approx((0 + 1 + 0 + 1) / 4, abs=0.01)
    # zay holds s and a copy of zy: y alone loses its exclusivity
    assert leaky["val_zay_label_leakage"] == 1.0
    assert leaky["val_disentanglement_score"] == pytest.approx((0 + 1 + 1 + 1) / 4, abs=0.01)
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


def _labels_as_pixels() -> tuple[RunConfig, DataBundle]:
    """Five "pixels" per input: one-hot y (2 classes) and one-hot a (3 domains), every
    (y, a) pair on both probe halves (sources of even and odd id)."""
    cfg = RunConfig().replace(domains=(0.0, 15.0, 30.0), device="cpu", hidden_dim=8,
                              zy_dim=5, za_dim=5, zay_dim=5, zx_dim=5)
    i = np.arange(240)
    y, a = (i // 2) % 2, (i // 4) % 3
    x = torch.tensor(np.concatenate([np.eye(2)[y], np.eye(3)[a]], 1),
                     dtype=torch.float32)[:, :, None, None]
    return cfg, DataBundle(x=x, y=torch.from_numpy(y), a=torch.from_numpy(a), n_classes=2,
                           n_domains=3, splits=make_splits(a, cfg.data, seed=0))


@torch.no_grad()
def _every_group_a_copy_of_the_pixels(cfg: RunConfig, data: DataBundle):
    """An MLP model whose four groups all hold mu = 3 x (through the encoders' ReLU layers:
    x >= 0 passes them unchanged) at the smallest posterior scale, exp(-10 / 2); q(y|zy)
    reads zy's two y dimensions, q(a|za) is all zeros (every domain equally likely)."""
    model = build_model(cfg, data)
    for group in model.groups:
        first, second, last = (m for m in model.encoders[group] if isinstance(m, torch.nn.Linear))
        for layer in (first, second, last):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[:5, :5] = torch.eye(5)
        second.weight[:5, :5] = torch.eye(5)
        last.weight[:5, :5] = 3 * torch.eye(5)  # the means
        last.bias[5:] = -10.0  # the log-variances, at their floor
    for head in (model.head_y, model.head_a):
        head.weight.zero_()
        head.bias.zero_()
    model.head_y.weight[:, :2] = torch.eye(2)
    return model


def test_validate_epoch_reports_every_proxy_on_groups_that_all_copy_both_labels():
    """Every group holds y and a (zay a copy of zy), far above its posterior noise: zay
    leaks each label fully and is not independent of zy or za; every factor is read as
    well from another group as from its own, so no exclusivity is left; zay transmits,
    so it is not collapsed. q(y|zy) reads y; q(a|za)'s equal logits pick domain 0."""
    cfg, data = _labels_as_pixels()
    model = _every_group_a_copy_of_the_pixels(cfg, data)
    row = {k: float(v) for k, v in validate_epoch(model, data, cfg, capacity=1.0,
                                                  beta=1.0).items()}
    assert set(row) == {"val_loss", "val_acc_y", "val_acc_a", "val_zay_independence",
                        "val_zay_nonlinear_independence", "val_zay_label_leakage",
                        "val_disentanglement_score", "val_zay_collapsed"}
    val = data.splits["val"]
    assert row["val_acc_y"] == 1.0
    assert row["val_acc_a"] == pytest.approx(float((data.a[val] == 0).double().mean()),
                                             rel=1e-6)
    assert row["val_zay_label_leakage"] == 1.0
    assert row["val_disentanglement_score"] == 0.0
    assert row["val_zay_collapsed"] == 0.0
    # noise of sd e^-5 on signals of sd ~1.4: CKA and HSIC of near copies are 1 - O(1e-5)
    assert row["val_zay_independence"] == pytest.approx(0.0, abs=1e-3)
    assert row["val_zay_nonlinear_independence"] == pytest.approx(0.0, abs=1e-3)

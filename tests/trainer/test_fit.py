from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.trainer.conftest import interrupted_then_resumed, tiny_config
from trainer import ConfigError, DivergenceError, fit, load_dataset
from trainer._fit import build_model, validate_epoch

pytestmark = pytest.mark.usefixtures("one_thread")

#: float32 unit roundoff
U32 = 2.0**-24
#: a run that learns the digits' class: 300 source digits leave 45 per held-out split,
#: enough for a chance bound (below) well under what 12 epochs at lr 3e-3 reach
LEARNING = dict(epochs=12, stage1_epochs=4, stage2_epochs=4, max_samples=300, lr=3e-3)


def above_chance(cfg, data, split: str, alpha: float = 1e-3) -> float:
    """An accuracy on ``split`` that a classifier ignoring the image exceeds with
    probability below ``alpha``.

    Such a classifier is right on a source digit with probability at most ``p0``, the
    largest class share of the digits set its sources are drawn from at random. Each
    source is in every domain, so the split's accuracy is the mean over its n sources of
    their accuracies, independent values in [0, 1] with mean at most ``p0`` however the
    rotations of one digit agree; Hoeffding: P(acc >= p0 + t) <= exp(-2 n t^2).
    """
    from sklearn.datasets import load_digits

    p0 = np.bincount(load_digits().target).max() / len(load_digits().target)
    n = len(np.unique(data.source[data.splits[split]].numpy()))
    # the evaluation reads the whole split: whole sources, each in every domain
    assert data.n_domains * n == data.split_size(split) <= cfg.eval_max_samples
    return p0 + math.sqrt(math.log(1 / alpha) / (2 * n))


def test_report_gets_one_flat_float_dict_per_epoch():
    cfg = tiny_config()  # 6 epochs: stage 1 in epochs 0-1, stage 2 in 2-3, stage 3 in 4-5
    rows = []
    result = fit(cfg, report=rows.append)
    assert rows == result.history
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 3, 3]
    # gate mode: c = 0 in stage 1, the ramp e / (s2 - 1) = 0, 1 over stage 2, 1 in stage 3
    assert [r["capacity"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert [r["penalty_active"] for r in rows] == [0, 0, 1, 1, 0, 0]
    assert [r["beta_scale"] for r in rows] == [1.0] * 6  # no annealing
    # 80 sources leave 80 - 2 * round(0.15 * 80) = 56 for training, 336 samples in six
    # domains: 6 batches of 64, so the one-epoch warm-up has ended after the first epoch
    n_train = load_dataset(cfg.data, cfg.seed).split_size("train")
    assert n_train == 56 * 6 and math.ceil(n_train / 64) == 6
    assert [r["lr"] for r in rows] == [cfg.optim.lr] * 6
    assert [r["bad_batches"] for r in rows] == [0.0] * 6
    assert [r["stopped_early"] for r in rows] == [0.0] * 6  # patience 10 > 2 stage-3 epochs
    m = cfg.model
    for row in rows:
        assert all(isinstance(v, float) for v in row.values())
        for key in ("train_loss", "train_kl_zay", "train_penalty", "val_loss", "val_acc_y",
                    "val_zay_independence", "train_acc_y"):
            assert key in row and math.isfinite(row[key])
        # gate mode: zay's term is beta_ay * KL_zay with beta_ay = 1, the same number
        assert row["train_kl_zay_term"] == row["train_kl_zay"]
        # the loss is the sum of its logged terms with the config's weights: each side is
        # 6 batches' float32 sums of positive terms, a few dozen roundings of at most U32
        parts = (m.recon_weight * row["train_recon"] + m.beta_y * row["train_kl_zy"]
                 + m.beta_a * row["train_kl_za"] + m.beta_x * row["train_kl_zx"]
                 + row["train_kl_zay_term"] + m.alpha_y * row["train_ce_y"]
                 + m.alpha_a * row["train_ce_a"]
                 + cfg.stages.independence_penalty * row["train_penalty"])
        assert row["train_loss"] == pytest.approx(parts, rel=64 * U32)
    # the penalty is in the loss in stage 2 only
    assert [r["train_penalty"] > 0 for r in rows] == [False, False, True, True, False, False]
    assert [r["train_penalty"] for r in rows if not r["penalty_active"]] == [0.0] * 4
    assert result.final["final_stage"] == 3.0 and result.final["epochs_run"] == 6.0


def test_training_learns_the_class():
    cfg = tiny_config(**LEARNING)
    result = fit(cfg)
    data = load_dataset(cfg.data, cfg.seed)
    for split in ("val", "test"):
        assert result.final[f"acc_y_{split}"] > above_chance(cfg, data, split), split
    # the same model untrained (fit's seed, fit's data) scores a higher stage-3 loss
    last = result.history[-1]
    assert (last["stage"], last["capacity"], last["beta_scale"]) == (3, 1, 1)
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg, data)
    before = validate_epoch(untrained, data, cfg, capacity=1.0, beta=1.0)
    assert last["val_loss"] < float(before["val_loss"])
    assert result.final["acc_y_val"] > float(before["val_acc_y"])


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = tiny_config()
    whole = fit(cfg, checkpoint_dir=tmp_path / "whole")

    resumed = interrupted_then_resumed(cfg, tmp_path / "cut", stop_epoch=2)
    assert resumed.history == [
        {k: v for k, v in row.items() if k not in ("epoch_time_s", "samples_per_s")}
        | {k: r2[k] for k in ("epoch_time_s", "samples_per_s")}
        for row, r2 in zip(whole.history, resumed.history, strict=True)
    ]
    for key, value in whole.final.items():
        assert resumed.final[key] == value, key
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    fit(tiny_config(epochs=3, stage1_epochs=1, stage2_epochs=1), checkpoint_dir=tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="another configuration.*lr"):
        fit(tiny_config(epochs=3, stage1_epochs=1, stage2_epochs=1, lr=0.1),
            checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_early_stopping_never_stops_before_stage3():
    # Adam moves a weight by about lr = 1e-30 a step, below float32's resolution at any
    # initial weight: the validation loss stays put within a stage, so patience 1 would
    # stop at epoch 1 if stage 1 counted. Stage 3 starts at epoch 3 + 3 = 6: its first
    # loss is the best, epoch 7 does not improve on it, and the run stops there, 2
    # epochs short of its 10.
    cfg = tiny_config(epochs=10, stage1_epochs=3, stage2_epochs=3, patience=1, lr=1e-30)
    result = fit(cfg)
    losses = [r["val_loss"] for r in result.history]
    assert losses[0] == losses[1] == losses[2] and losses[6] == losses[7]  # the premise
    assert [r["stage"] for r in result.history] == [1, 1, 1, 2, 2, 2, 3, 3]
    assert [r["stopped_early"] for r in result.history] == [0.0] * 7 + [1.0]
    assert result.stopped_early and result.best_epoch == 6
    assert (result.final["epochs_run"], result.final["best_epoch"]) == (8.0, 6.0)


def test_non_finite_batches_are_skipped_and_counted():
    cfg = tiny_config(epochs=2, stage1_epochs=1, stage2_epochs=0, batch_size=32)
    data = load_dataset(cfg.data, cfg.seed)
    first_train = data.splits["train"][:1]
    data.x[first_train] = float("nan")  # poisons the one batch that holds it each epoch
    result = fit(cfg, data=data)
    # one poisoned sample lies in exactly one of an epoch's 11 batches of 32
    assert math.ceil(data.split_size("train") / 32) == 11
    assert [r["bad_batches"] for r in result.history] == [1.0, 1.0]
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_persistent_divergence_fails_with_a_clear_error():
    cfg = tiny_config(epochs=6)
    data = load_dataset(cfg.data, cfg.seed)
    data.x[:] = float("nan")
    with pytest.raises(DivergenceError, match="diverged.*lower --lr"):
        fit(cfg, data=data)


def test_diva_baseline_trains():
    cfg = tiny_config(variant="diva", **LEARNING)
    result = fit(cfg)
    # no zay: nothing of it in the metrics, no capacity and no penalty in any stage
    assert not [k for k in result.final if "zay" in k]
    assert [r["stage"] for r in result.history] == [1] * 4 + [2] * 4 + [3] * 4
    assert [r["capacity"] for r in result.history] == [0.0] * 12
    assert [r["penalty_active"] for r in result.history] == [0.0] * 12
    assert [r["train_penalty"] for r in result.history] == [0.0] * 12
    assert [r["train_kl_zay_term"] for r in result.history] == [0.0] * 12
    data = load_dataset(cfg.data, cfg.seed)
    for split in ("val", "test"):
        assert result.final[f"acc_y_{split}"] > above_chance(cfg, data, split), split

from __future__ import annotations

import math

import pytest
import torch

from tests.trainer.conftest import interrupted_then_resumed, tiny_config
from trainer import ConfigError, DivergenceError, fit, load_dataset


def test_report_gets_one_flat_float_dict_per_epoch():
    rows = []
    result = fit(tiny_config(), report=rows.append)
    assert len(rows) == 6 == len(result.history)
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 3, 3]
    assert [r["capacity"] for r in rows] == [0, 0, 0, 1, 1, 1]
    for row in rows:
        assert all(isinstance(v, float) for v in row.values())
        for key in ("train_loss", "train_kl_zay", "train_penalty", "val_loss", "val_acc_y",
                    "val_zay_independence", "train_acc_y"):
            assert key in row and math.isfinite(row[key])
    # the penalty is in the loss in stage 2 only
    assert [r["train_penalty"] > 0 for r in rows] == [False, False, True, True, False, False]
    assert result.final["final_stage"] == 3.0


def test_training_learns_the_class():
    result = fit(tiny_config(epochs=12, stage1_epochs=4, stage2_epochs=4, max_samples=200))
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.final["acc_y_val"] > 0.25  # 10 classes: chance is about 0.1


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
    # patience 1 with a learning rate of ~0 would stop at once if earlier stages counted
    cfg = tiny_config(epochs=8, stage1_epochs=3, stage2_epochs=3, patience=1, lr=1e-9)
    result = fit(cfg)
    assert result.stopped_early
    assert len(result.history) == 8 or result.history[-1]["stage"] == 3
    assert all(r["stopped_early"] == 0.0 for r in result.history if r["stage"] < 3)
    assert min(r["epoch"] for r in result.history if r["stopped_early"]) >= 6


def test_non_finite_batches_are_skipped_and_counted():
    cfg = tiny_config(epochs=2, stage1_epochs=1, stage2_epochs=0, batch_size=32)
    data = load_dataset(cfg.data, cfg.seed)
    first_train = data.splits["train"][:3]
    data.x[first_train] = float("nan")  # poisons the batches that contain them
    result = fit(cfg, data=data)
    bad = [r["bad_batches"] for r in result.history]
    assert all(b >= 1 for b in bad)
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_persistent_divergence_fails_with_a_clear_error():
    cfg = tiny_config(epochs=6)
    data = load_dataset(cfg.data, cfg.seed)
    data.x[:] = float("nan")
    with pytest.raises(DivergenceError, match="diverged.*lower --lr"):
        fit(cfg, data=data)


def test_diva_baseline_trains():
    # 200 source digits: with splits by source, 80 leave 12 validation digits, too few
    # to expect any correct prediction after 6 epochs
    result = fit(tiny_config(variant="diva", max_samples=200))
    assert "zay_independence_score" not in result.final
    assert result.final["acc_y_val"] > 0.0

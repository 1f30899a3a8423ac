"""MNIST from IDX files at 28x28, trained with the convolutional model."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from tests.trainer.test_conv import assert_accuracy_of_weights
from trainer import DataConfig, RunConfig, load_dataset
from trainer.cli import main

N = 240


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root) -> tuple[np.ndarray, np.ndarray]:
    """A tiny MNIST in IDX format: label k is a bright bar at rows 2k+3..2k+5, plus noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 10
    images = rng.integers(0, 40, (N, 28, 28))
    for i, k in enumerate(labels):
        images[i, 2 * k + 3 : 2 * k + 6, 4:24] = 255
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte", images)
    _write_idx(root / "train-labels-idx1-ubyte", labels)
    return images.astype(np.uint8), labels


def test_idx_images_load_at_28_px(tmp_path):
    images, labels = write_mnist(tmp_path)
    data = load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)), 0)
    assert data.x.shape == (N, 3, 28, 28)  # native size, coloured
    assert torch.equal(data.y, torch.from_numpy(labels.astype(np.int64)))
    # domain 0 is not rotated: the brightest channel of each coloured image is the IDX
    # image itself (fully saturated colours have a channel at 1)
    upright = (data.a == 0).nonzero().squeeze(1)
    assert len(upright) > 0
    grey = torch.from_numpy(images[upright.numpy()] / 255.0).float()
    assert torch.allclose(data.x[upright].amax(1), grey, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_two_epoch_staged_conv_run_on_idx_mnist(tmp_path):
    write_mnist(tmp_path / "mnist")
    out = tmp_path / "run"
    code = main([
        "--dataset", "mnist", "--data_root", str(tmp_path / "mnist"), "--arch", "conv",
        "--conv_channels", "4", "--epochs", "2", "--staged_training", "--stage1_epochs", "1",
        "--stage2_epochs", "1", "--batch_size", "32", "--out", str(out), "--no_plots",
        "--quiet",
    ])
    assert code == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert [row["stage"] for row in ckpt["history"]] == [1.0, 2.0]
    # the conv model at 28 px: 3 strided blocks (28 -> 14 -> 7 -> 4) per encoder
    convs = [k for k, v in ckpt["model"].items()
             if k.startswith("encoders.zy.") and k.endswith("weight") and v.dim() == 4]
    assert len(convs) == 3
    assert ckpt["model"]["encoders.zy.0.weight"].shape == (4, 3, 3, 3)
    final = json.loads((out / "final_metrics.json").read_text())
    # stage 3 would start at epoch 1 + 1 = 2: no best stage-3 state, the last weights
    # are evaluated; their accuracies, counted here, are the ones written
    assert ckpt["best_state"] is None and ckpt["best_epoch"] == -1
    cfg = RunConfig.from_dict(json.loads(ckpt["config_json"]))
    assert (cfg.data.dataset, cfg.data.data_root) == ("mnist", str(tmp_path / "mnist"))
    assert_accuracy_of_weights(final, cfg, ckpt["model"])

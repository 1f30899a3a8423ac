"""``--dataset fashion_mnist``: rotated, coloured Fashion-MNIST, made as ``mnist`` is."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from trainer import DataConfig, RunConfig, load_dataset
from trainer import _data as data_module
from trainer._data import FASHION_MNIST_ROOT, dataset_default_arch
from trainer.cli import main

N = 120
#: the first ten labels of Fashion-MNIST's training split (ankle boot, T-shirt, T-shirt,
#: dress, T-shirt, pullover, sneaker, pullover, sandal, sandal)
FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
HAS_FASHION_MNIST = (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").exists()


def _write_idx_gz(path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file, gzipped as Debian ships Fashion-MNIST's."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion_idx(root) -> tuple[np.ndarray, np.ndarray]:
    """A small Fashion-MNIST-shaped training split: label k a bright block in column band
    k, on noise."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, N)
    images = rng.integers(0, 60, (N, 28, 28))
    for i, k in enumerate(labels):
        images[i, 4:24, 2 * k + 3 : 2 * k + 6] = 250
    root.mkdir(parents=True, exist_ok=True)
    _write_idx_gz(root / "train-images-idx3-ubyte.gz", images)
    _write_idx_gz(root / "train-labels-idx1-ubyte.gz", labels)
    return images.astype(np.uint8), labels


def test_loader_makes_the_images_exactly_as_mnist_does(tmp_path):
    images, labels = write_fashion_idx(tmp_path)
    fashion = load_dataset(DataConfig(dataset="fashion_mnist", data_root=str(tmp_path)), 4)
    mnist = load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)), 4)
    assert fashion.x.shape == (N, 3, 28, 28)  # native 28 px, coloured
    assert dataset_default_arch("fashion_mnist") == "conv"
    assert fashion.y.tolist() == labels.tolist()
    assert torch.equal(fashion.x, mnist.x) and torch.equal(fashion.a, mnist.a)
    assert all(torch.equal(fashion.splits[k], mnist.splits[k]) for k in mnist.splits)
    assert fashion.interaction_factor == "s"
    assert fashion.factor_groups == {"y": "zy", "a": "za", "s": "zay", "hue_residual": "zx"}
    s = (fashion.y.numpy() % 2) ^ (fashion.a.numpy() % 2)
    assert np.array_equal(fashion.factors["s"], s)
    # domain 0 is upright: its images' brightest channel is the IDX image itself
    upright = (fashion.a == 0).nonzero().squeeze(1)
    grey = torch.from_numpy(images[upright.numpy()] / 255.0).float()
    assert len(upright) > 0 and torch.allclose(fashion.x[upright].amax(1), grey, atol=1e-5)
    capped = load_dataset(DataConfig(dataset="fashion_mnist", data_root=str(tmp_path),
                                     max_samples=50), 4)
    assert capped.y.tolist() == labels[:50].tolist()  # the first max_samples, as mnist


def test_without_data_root_the_debian_folder_is_read(tmp_path, monkeypatch):
    _, labels = write_fashion_idx(tmp_path / "debian")
    monkeypatch.setattr(data_module, "FASHION_MNIST_ROOT", tmp_path / "debian")
    data = load_dataset(DataConfig(dataset="fashion_mnist"), 0)
    assert data.y.tolist() == labels.tolist()


@pytest.mark.parametrize("given_root", [True, False])
def test_a_missing_folder_is_one_line_naming_it_and_the_package(tmp_path, monkeypatch,
                                                                capsys, given_root):
    missing = tmp_path / "no-fashion"
    monkeypatch.setattr(data_module, "FASHION_MNIST_ROOT", missing)
    out = tmp_path / "run"
    code = main(["--dataset", "fashion_mnist", "--epochs", "1", "--out", str(out), "--quiet",
                 *(["--data_root", str(missing)] if given_root else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(missing) in err[0] and "dataset-fashion-mnist" in err[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.skipif(not HAS_FASHION_MNIST,
                    reason=f"Fashion-MNIST is not installed at {FASHION_MNIST_ROOT} "
                           "(Debian package dataset-fashion-mnist)")
@pytest.mark.usefixtures("one_thread")
def test_one_epoch_on_a_few_hundred_real_images(tmp_path):
    data = load_dataset(DataConfig(dataset="fashion_mnist", max_samples=500), 0)
    assert data.y[:10].tolist() == FIRST_TRAIN_LABELS  # the real images, in file order
    assert data.x.shape == (500, 3, 28, 28)
    out = tmp_path / "run"
    code = main(["--dataset", "fashion_mnist", "--max_samples", "500", "--epochs", "1",
                 "--conv_channels", "8", "--batch_size", "16", "--lr", "0.003",
                 "--device", "cpu", "--no_plots", "--quiet", "--out", str(out)])
    assert code == 0
    cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert (cfg.data.dataset, cfg.data.data_root) == ("fashion_mnist", None)
    final = json.loads((out / "final_metrics.json").read_text())
    # one epoch on 350 training images learns something: 75 validation and 75 test
    # images, chance 0.1 (sd 0.035); seed 0 gives 0.32 and 0.39 here
    assert final["acc_y_val"] > 0.2 and final["acc_y_test"] > 0.2
    assert "factor_s_from_zay" in final and "disentanglement_score" in final

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from trainer import ConfigError, DataConfig, load_dataset
from trainer._data import hue_to_rgb, make_splits, read_idx


def test_digits_factors_and_interaction():
    data = load_dataset(DataConfig(max_samples=50), seed=0)
    n = 50 * 6
    assert data.x.shape == (n, 3, 16, 16)
    assert float(data.x.min()) >= 0 and float(data.x.max()) <= 1
    y, a = data.y.numpy(), data.a.numpy()
    assert np.array_equal(data.factors["s"], (y % 2) ^ (a % 2))
    s = data.factors["s"]
    # every image is in every domain: s is exactly balanced given y alone and given a
    # alone, yet fixed by the pair (y, a)
    for v in np.unique(y):
        assert s[y == v].mean() == 0.5
    for d in range(6):
        assert s[a == d].mean() == pytest.approx((y[a == d] % 2 != d % 2).mean())
        assert 0.3 < s[a == d].mean() < 0.7
    assert s.mean() == pytest.approx(0.5, abs=0.1)


def test_hue_follows_the_interaction_factor():
    data = load_dataset(DataConfig(max_samples=100), seed=1)
    hue, s = data.factors["hue"], data.factors["s"]
    # the two hue clusters separate s perfectly up to noise
    centre = np.where(np.abs(((hue - 0.58 + 0.5) % 1) - 0.5) < 0.25, 1, 0)
    assert (centre == s).mean() > 0.99
    assert np.allclose(hue_to_rgb(np.array([0.0, 1 / 3, 2 / 3])), np.eye(3), atol=1e-6)


def _sources(data, split):
    return set(data.source[data.splits[split]].tolist())


def test_splits_are_disjoint_by_source_and_seeded():
    cfg = DataConfig(max_samples=60)
    d1, d2 = load_dataset(cfg, seed=3), load_dataset(cfg, seed=3)
    parts = [set(d1.splits[k].tolist()) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == 360
    # every source digit sits in all six domains, and in exactly one split
    sources = [_sources(d1, k) for k in ("train", "val", "test")]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert set().union(*sources) == set(range(60))
    for k in ("val", "test"):
        assert len(d1.splits[k]) == 6 * len(_sources(d1, k)) == 6 * 9  # 15% of 60 sources
    assert all(torch.equal(d1.splits[k], d2.splits[k]) for k in d1.splits)
    assert torch.equal(d1.x, d2.x)


def test_leave_one_domain_out_keeps_its_sources_out_of_training():
    data = load_dataset(DataConfig(max_samples=40, test_domain=2), seed=0)
    held = data.splits["test_domain"]
    assert (data.a[held] == 2).all() and held.numel() == 6  # 15% of the 40 sources
    for k in ("train", "val", "test"):
        assert (data.a[data.splits[k]] != 2).all()
        assert not _sources(data, k) & _sources(data, "test_domain")
    splits = ("train", "val", "test", "test_domain")
    assert sum(len(_sources(data, k)) for k in splits) == 40


def test_one_domain_per_image_splits_every_sample_as_its_own_source():
    domain = np.random.default_rng(0).integers(0, 6, 500)
    splits = make_splits(domain, DataConfig(test_domain=1), seed=0)  # source=None
    together = np.concatenate([v.numpy() for v in splits.values()])
    assert len(together) == len(set(together.tolist())) == 500  # nothing lost, no repeats
    assert set(splits["test_domain"].tolist()) == set(np.flatnonzero(domain == 1).tolist())


def test_digits_hue_residual_is_the_colour_noise():
    data = load_dataset(DataConfig(max_samples=100), seed=0)
    r = data.factors["hue_residual"]
    assert r.dtype == np.float32 and np.abs(r).max() < 0.5
    assert abs(r.mean()) < 0.01 and 0.04 < r.std() < 0.06  # N(0, HUE_STD = 0.05)
    assert data.factor_groups == {"y": "zy", "a": "za", "s": "zay", "hue_residual": "zx"}


def _write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loader(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 28, 28))
    labels = np.arange(30) % 10
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz)
    assert np.array_equal(read_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}"), labels)
    data = load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path), image_size=14),
                        seed=0)
    assert data.x.shape == (30, 3, 14, 14)
    assert data.y.tolist() == labels.tolist()  # one domain per image, order kept
    assert data.interaction_factor == "s"


def test_truncated_idx_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    _write_idx(path, np.zeros((4, 28, 28)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(path)


def test_bad_data_inputs_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'nope'.*digits"):
        load_dataset(DataConfig(dataset="nope"), 0)
    with pytest.raises(ConfigError, match="give --data_root"):
        load_dataset(DataConfig(dataset="mnist"), 0)
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path / "missing")), 0)
    with pytest.raises(ConfigError, match="no train-images"):
        load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)), 0)
    with pytest.raises(ConfigError, match="wilds|camelyon"):
        load_dataset(DataConfig(dataset="camelyon17", data_root=str(tmp_path)), 0)


def test_splits_too_small_to_evaluate_are_refused_before_training(tmp_path, capsys):
    """20 shapes leave 3 validation and 3 test images: unbiased HSIC needs 4, so the run
    must stop at once with one line, not after its last epoch."""
    from trainer.cli import main

    data = load_dataset(DataConfig(dataset="shapes", max_samples=20), 0)
    assert data.split_size("val") < 4 and data.split_size("test") < 4
    out = tmp_path / "run"
    code = main(["--dataset", "shapes", "--max_samples", "20", "--epochs", "1",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "raise --max_samples" in err[0]
    assert not out.exists()

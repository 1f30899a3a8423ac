"""Camelyon17 end to end through the real ``wilds`` package, on a fixture in its layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.trainer.wilds_layout import write_camelyon17
from trainer import ConfigError, DataConfig, load_dataset
from trainer.cli import main

pytest.importorskip("wilds")
pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def camelyon_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wilds")
    write_camelyon17(root)
    return root


def test_loader_reads_wilds_official_split(camelyon_root):
    data = load_dataset(DataConfig(dataset="camelyon17", data_root=str(camelyon_root)), 0)
    # 100 patches, 20 of them in hospital 1 (WILDS' out-of-distribution val: not used)
    assert data.x.shape == (80, 3, 96, 96) and data.n_classes == 2 and data.n_domains == 5
    hospitals = {k: set(data.a[v].tolist()) for k, v in data.splits.items()}
    assert hospitals == {"train": {0, 3, 4}, "val": {0, 3, 4}, "test": {0, 3, 4},
                         "test_domain": {2}}
    # id_val (4 of each 10-patch slide in hospitals 0, 3, 4) halved into val and test
    assert len(data.splits["train"]) == 36
    assert len(data.splits["val"]) + len(data.splits["test"]) == 24
    assert len(data.splits["test_domain"]) == 20
    # the labels are the metadata's tumour column, the pixels the PNGs
    assert data.y.sum() == 40
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0


def test_val_domain_1_is_wilds_ood_validation_hospital(camelyon_root):
    """``--val_domain 1`` adds WILDS' official ``val`` split (hospital 1, the
    out-of-distribution validation set) as ``val_domain``; the other splits are those
    of a run without it, patch for patch."""
    from wilds import get_dataset

    plain = load_dataset(DataConfig(dataset="camelyon17", data_root=str(camelyon_root)), 0)
    data = load_dataset(DataConfig(dataset="camelyon17", data_root=str(camelyon_root),
                                   val_domain=1), 0)
    assert data.x.shape == (100, 3, 96, 96)  # hospital 1's 20 patches now loaded too
    hospitals = {k: set(data.a[v].tolist()) for k, v in data.splits.items()}
    assert hospitals == {"train": {0, 3, 4}, "val": {0, 3, 4}, "test": {0, 3, 4},
                         "test_domain": {2}, "val_domain": {1}}
    assert len(data.splits["val_domain"]) == 20
    slides = {k: set(data.source[v].tolist()) for k, v in data.splits.items()}
    for k in ("train", "val", "test", "test_domain"):
        assert not slides[k] & slides["val_domain"], k
        assert torch.equal(data.x[data.splits[k]], plain.x[plain.splits[k]]), k
    ds = get_dataset(dataset="camelyon17", root_dir=str(camelyon_root), download=False)
    val_idx = np.flatnonzero(ds.split_array == ds.split_dict["val"])
    assert torch.equal(data.y[data.splits["val_domain"]], ds.y_array[val_idx])
    with pytest.raises(ConfigError, match="validation hospital is 1"):
        load_dataset(DataConfig(dataset="camelyon17", data_root=str(camelyon_root),
                                val_domain=3), 0)


def test_max_samples_draws_across_the_used_splits(camelyon_root):
    cfg = DataConfig(dataset="camelyon17", data_root=str(camelyon_root), max_samples=40)
    data = load_dataset(cfg, 0)
    assert len(data.y) == 40
    assert set(data.a[data.splits["test_domain"]].tolist()) == {2}
    assert sum(len(v) for v in data.splits.values()) == 40
    with pytest.raises(ConfigError, match="raise --max_samples"):
        load_dataset(DataConfig(dataset="camelyon17", data_root=str(camelyon_root),
                                max_samples=2), 0)


def test_other_test_hospital_is_refused(camelyon_root):
    with pytest.raises(ConfigError, match="official split"):
        load_dataset(
            DataConfig(dataset="camelyon17", data_root=str(camelyon_root), test_domain=1), 0
        )


@pytest.mark.usefixtures("one_thread")
def test_two_epoch_staged_conv_run_reports_ood_accuracy(camelyon_root, tmp_path, capsys):
    from wilds import get_dataset

    from trainer import RunConfig
    from trainer._fit import build_model

    out = tmp_path / "run"
    code = main([
        "--dataset", "camelyon17", "--data_root", str(camelyon_root), "--arch", "conv",
        "--conv_channels", "4", "--epochs", "2", "--staged_training", "--stage1_epochs", "1",
        "--stage2_epochs", "1", "--batch_size", "16", "--out", str(out), "--no_plots",
        "--quiet",
    ])
    assert code == 0, capsys.readouterr().err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert [row["stage"] for row in ckpt["history"]] == [1.0, 2.0]
    final = json.loads((out / "final_metrics.json").read_text())
    # Rebuild the trained model and let WILDS' own accuracy metric score it on the test
    # hospital: our out-of-distribution metric must be that accuracy.
    data = load_dataset(cfg.data, cfg.seed)
    model = build_model(cfg, data)
    assert model.arch == "conv"
    model.load_state_dict(ckpt["model"])
    model.eval()
    held = data.splits["test_domain"]
    pred = model.predict_y(data.x[held])
    ds = get_dataset(dataset="camelyon17", root_dir=str(camelyon_root))
    test_idx = np.flatnonzero(ds.split_array == ds.split_dict["test"])
    assert torch.equal(data.y[held], ds.y_array[test_idx])  # same patches, same order
    # WILDS' own Accuracy metric (its per-slide ds.eval also needs torch_scatter)
    from wilds.common.metrics.all_metrics import Accuracy

    wilds_acc = Accuracy().compute(pred, ds.y_array[test_idx])["acc_avg"]
    assert final["acc_y_test_domain"] == pytest.approx(wilds_acc, abs=1e-6)


def test_validation_and_test_never_share_a_slide(camelyon_root):
    """Probes are fit on val and scored on test: a slide on both sides would let them
    recognise slides, so id_val is split by whole slides, half of each hospital's."""
    from wilds import get_dataset

    data = load_dataset(DataConfig(dataset="camelyon17", data_root=str(camelyon_root)), 0)
    ds = get_dataset(dataset="camelyon17", root_dir=str(camelyon_root), download=False)
    slides = {k: set(data.source[v].tolist()) for k, v in data.splits.items()}
    assert slides["val"] and slides["test"] and not slides["val"] & slides["test"]
    # the sources are WILDS' slide ids: every val patch's slide holds id_val patches
    id_val = np.flatnonzero(ds.split_array == ds.split_dict["id_val"])
    meta_slides = set(np.asarray(ds.metadata_array)[id_val, ds.metadata_fields.index("slide")])
    assert slides["val"] | slides["test"] == meta_slides

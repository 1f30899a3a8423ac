"""``camelyon17``: WILDS Camelyon17 patches read by the ``wilds`` package itself.

y = tumour in the patch's central region, a = hospital (WILDS numbering 0-4). The splits
are WILDS' ``official`` scheme, read from the dataset object's ``split_array``:

==============  ================================================  ===============
our split       WILDS split                                       hospitals
==============  ================================================  ===============
train           ``train``                                         0, 3, 4
val, test       ``id_val``: half of each hospital's slides each   0, 3, 4
test_domain     ``test`` (out of distribution)                    2
val_domain      ``val`` (out-of-distribution validation), only    1
                with ``--val_domain 1``; otherwise not loaded
==============  ================================================  ===============

So ``acc_y_test_domain`` is the out-of-distribution accuracy on WILDS' test hospital,
and with ``--val_domain 1`` ``acc_y_val_domain`` (and the per-epoch
``val_acc_y_val_domain`` that ``--early_stopping_metric`` can follow) that on WILDS'
validation hospital: training-domain-free model selection, as WILDS intends its ``val``
split. The test hospital is always held out (it is the official split); the validation
hospital only on request, so that a run without ``--val_domain`` loads, draws
(``--max_samples``) and trains exactly as before, and so that whether a run has a
validation domain is read from its configuration alone, on every data set.
A slide is a source instance (its patches look alike, so val and test never share one;
WILDS' own ``id_val`` shares slides with ``train`` by design: it is in-distribution
validation). WILDS gives no factors beyond y and the hospital,
so ``factor_groups`` is empty (the label-only score applies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer._bundle import DataBundle, register_dataset
from trainer._config import ConfigError, DataConfig

WILDS_TEST_HOSPITAL = 2  # wilds.datasets.camelyon17_dataset.TEST_CENTER
WILDS_VAL_HOSPITAL = 1  # wilds.datasets.camelyon17_dataset.VAL_CENTER
_INSTALL_HINT = "pip install torch==2.13.0 'stagetune[mnist-wilds]'"
_declared_ops: list[torch.library.Library] = []  # kept alive: the declarations live with it


def _half_of_the_slides(slide: np.ndarray, hospital: np.ndarray, seed: int) -> np.ndarray:
    """Which in-distribution patches go to validation: half of each hospital's slides.

    Patches of one slide look alike, so val (where probes are fit) and test (where they
    are scored) take whole slides; per hospital, so both see every training hospital. A
    hospital with an odd number of slides gives the extra one to val and test in turn.
    """
    rng = np.random.default_rng(seed + 7919)
    val_slides: list[int] = []
    for i, h in enumerate(np.unique(hospital)):
        slides = rng.permutation(np.unique(slide[hospital == h]))
        val_slides.extend(slides[: (len(slides) + (i % 2 == 0)) // 2].tolist())
    return np.isin(slide, val_slides)


def _declare_torchvision_detection_ops() -> None:
    """Declare torchvision's ``nms``/``qnms`` operator schemas when its C++ ops are absent.

    ``wilds`` imports ``torchvision.ops`` for its detection metrics. PyPI's torchvision
    wheels are CUDA builds, whose compiled ops cannot load beside a CPU-only torch; then
    torchvision's import fails on registering fake kernels for ``nms`` and ``qnms`` (the
    only two it registers without checking that its ops loaded). Declaring the two
    schemas lets the import finish. Nothing here calls them: Camelyon17 only reads PNGs
    and labels, and a call would still fail loudly (no kernel).
    """
    if _declared_ops:
        return
    lib = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declared_ops.append(lib)


def camelyon17_class() -> type:
    """``wilds.datasets.camelyon17_dataset.Camelyon17Dataset``, importable on CPU torch."""
    try:
        try:
            from wilds.datasets.camelyon17_dataset import Camelyon17Dataset
        except RuntimeError as exc:
            if "torchvision::" not in str(exc):
                raise
            _declare_torchvision_detection_ops()
            from wilds.datasets.camelyon17_dataset import Camelyon17Dataset
    except ImportError as exc:
        raise ConfigError(
            f"dataset 'camelyon17' needs the wilds package ({exc}): {_INSTALL_HINT}"
        ) from exc
    return Camelyon17Dataset


def _pick(split_of: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """Indices kept: all, or ``max_samples`` drawn at random from the used splits."""
    idx = np.flatnonzero(split_of >= 0)
    if max_samples is not None and max_samples < len(idx):
        idx = np.sort(np.random.default_rng(seed).permutation(idx)[:max_samples])
    return idx


@register_dataset("camelyon17", default_arch="conv", image_size=96)
def load_camelyon17(cfg: DataConfig, seed: int) -> DataBundle:
    """Camelyon17 under ``data_root/camelyon17_v1.0`` through ``wilds``' own class."""
    from trainer._bundle import require_root

    root = require_root(cfg)
    _check_official_domains(cfg)
    ds = _open_camelyon17(root)
    with_val_domain = cfg.val_domain is not None
    ours = _our_split(ds, with_val_domain=with_val_domain)
    pick = _pick(ours, cfg.max_samples, seed)
    hospital_col = ds.metadata_fields.index("hospital")
    n_hospitals = int(ds.metadata_array[:, hospital_col].max()) + 1
    x, y, a = _read_patches(ds, pick, hospital_col, side=cfg.image_size or 96)
    slide = np.asarray(ds.metadata_array)[pick, ds.metadata_fields.index("slide")]
    splits = _split_indices(ours[pick], slide, a.numpy(), seed, with_val_domain=with_val_domain)
    empty = [k for k, v in splits.items() if len(v) == 0]
    if empty:
        raise ConfigError(
            f"camelyon17: no samples left in split(s) {', '.join(empty)} "
            f"({len(pick)} patches drawn); raise --max_samples"
        )
    return DataBundle(
        x=x,
        y=y,
        a=a,
        n_classes=2,
        n_domains=n_hospitals,
        splits={k: torch.from_numpy(v.astype(np.int64)) for k, v in splits.items()},
        # a slide's patches are one source: the probes are fit and scored on other slides
        source=torch.from_numpy(slide.astype(np.int64)),
    )


def _check_official_domains(cfg: DataConfig) -> None:
    """Refuse a test or validation domain other than the official split's hospitals."""
    if cfg.test_domain not in (None, WILDS_TEST_HOSPITAL):
        raise ConfigError(
            f"camelyon17 uses WILDS' official split, whose test hospital is "
            f"{WILDS_TEST_HOSPITAL}; leave --test_domain unset (got {cfg.test_domain})"
        )
    if cfg.val_domain not in (None, WILDS_VAL_HOSPITAL):
        raise ConfigError(
            f"camelyon17 uses WILDS' official split, whose out-of-distribution validation "
            f"hospital is {WILDS_VAL_HOSPITAL}; give --val_domain {WILDS_VAL_HOSPITAL} or "
            f"leave it unset (got {cfg.val_domain})"
        )


def _open_camelyon17(root: Path) -> Any:
    """``wilds``' Camelyon17 dataset under ``root`` (official split scheme, no download);
    a ConfigError naming the expected layout where it cannot be read."""
    dataset_class = camelyon17_class()
    try:
        return dataset_class(root_dir=str(root), download=False, split_scheme="official")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot read Camelyon17 under {root}: {exc}; expected "
            f"{root}/camelyon17_v1.0/metadata.csv and its patches/ (WILDS' layout)"
        ) from exc


def _our_split(ds: Any, *, with_val_domain: bool) -> np.ndarray:
    """Our split of every sample from WILDS' ``split_array``: 0 train, 1 val or test
    (id_val), 2 test_domain, 3 val_domain (WILDS' OOD val, only when asked for), -1
    unused."""
    wilds_split = np.asarray(ds.split_array)
    codes = ds.split_dict  # {'train': 0, 'id_val': 1, 'test': 2, 'val': 3}
    ours = np.full(len(wilds_split), -1)
    ours[wilds_split == codes["train"]] = 0
    ours[wilds_split == codes["id_val"]] = 1
    ours[wilds_split == codes["test"]] = 2
    if with_val_domain:
        ours[wilds_split == codes["val"]] = 3
    return ours


def _read_patches(ds: Any, pick: np.ndarray, hospital_col: int, *,
                  side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The picked patches as ``(n, 3, side, side)`` floats in [0, 1] (resized where
    needed), their labels and hospitals, read in chunks through ``wilds``' own
    ``__getitem__``."""
    x = torch.empty((len(pick), 3, side, side), dtype=torch.float32)
    y = torch.empty(len(pick), dtype=torch.int64)
    a = torch.empty(len(pick), dtype=torch.int64)
    chunk = 512
    for start in range(0, len(pick), chunk):
        rows = pick[start : start + chunk]
        pixels, labels, hospitals = [], [], []
        for i in rows:
            img, label, meta = ds[int(i)]  # wilds' own __getitem__: PIL image, y, metadata
            pixels.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()))
            labels.append(int(label))
            hospitals.append(int(meta[hospital_col]))
        batch = torch.stack(pixels).permute(0, 3, 1, 2).float() / 255.0
        if batch.shape[-1] != side or batch.shape[-2] != side:
            batch = F.interpolate(batch, size=(side, side), mode="bilinear",
                                  align_corners=False, antialias=True).clamp(0, 1)
        x[start : start + len(rows)] = batch
        y[start : start + len(rows)] = torch.tensor(labels)
        a[start : start + len(rows)] = torch.tensor(hospitals)
    return x, y, a


def _split_indices(role: np.ndarray, slide: np.ndarray, hospital: np.ndarray, seed: int, *,
                   with_val_domain: bool) -> dict[str, np.ndarray]:
    """Each split's positions among the picked patches (``role``: their ``_our_split``);
    the in-distribution ones go to val or test by whole slides."""
    in_dist = np.flatnonzero(role == 1)
    val_mask = _half_of_the_slides(slide[in_dist], hospital[in_dist], seed)
    splits = {
        "train": np.flatnonzero(role == 0),
        "val": np.sort(in_dist[val_mask]),
        "test": np.sort(in_dist[~val_mask]),
        "test_domain": np.flatnonzero(role == 2),
    }
    if with_val_domain:
        splits["val_domain"] = np.flatnonzero(role == 3)
    return splits

"""Data sets by name. Each loader returns a ``DataBundle`` held as tensors on the device.

Built in: ``digits``, from scikit-learn's bundled 8x8 digits (no download), upsampled,
rotated into domains and coloured by a class x domain interaction; ``shapes``, rendered
procedurally with every factor known (``_shapes.py``). Loaders for data on disk:
``mnist`` and ``fashion_mnist`` (IDX files, turned into rotated/coloured images the same
way; Fashion-MNIST read from Debian's install folder by default) and ``camelyon17``
(WILDS, through the ``wilds`` package; ``_wilds.py``).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainer._bundle import (
    COLOURED_FACTOR_GROUPS,
    HUE_MEANS,
    HUE_STD,
    MIN_EVAL_SAMPLES,
    DataBundle,
    make_splits,
    register_dataset,
    registry,
    require_root,
)
from trainer._config import ConfigError, DataConfig


def dataset_default_arch(name: str) -> str:
    """The architecture a registered data set declares as its default."""
    loaders, default_arch, _ = registry()
    if name not in loaders:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}"
        )
    return default_arch[name]


def dataset_names() -> list[str]:
    return sorted(registry()[0])


def load_dataset(cfg: DataConfig, seed: int) -> DataBundle:
    """Load a registered data set; unknown names raise ConfigError listing the known."""
    loaders, _, native_size = registry()
    if cfg.dataset not in loaders:
        raise ConfigError(
            f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(dataset_names())}"
        )
    if cfg.image_size is None:
        cfg = dataclasses.replace(cfg, image_size=native_size[cfg.dataset])
    return loaders[cfg.dataset](cfg, seed)


def check_evaluable(data: DataBundle, dataset: str) -> None:
    """Refuse, before any training, a data set whose validation or test split is too small
    for the final evaluation (which would otherwise fail only after the last epoch)."""
    small = {k: data.split_size(k) for k in ("val", "test")
             if data.split_size(k) < MIN_EVAL_SAMPLES}
    if small:
        sizes = ", ".join(f"{n} {k}" for k, n in small.items())
        raise ConfigError(f"dataset {dataset!r} leaves {sizes} sample(s); the evaluation needs "
                          f"at least {MIN_EVAL_SAMPLES} in each: raise --max_samples")


# -- transforms ---------------------------------------------------------------------------


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a batch ``(n, c, h, w)`` about its centre (bilinear, zero fill)."""
    if degrees == 0:
        return images
    t = math.radians(degrees)
    theta = torch.tensor(
        [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
        dtype=images.dtype,
    ).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Fully saturated, full-value HSV colour of each hue in [0, 1): ``(n, 3)``."""
    h6 = (hue % 1.0) * 6.0
    rgb = np.stack(
        [
            np.clip(np.abs(h6 - 3.0) - 1.0, 0.0, 1.0),
            np.clip(2.0 - np.abs(h6 - 2.0), 0.0, 1.0),
            np.clip(2.0 - np.abs(h6 - 4.0), 0.0, 1.0),
        ],
        axis=1,
    )
    return rgb.astype(np.float32)


def rotated_coloured(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: DataConfig,
    seed: int,
    *,
    every_domain: bool,
) -> DataBundle:
    """Turn grey images ``(n, h, w)`` in [0, 1] into a rotated, coloured multi-domain set.

    ``every_domain``: each image appears once in every domain (small base sets);
    otherwise each image gets one domain at random.
    """
    rng = np.random.default_rng(seed)
    grey = torch.from_numpy(images.astype(np.float32))[:, None]
    grey = F.interpolate(grey, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                         align_corners=False).clamp(0, 1)
    n_dom = len(cfg.domains)
    if every_domain:
        base = np.tile(np.arange(len(labels)), n_dom)
        domain = np.repeat(np.arange(n_dom), len(labels))
    else:
        base = np.arange(len(labels))
        domain = rng.integers(0, n_dom, size=len(labels))
    parts = []
    for d, angle in enumerate(cfg.domains):
        idx = torch.from_numpy(base[domain == d])
        parts.append(rotate(grey[idx], angle))
    order = np.concatenate([np.flatnonzero(domain == d) for d in range(n_dom)])
    rotated = torch.empty((len(base), 1, cfg.image_size, cfg.image_size))
    rotated[torch.from_numpy(order)] = torch.cat(parts)
    y = labels[base].astype(np.int64)
    s = ((y % 2) ^ (domain % 2)).astype(np.int64)
    hue = (np.asarray(HUE_MEANS)[s] + rng.normal(0.0, HUE_STD, size=len(s))) % 1.0
    colour = torch.from_numpy(hue_to_rgb(hue))[:, :, None, None]
    x = (rotated * colour).clamp(0, 1).contiguous()
    # hue minus its mean given s, wrapped to [-0.5, 0.5): the colour noise, which is
    # independent of y, a and s and so belongs to the residual zx
    residual = (hue - np.asarray(HUE_MEANS)[s] + 0.5) % 1.0 - 0.5
    return DataBundle(
        x=x,
        y=torch.from_numpy(y),
        a=torch.from_numpy(domain.astype(np.int64)),
        n_classes=int(labels.max()) + 1,
        n_domains=n_dom,
        splits=make_splits(domain, cfg, seed, source=base),
        factors={"s": s, "hue": hue.astype(np.float32),
                 "hue_residual": residual.astype(np.float32)},
        interaction_factor="s",
        factor_groups=dict(COLOURED_FACTOR_GROUPS),
        source=torch.from_numpy(base.astype(np.int64)),
    )




# -- built-in and on-disk data sets -------------------------------------------------------


@register_dataset("digits")
def load_digits(cfg: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's 8x8 digits (bundled, 1797 images), in every domain."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    images = digits.images / 16.0
    labels = digits.target
    if cfg.max_samples is not None:
        keep = np.random.default_rng(seed).permutation(len(labels))[: cfg.max_samples]
        images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    return rotated_coloured(images, labels, cfg, seed, every_domain=True)


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    with _open_maybe_gz(path) as fh:
        magic = fh.read(4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0:
            raise ConfigError(f"{path} is not an IDX file (bad magic number)")
        dtype_code, ndim = magic[2], magic[3]
        if dtype_code != 0x08:
            raise ConfigError(f"{path}: only unsigned-byte IDX files are supported")
        shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    if data.size != math.prod(shape):
        raise ConfigError(f"{path} is truncated: expected {math.prod(shape)} values")
    return data.reshape(shape)


def _find(root: Path, stem: str, what: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise ConfigError(f"{root} has no {stem}[.gz]; point --data_root at the {what} IDX files")


def rotated_coloured_idx(root: Path, cfg: DataConfig, seed: int, *, what: str) -> DataBundle:
    """The IDX training split under ``root`` (the first ``max_samples`` images), each image
    in one random domain, rotated and coloured (``rotated_coloured``)."""
    images = read_idx(_find(root, "train-images-idx3-ubyte", what))
    labels = read_idx(_find(root, "train-labels-idx1-ubyte", what))
    if len(images) != len(labels):
        raise ConfigError(f"{root}: {len(images)} images but {len(labels)} labels")
    if cfg.max_samples is not None:
        images, labels = images[: cfg.max_samples], labels[: cfg.max_samples]
    return rotated_coloured(images / 255.0, labels, cfg, seed, every_domain=False)


@register_dataset("mnist", default_arch="conv", image_size=28)
def load_mnist(cfg: DataConfig, seed: int) -> DataBundle:
    """Rotated, coloured MNIST from the IDX files under ``data_root`` (train split)."""
    return rotated_coloured_idx(require_root(cfg), cfg, seed, what="MNIST")


#: where Debian's package ``dataset-fashion-mnist`` installs Fashion-MNIST's IDX files
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"


@register_dataset("fashion_mnist", default_arch="conv", image_size=28)
def load_fashion_mnist(cfg: DataConfig, seed: int) -> DataBundle:
    """Rotated, coloured Fashion-MNIST (Zalando's 28x28 clothing images, 10 classes; train
    split), made as ``mnist`` is, from ``data_root`` or else Debian's install folder."""
    root = Path(cfg.data_root).expanduser() if cfg.data_root else FASHION_MNIST_ROOT
    if not root.is_dir():
        raise ConfigError(
            f"Fashion-MNIST folder {root} does not exist: install Debian's package "
            f"{FASHION_MNIST_PACKAGE} (apt-get install {FASHION_MNIST_PACKAGE}) or point "
            "--data_root at a folder of its IDX files")
    return rotated_coloured_idx(root, cfg, seed, what="Fashion-MNIST")


# These data sets live in their own modules (over ``trainer._bundle``, not this one) and
# register themselves on import: ``shapes`` (generated) and ``camelyon17`` (WILDS).
from trainer import _shapes, _wilds  # noqa: E402, F401

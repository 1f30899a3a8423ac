"""What every data set is made of: the ``DataBundle``, the split by source instance, and
the registry of loaders by name.

Below every loader: ``trainer._data`` (the built-in ``digits`` and ``mnist``, and
``load_dataset``), ``trainer._shapes`` and ``trainer._wilds`` all build on this module,
so none of them imports another to share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainer._config import ConfigError, DataConfig

SPLITS = ("train", "val", "test", "test_domain", "val_domain")
#: the fewest validation and test samples the final evaluation can score (unbiased HSIC
#: and debiased CKA need four)
MIN_EVAL_SAMPLES = 4

# Hue means of the interaction factor s = (y mod 2) XOR (a mod 2); hues are drawn around
# them, so colour carries s (which neither y nor a predicts alone) plus sample noise.
HUE_MEANS = (0.02, 0.58)
HUE_STD = 0.05
#: where the rotated, coloured sets' ground-truth factors belong
COLOURED_FACTOR_GROUPS = {"y": "zy", "a": "za", "s": "zay", "hue_residual": "zx"}


@dataclass
class DataBundle:
    """A whole data set as tensors, with its splits and ground-truth factors."""

    x: torch.Tensor  # (n, c, h, w) in [0, 1]
    y: torch.Tensor  # class, int64
    a: torch.Tensor  # domain, int64
    n_classes: int
    n_domains: int
    splits: dict[str, torch.Tensor]  # split name -> indices (int64, same device as x)
    # ground truth other than y and a, per sample: integer dtype = discrete, float =
    # continuous
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    interaction_factor: str | None = None  # name in ``factors`` of the y x a interaction
    # factor (y and a included) -> the latent group meant to hold it; {} = labels only
    factor_groups: dict[str, str] = field(default_factory=dict)
    # the source instance each sample was made from (int64); None = each its own source
    source: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = torch.arange(len(self.y), dtype=torch.int64)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device | str) -> DataBundle:
        self.x, self.y, self.a = self.x.to(device), self.y.to(device), self.a.to(device)
        self.splits = {k: v.to(device) for k, v in self.splits.items()}
        if self.source is not None:
            self.source = self.source.to(device)
        return self

    def split_size(self, name: str) -> int:
        return int(self.splits[name].numel()) if name in self.splits else 0


Loader = Callable[[DataConfig, int], DataBundle]
_REGISTRY: dict[str, Loader] = {}
_DEFAULT_ARCH: dict[str, str] = {}
_NATIVE_SIZE: dict[str, int] = {}


def register_dataset(
    name: str, *, default_arch: str = "mlp", image_size: int = 16
) -> Callable[[Loader], Loader]:
    """Register a loader ``(DataConfig, seed) -> DataBundle`` under a name.

    ``default_arch`` is the architecture ``--arch auto`` picks for it (``mlp`` or ``conv``);
    ``image_size`` the side its images get when ``DataConfig.image_size`` is None (the
    loader always sees a number).
    """

    def wrap(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        _DEFAULT_ARCH[name] = default_arch
        _NATIVE_SIZE[name] = image_size
        return fn

    return wrap


def registry() -> tuple[dict[str, Loader], dict[str, str], dict[str, int]]:
    """The registered loaders, their default architectures and native image sizes."""
    return _REGISTRY, _DEFAULT_ARCH, _NATIVE_SIZE


def make_splits(
    domain: np.ndarray, cfg: DataConfig, seed: int, *, source: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """Seeded train/val/test(/test_domain/val_domain) split **by source instance**.

    Every source id lands in exactly one split, so the same digit rotated into another
    domain never sits on both sides of a split. Fractions are of source ids. With
    ``cfg.test_domain`` set, ``test_domain`` holds that domain's samples of the sources
    reserved for it (sources seen only in that domain, plus ``test_fraction`` of those
    seen in others too); train/val/test never contain that domain, and the reserved
    sources' samples in other domains are left out. ``cfg.val_domain`` is held out the
    same way, after the test domain and from the sources left, into ``val_domain`` (the
    sources seen only in it among the domains still in play, plus ``val_fraction`` of
    those seen in others too): an out-of-domain validation set that shares no source
    with any other split. ``source=None``: each sample is its own source.

    Raises:
        ConfigError: a mismatched ``source``, no training sample left, or a validation
            domain with no sample of its own.
    """
    rng = np.random.default_rng(seed + 7919)
    idx = np.arange(len(domain))
    source = idx if source is None else np.asarray(source)
    if len(source) != len(domain):
        raise ConfigError(f"{len(source)} source ids for {len(domain)} samples")
    ids = rng.permutation(np.unique(source))
    splits: dict[str, np.ndarray] = {}
    keep = np.ones(len(domain), dtype=bool)  # samples still in play
    for name, held_domain, fraction in (("test_domain", cfg.test_domain, cfg.test_fraction),
                                        ("val_domain", cfg.val_domain, cfg.val_fraction)):
        if held_domain is None:
            continue
        held = keep & (domain == held_domain)
        in_held = np.isin(ids, source[held])
        in_other = np.isin(ids, source[keep & ~held])
        shared = ids[in_held & in_other]
        reserved = np.concatenate([
            ids[in_held & ~in_other], shared[: round(fraction * len(shared))]])
        splits[name] = idx[held & np.isin(source, reserved)]
        ids = ids[~np.isin(ids, reserved)]
        keep &= domain != held_domain
    if cfg.val_domain is not None and len(splits["val_domain"]) == 0:
        raise ConfigError(
            f"val_domain {cfg.val_domain} has no samples of its own in this data set; "
            f"choose another --val_domain or raise --max_samples"
        )
    n_val = max(1, round(cfg.val_fraction * len(ids)))
    n_test = max(1, round(cfg.test_fraction * len(ids)))
    parts = {"val": ids[:n_val], "test": ids[n_val : n_val + n_test],
             "train": ids[n_val + n_test :]}
    for name, part in parts.items():
        splits[name] = idx[keep & np.isin(source, part)]
    if len(splits["train"]) == 0:
        raise ConfigError("the data set is too small to leave any training samples")
    return {k: torch.from_numpy(np.sort(v).astype(np.int64)) for k, v in splits.items()}


def require_root(cfg: DataConfig) -> Path:
    if not cfg.data_root:
        raise ConfigError(f"dataset {cfg.dataset!r} reads files on disk; give --data_root")
    root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data root {root} does not exist or is not a directory")
    return root

"""``shapes``: a procedurally generated benchmark with every factor known.

Each sample is its own source instance, rendered from its factors by vectorised torch
code (coordinate grids and signed distances, no Python loop per image), so any number
of distinct images at any resolution can be made, the same ones for the same seed.

=================  =========================================  ==============  ======
factor             how it is drawn                            changes         group
=================  =========================================  ==============  ======
y (class)          6 shapes: circle, square, triangle, cross,  the outline     zy
                   star, ring
a (domain)         one per ``DataConfig.domains`` entry: the   rotation and    za
                   shape rotated by that angle, and its own    background
                   background texture
s (interaction)    (y + a) mod 2: balanced, and neither y      colour family   zay
                   nor a alone says anything about it          (red / blue)
pos_x, pos_y       uniform in [-0.25, 0.25] (image = [-1, 1])  position        zx
scale              uniform in [0.45, 0.7] (outer radius)       size            zx
hue_residual       normal, sd 0.05, around s's hue mean        hue noise       zx
=================  =========================================  ==============  ======

(y, a) cells are filled in equal numbers (up to one sample when ``n`` is not a multiple
of their count), so P(s = 1 | y) = P(s = 1 | a) = 1/2 exactly when it is. ``hue`` (the
drawn hue itself, s's mean plus the residual) is stored too but belongs to no group.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trainer._bundle import HUE_MEANS, HUE_STD, DataBundle, make_splits, register_dataset
from trainer._config import ConfigError, DataConfig

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
TEXTURES: tuple[str, ...] = ("plain", "hstripes", "vstripes", "checker", "diagonal", "dots")
POSITION_RANGE = 0.25
SCALE_RANGE = (0.45, 0.7)
DEFAULT_SAMPLES = 20_000
FACTOR_GROUPS: dict[str, str] = {
    "y": "zy", "a": "za", "s": "zay",
    "pos_x": "zx", "pos_y": "zx", "scale": "zx", "hue_residual": "zx",
}
_TEXTURE_CYCLES = 4  # texture periods across the image
_CHUNK = 2048  # images rendered at once (bounds memory; results do not depend on it)


def interaction(y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """s = (y + a) mod 2: a balanced function of (y, a) that neither predicts alone."""
    return ((y + a) % 2).astype(np.int64)


def sample_factors(n: int, n_domains: int, seed: int) -> dict[str, np.ndarray]:
    """Every factor of ``n`` samples; (y, a) cells are equally filled.

    Raises:
        ConfigError: an odd number of domains (s would not be balanced given y).
    """
    if n_domains < 2 or n_domains % 2:
        raise ConfigError(
            f"dataset 'shapes' needs an even number of domains (got {n_domains}): with "
            "s = (y + a) mod 2 only then is s balanced within every class"
        )
    rng = np.random.default_rng(seed)
    n_cells = len(SHAPES) * n_domains
    cell = rng.permutation(np.arange(n) % n_cells)
    y, a = cell // n_domains, cell % n_domains
    s = interaction(y, a)
    residual = rng.normal(0.0, HUE_STD, size=n)
    hue = (np.asarray(HUE_MEANS)[s] + residual) % 1.0
    return {
        "y": y.astype(np.int64),
        "a": a.astype(np.int64),
        "s": s,
        "pos_x": rng.uniform(-POSITION_RANGE, POSITION_RANGE, size=n).astype(np.float32),
        "pos_y": rng.uniform(-POSITION_RANGE, POSITION_RANGE, size=n).astype(np.float32),
        "scale": rng.uniform(*SCALE_RANGE, size=n).astype(np.float32),
        "hue": hue.astype(np.float32),
        "hue_residual": residual.astype(np.float32),
    }


def _hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """Fully saturated colours of hues in [0, 1): ``(n, 3)``."""
    h6 = (hue % 1.0)[:, None] * 6.0
    centres = torch.tensor([3.0, 2.0, 4.0], dtype=hue.dtype)
    rgb = (h6 - centres).abs()
    rgb = torch.cat([rgb[:, :1] - 1.0, 2.0 - rgb[:, 1:]], dim=1)
    return rgb.clamp(0.0, 1.0)


def _outline_distance(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) to a unit-radius shape in its own frame."""
    if kind == "circle":
        return torch.sqrt(u * u + v * v) - 1.0
    if kind == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.8
    if kind == "triangle":  # equilateral, vertices on the unit circle, one pointing down
        sides = [math.radians(-90.0 + 120.0 * k) for k in range(3)]
        return torch.stack([u * math.cos(t) + v * math.sin(t) for t in sides]).amax(0) - 0.5
    if kind == "cross":
        arm = 0.3
        horizontal = torch.maximum(u.abs() - 1.0, v.abs() - arm)
        vertical = torch.maximum(u.abs() - arm, v.abs() - 1.0)
        return torch.minimum(horizontal, vertical)
    if kind == "star":  # five rounded points between radius 0.45 and 1
        r = torch.sqrt(u * u + v * v)
        theta = torch.atan2(u, -v)  # a point straight up
        return r - (0.725 + 0.275 * torch.cos(5.0 * theta))
    if kind == "ring":
        return (torch.sqrt(u * u + v * v) - 0.72).abs() - 0.28
    raise ValueError(kind)


def _texture(kind: str, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """A grey background pattern in [0.08, 0.38] over the image grid."""
    f = _TEXTURE_CYCLES * math.pi  # grid runs over [-1, 1]: _TEXTURE_CYCLES periods
    if kind == "plain":
        on = torch.full_like(gx, 0.5)
    elif kind == "hstripes":
        on = (torch.sin(f * gy) > 0).to(gx.dtype)
    elif kind == "vstripes":
        on = (torch.sin(f * gx) > 0).to(gx.dtype)
    elif kind == "checker":
        on = ((torch.sin(f * gx) > 0) ^ (torch.sin(f * gy) > 0)).to(gx.dtype)
    elif kind == "diagonal":
        on = (torch.sin(f * (gx + gy) / math.sqrt(2.0)) > 0).to(gx.dtype)
    elif kind == "dots":
        on = ((torch.cos(f * gx) * torch.cos(f * gy)) > 0.5).to(gx.dtype)
    else:
        raise ValueError(kind)
    return 0.08 + 0.3 * on


def render(
    factors: dict[str, np.ndarray], *, size: int, angles: tuple[float, ...],
    chunk: int = _CHUNK,
) -> torch.Tensor:
    """Images ``(n, 3, size, size)`` in [0, 1] of the given factors.

    Domain ``a`` rotates the shape by ``angles[a]`` degrees and lays it on texture
    ``TEXTURES[a % 6]``. Edges are anti-aliased over one pixel. Pixel values depend only
    on a sample's own factors (not on ``chunk`` nor on the other samples).
    """
    n = len(factors["y"])
    pixel = 2.0 / size
    line = (torch.arange(size, dtype=torch.float32) + 0.5) * pixel - 1.0
    gy, gx = torch.meshgrid(line, line, indexing="ij")  # gy grows downwards
    backgrounds = torch.stack([_texture(TEXTURES[d % len(TEXTURES)], gx, gy)
                               for d in range(len(angles))])
    rad = torch.tensor([math.radians(t) for t in angles], dtype=torch.float32)
    y = torch.from_numpy(factors["y"])
    a = torch.from_numpy(factors["a"])
    px, py = torch.from_numpy(factors["pos_x"]), torch.from_numpy(factors["pos_y"])
    scale = torch.from_numpy(factors["scale"])
    colour = _hue_to_rgb(torch.from_numpy(factors["hue"]).float())
    out = torch.empty((n, 3, size, size), dtype=torch.float32)
    for k, kind in enumerate(SHAPES):  # one class at a time: one distance function
        members = (y == k).nonzero().squeeze(1)
        for start in range(0, members.numel(), chunk):
            idx = members[start : start + chunk]
            turn = rad[a[idx]]
            cos, sin = torch.cos(turn)[:, None, None], torch.sin(turn)[:, None, None]
            dx = gx[None] - px[idx, None, None]
            dy = gy[None] - py[idx, None, None]
            r = scale[idx, None, None]
            u = (cos * dx + sin * dy) / r  # the shape's own frame, outer radius 1
            v = (-sin * dx + cos * dy) / r
            dist = _outline_distance(kind, u, v)
            coverage = (0.5 - dist * r / pixel).clamp(0.0, 1.0)[:, None]  # 1-px soft edge
            back = backgrounds[a[idx]][:, None]
            out[idx] = back * (1.0 - coverage) + colour[idx, :, None, None] * coverage
    return out


@register_dataset("shapes", default_arch="conv", image_size=32)
def load_shapes(cfg: DataConfig, seed: int) -> DataBundle:
    """``max_samples`` images (default 20,000) at ``image_size`` px, one source each."""
    if not 32 <= (cfg.image_size or 0) <= 96:
        raise ConfigError(
            f"dataset 'shapes' renders 32 to 96 px images (got --image_size {cfg.image_size})"
        )
    return shapes_bundle(cfg, seed)


def shapes_bundle(cfg: DataConfig, seed: int) -> DataBundle:
    """The ``shapes`` bundle at any ``image_size`` (benchmarks use 28 px too)."""
    n = DEFAULT_SAMPLES if cfg.max_samples is None else cfg.max_samples
    if n < 1:
        raise ConfigError(f"max_samples must be at least 1 (got {n})")
    factors = sample_factors(n, len(cfg.domains), seed)
    x = render(factors, size=cfg.image_size, angles=cfg.domains)
    source = np.arange(n, dtype=np.int64)  # every image is its own source instance
    return DataBundle(
        x=x,
        y=torch.from_numpy(factors["y"]),
        a=torch.from_numpy(factors["a"]),
        n_classes=len(SHAPES),
        n_domains=len(cfg.domains),
        splits=make_splits(factors["a"], cfg, seed, source=source),
        source=torch.from_numpy(source),
        factors={k: v for k, v in factors.items() if k not in ("y", "a")},
        factor_groups=dict(FACTOR_GROUPS),
        interaction_factor="s",
    )

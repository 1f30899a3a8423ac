"""The procedurally generated ``shapes`` data set: its factors, its pictures, its splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer import ConfigError, DataConfig, load_dataset
from trainer._shapes import (
    FACTOR_GROUPS,
    SHAPES,
    TEXTURES,
    _hue_to_rgb,
    _texture,
    render,
    sample_factors,
)

ANGLES = DataConfig().domains  # six domains
N_CELLS = len(SHAPES) * len(ANGLES)


def _one(kind: str, *, size: int = 96, scale: float = 0.5, domain: int = 0,
         hue: float = 0.6, pos: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    factors = {
        "y": np.array([SHAPES.index(kind)]), "a": np.array([domain]),
        "pos_x": np.array([pos[0]], np.float32), "pos_y": np.array([pos[1]], np.float32),
        "scale": np.array([scale], np.float32), "hue": np.array([hue], np.float32),
    }
    return render(factors, size=size, angles=ANGLES)[0]


def _coverage(img: torch.Tensor, domain: int, hue: float) -> torch.Tensor:
    """Per-pixel fraction of the shape, recovered from the blend with the background."""
    size = img.shape[-1]
    line = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    gy, gx = torch.meshgrid(line, line, indexing="ij")
    back = _texture(TEXTURES[domain], gx, gy)
    colour = _hue_to_rgb(torch.tensor([hue]))[0]
    c = int(colour.argmax())  # a channel where colour and background differ
    return (img[c] - back) / (colour[c] - back)


def test_interaction_is_balanced_and_neither_y_nor_a_predicts_it():
    f = sample_factors(N_CELLS * 5, len(ANGLES), seed=3)
    y, a, s = f["y"], f["a"], f["s"]
    # every (y, a) cell equally filled, and s a function of the cell
    counts = np.zeros((len(SHAPES), len(ANGLES)), int)
    np.add.at(counts, (y, a), 1)
    assert (counts == 5).all()
    assert (s == (y + a) % 2).all()
    assert s.mean() == 0.5
    # P(s=1 | y=k) = P(s=1 | a=d) = 1/2 exactly: knowing one of them says nothing of s
    assert all(s[y == k].mean() == 0.5 for k in range(len(SHAPES)))
    assert all(s[a == d].mean() == 0.5 for d in range(len(ANGLES)))
    # ... while (y, a) together determine it
    assert all(len(set(s[(y == k) & (a == d)])) == 1
               for k in range(len(SHAPES)) for d in range(len(ANGLES)))


def test_an_odd_number_of_domains_is_refused():
    with pytest.raises(ConfigError, match="even number of domains"):
        sample_factors(100, 5, seed=0)


def test_same_seed_same_images_other_seed_other_images():
    cfg = DataConfig(dataset="shapes", image_size=32, max_samples=144)
    one, two = load_dataset(cfg, 7), load_dataset(cfg, 7)
    assert torch.equal(one.x, two.x) and torch.equal(one.y, two.y)
    for name in one.factors:
        assert np.array_equal(one.factors[name], two.factors[name])
    assert not torch.equal(one.x, load_dataset(cfg, 8).x)


def test_every_instance_is_distinct_and_its_own_source():
    data = load_dataset(DataConfig(dataset="shapes", image_size=32, max_samples=720), 0)
    flat = data.x.flatten(1).numpy()
    assert len({row.tobytes() for row in flat}) == 720
    assert torch.equal(data.source.cpu(), torch.arange(720))


def test_rendered_area_is_the_shapes_area():
    size, r = 96, 0.5
    image_area = 4.0  # the grid spans [-1, 1]^2
    expected = {
        "circle": math.pi * r**2,
        "square": (1.6 * r) ** 2,
        # equilateral triangle with circumradius r: (3 sqrt 3 / 4) r^2
        "triangle": 3 * math.sqrt(3) / 4 * r**2,
        # two 2 x 0.6 arms (radius units) overlapping in a 0.6 x 0.6 square
        "cross": (2 * 2.0 * 0.6 - 0.6**2) * r**2,
        "ring": math.pi * (1.0**2 - 0.44**2) * r**2,
    }
    for kind, area in expected.items():
        cov = _coverage(_one(kind, size=size, scale=r), 0, 0.6)
        assert float(cov.mean()) * image_area == pytest.approx(area, rel=0.02), kind


def test_centre_pixel_has_the_shapes_colour_and_corners_the_background():
    hue = 0.6
    img = _one("circle", size=64, domain=3, hue=hue)
    colour = _hue_to_rgb(torch.tensor([hue]))[0]
    assert torch.allclose(img[:, 32, 32], colour)
    line = (torch.arange(64, dtype=torch.float32) + 0.5) / 32 - 1
    gy, gx = torch.meshgrid(line, line, indexing="ij")
    back = _texture("checker", gx, gy)
    for r, c in ((0, 0), (0, 63), (63, 0), (63, 63)):
        assert torch.allclose(img[:, r, c], back[r, c].expand(3))


def test_domain_rotates_the_shape():
    # A point at (0.35, 0.35) from the centre (radius units 0.7, 0.7) lies inside the
    # upright square (half-width 0.8) but outside the one turned 45 degrees
    # (|u| + |v| <= 0.8 sqrt 2 = 1.13 < 1.4).
    size, scale = 64, 0.5
    col = row = round((0.35 + 1) / 2 * size - 0.5)
    upright = _coverage(_one("square", size=size, scale=scale, domain=0), 0, 0.6)
    turned = _coverage(_one("square", size=size, scale=scale, domain=3), 3, 0.6)
    assert ANGLES[3] == 45.0
    assert float(upright[row, col]) == pytest.approx(1.0)
    assert float(turned[row, col]) == pytest.approx(0.0, abs=1e-6)


def test_the_interaction_changes_the_colour():
    data = load_dataset(DataConfig(dataset="shapes", image_size=32, max_samples=360), 1)
    s = torch.from_numpy(data.factors["s"])
    # the shape's own pixel at its centre (every shape but the ring covers its centre)
    centre = ((torch.from_numpy(data.factors["pos_x"]) + 1) / 2 * 32 - 0.5).round().long()
    middle = ((torch.from_numpy(data.factors["pos_y"]) + 1) / 2 * 32 - 0.5).round().long()
    keep = data.y != SHAPES.index("ring")
    idx = torch.arange(len(s))[keep]
    rgb = data.x[idx, :, middle[keep], centre[keep]]
    red, other = rgb[:, 0], rgb[:, 1:].amax(1)
    # s = 0: hue h ~ N(0.02, 0.05) around red, where red - max(green, blue) = 1 - 6|h|,
    # about 0.73 on average; s = 1: h ~ N(0.58, 0.05), where blue or green is 1 and red 0.
    assert float((red - other)[s[keep] == 0].mean()) > 0.6
    assert float((other - red)[s[keep] == 1].mean()) > 0.95


def test_factors_and_groups_follow_the_interface():
    data = load_dataset(DataConfig(dataset="shapes", image_size=32, max_samples=72), 0)
    assert data.x.shape == (72, 3, 32, 32) and data.n_classes == 6 and data.n_domains == 6
    assert data.factor_groups == FACTOR_GROUPS
    assert set(FACTOR_GROUPS) - {"y", "a"} <= set(data.factors)
    assert data.interaction_factor == "s"
    assert np.issubdtype(data.factors["s"].dtype, np.integer)
    for name in ("pos_x", "pos_y", "scale", "hue_residual"):
        assert np.issubdtype(data.factors[name].dtype, np.floating)
        assert len(np.unique(data.factors[name])) == 72  # continuous, never repeated


def test_splits_are_disjoint_by_source_and_hold_a_domain_out():
    cfg = DataConfig(dataset="shapes", image_size=32, max_samples=720, test_domain=2)
    data = load_dataset(cfg, 0)
    parts = {k: set(data.source[v].tolist()) for k, v in data.splits.items()}
    names = list(parts)
    for i, p in enumerate(names):
        for q in names[i + 1 :]:
            assert not parts[p] & parts[q], (p, q)
    assert set().union(*parts.values()) <= set(range(720))
    held = data.a[data.splits["test_domain"]]
    assert len(held) and (held == 2).all()
    for split in ("train", "val", "test"):
        assert (data.a[data.splits[split]] != 2).all()


@pytest.mark.parametrize("size", [31, 97])
def test_image_size_outside_32_to_96_is_refused(size):
    with pytest.raises(ConfigError, match="32 to 96"):
        load_dataset(DataConfig(dataset="shapes", image_size=size, max_samples=10), 0)

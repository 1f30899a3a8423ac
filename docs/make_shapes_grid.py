"""Draw docs/shapes_grid.png: one `shapes` sample per (class y, domain a) cell.

    python docs/make_shapes_grid.py [--size 64] [--seed 0] [--out docs/shapes_grid.png]

Rows are the classes, columns the domains (rotation and background texture); the colour
family is the interaction s = (y + a) mod 2. Needs Pillow (installed with the dev extra).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from trainer._config import DataConfig
from trainer._shapes import SHAPES, TEXTURES, render, sample_factors


def grid(size: int, seed: int) -> np.ndarray:
    """An RGB uint8 array: cell (y, a) holds the first sample of that pair."""
    angles = DataConfig().domains
    factors = sample_factors(len(SHAPES) * len(angles) * 4, len(angles), seed)
    images = render(factors, size=size, angles=angles).numpy()
    gap, left, top = 4, 70, 34
    n_y, n_a = len(SHAPES), len(angles)
    canvas = np.full((top + n_y * (size + gap), left + n_a * (size + gap), 3), 255, np.uint8)
    for yy in range(n_y):
        for aa in range(n_a):
            i = int(np.flatnonzero((factors["y"] == yy) & (factors["a"] == aa))[0])
            r, c = top + yy * (size + gap), left + aa * (size + gap)
            canvas[r : r + size, c : c + size] = (images[i].transpose(1, 2, 0) * 255).round()
    return canvas


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/shapes_grid.png")
    args = p.parse_args()
    img = Image.fromarray(grid(args.size, args.seed))
    draw = ImageDraw.Draw(img)
    angles = DataConfig().domains
    for aa, angle in enumerate(angles):
        x = 70 + aa * (args.size + 4)
        draw.text((x, 2), f"a={aa}, {angle:.0f} deg", fill=(0, 0, 0))
        draw.text((x, 16), TEXTURES[aa % len(TEXTURES)], fill=(0, 0, 0))
    for yy, name in enumerate(SHAPES):
        draw.text((4, 34 + yy * (args.size + 4) + args.size // 2 - 6), f"y={yy} {name}",
                  fill=(0, 0, 0))
    img.save(args.out)
    print(f"wrote {args.out} ({img.width}x{img.height})")


if __name__ == "__main__":
    main()

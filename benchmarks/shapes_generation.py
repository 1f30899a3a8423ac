"""Time to generate the ``shapes`` data set: 20,000 images at 64x64 (target: under 10 s).

    python benchmarks/shapes_generation.py [--samples 20000] [--size 64] [--repeats 3]

Times the factor draw plus the vectorised rendering (``load_dataset`` minus the split),
best of ``--repeats``, and prints images/s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from trainer._config import DataConfig
from trainer._shapes import render, sample_factors


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    angles = DataConfig().domains
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        factors = sample_factors(args.samples, len(angles), seed=0)
        images = render(factors, size=args.size, angles=angles)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"shapes: {args.samples} images at {args.size}x{args.size} in {best:.2f} s "
          f"(best of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)} s), "
          f"{args.samples / best:,.0f} images/s, torch threads {torch.get_num_threads()}, "
          f"{images.numel() * 4 / 2**30:.2f} GiB")
    print(json.dumps({"samples": args.samples, "size": args.size, "seconds": times}))


if __name__ == "__main__":
    main()

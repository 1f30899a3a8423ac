"""Time of the full disentanglement evaluation: 10,000 samples, 64 latent dimensions.

    python benchmarks/evaluation_time.py [--n 10000] [--dims 16]

Latents are synthetic with known structure (zy holds y, za holds a, zay holds the
interaction), split into a probe-fit half and a scoring half as in a real run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from trainer._metrics import EvalInputs, evaluate_latents, metric_names


def synthetic(n: int, dims: int, rng):
    y, a = rng.integers(0, 10, n), rng.integers(0, 6, n)
    s = (y % 2) ^ (a % 2)
    lat = {g: rng.normal(size=(n, dims)) for g in ("zy", "za", "zay", "zx")}
    lat["zy"][:, :10] += 3 * np.eye(10)[y]
    lat["za"][:, :6] += 3 * np.eye(6)[a]
    lat["zay"][:, 0] += 3 * s
    return lat, {"y": y, "a": a, "s": s}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dims", type=int, default=16, help="per group; 4 groups")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    fl, ff = synthetic(args.n // 2, args.dims, rng)
    sl, sf = synthetic(args.n - args.n // 2, args.dims, rng)
    inputs = EvalInputs(fl, ff, sl, sf, interaction_factor="s", task={"acc_y_val": 0.9})
    t0 = time.perf_counter()
    per_metric = {}
    for name in metric_names():
        t = time.perf_counter()
        inputs.result(name)
        per_metric[name] = time.perf_counter() - t
    total = time.perf_counter() - t0
    metrics = evaluate_latents(inputs)  # cached: the merge only
    print(f"{args.n} samples, {4 * args.dims} latent dims, {len(metrics)} metrics")
    for name, sec in per_metric.items():
        print(f"  {name:22s} {sec:6.2f} s")
    print(f"full evaluation: {total:.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()

"""Camelyon17 through WILDS' official splits, on a fixture in WILDS' on-disk layout.

    OMP_NUM_THREADS=1 python benchmarks/camelyon17_fixture.py [--seeds 3] [--epochs 6]

No Camelyon17 data can be downloaded here, so this runs the real ``wilds`` package
(``pip install wilds``; the ``dev`` extra has it) on a generated fixture in its layout
(``tests/trainer/wilds_layout.py``: five hospitals, pink tissue tinted per hospital,
dark nuclei when the patch holds tumour). What it shows is the protocol, not the
method's Camelyon17 performance: the trainer reads WILDS' ``train`` / ``id_val`` split of
hospitals 0, 3 and 4, the official out-of-distribution **validation** hospital 1 as
``--val_domain 1`` (``acc_y_val_domain``) and the official **test** hospital 2
(``acc_y_test_domain``), patch for patch the sets ``wilds.get_dataset`` returns (checked
here on the split sizes and labels). Settings: the method's default, ``unsuppressed``
(no staging, no penalty) and the ``diva`` variant (no zay), on seeds 0..S-1 of one data
split, each mean ± sd over seeds.

WILDS' ERM reference on the real data (Koh et al. 2021, 10 seeds): 84.9 (OOD validation)
and 70.3 ± 6.4 (OOD test); the fixture's numbers are not comparable to it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from search.space import reference_settings  # noqa: E402 (the project, from ROOT)

SETTINGS = reference_settings("default", "unsuppressed", "diva")
METRICS = ("acc_y_val", "acc_y_val_domain", "acc_y_test_domain")
LABELS = {"acc_y_val": "ID val (hospitals 0, 3, 4)",
          "acc_y_val_domain": "OOD val (hospital 1)",
          "acc_y_test_domain": "OOD test (hospital 2)"}


def official_split_check(root: Path, data) -> str:
    """Our held-out splits are WILDS' ``val`` and ``test`` sets: same sizes, same labels."""
    import numpy as np
    import torch
    from wilds import get_dataset

    ds = get_dataset(dataset="camelyon17", root_dir=str(root), download=False)
    lines = []
    for ours, theirs in (("val_domain", "val"), ("test_domain", "test")):
        idx = np.flatnonzero(ds.split_array == ds.split_dict[theirs])
        if not torch.equal(data.y[data.splits[ours]], ds.y_array[idx]):
            raise SystemExit(f"{ours} is not WILDS' {theirs} split")
        lines.append(f"{ours} = WILDS '{theirs}': {len(idx)} patches, labels equal")
    return "; ".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--slides", type=int, default=4, help="slides per hospital")
    p.add_argument("--patches", type=int, default=40, help="patches per slide")
    args = p.parse_args(argv)

    import torch

    from search.checks.paired import mean_sd_text, paired_by_seed
    from search.space import baseline_params
    from tests.trainer.wilds_layout import write_camelyon17
    from trainer import (
        DivergenceError,
        RunConfig,
        fit_population,
        group_population,
        load_dataset,
    )

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counts = write_camelyon17(root, patches_per_slide=args.patches,
                                  slides_per_hospital=args.slides)
        configs, keys = [], []
        for setting, changes in SETTINGS.items():
            for seed in range(args.seeds):
                flat = {**baseline_params(args.epochs), **changes}
                configs.append(RunConfig().replace(
                    dataset="camelyon17", data_root=str(root), image_size=args.image_size,
                    arch="conv", epochs=args.epochs, val_domain=1, seed=seed, split_seed=0,
                    device="cpu", write_plots=False, batch_size=64, **flat))
                keys.append((setting, seed))
        data = load_dataset(configs[0].data, 0)
        print(f"fixture: {counts} patches per hospital, {args.image_size} px; "
              + official_split_check(root, data), flush=True)
        print("split sizes: " + ", ".join(f"{k} {len(v)}" for k, v in data.splits.items()))
        final: dict[tuple[str, int], dict[str, float]] = {}
        for group in group_population(configs):
            t0, c0 = time.perf_counter(), time.process_time()
            results = fit_population([configs[i] for i in group], data=data)
            print(f"{'+'.join(sorted({keys[i][0] for i in group}))} x {len(group)}: "
                  f"{time.perf_counter() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s CPU", flush=True)
            for i, r in zip(group, results, strict=True):
                if not isinstance(r, DivergenceError):
                    final[keys[i]] = r.final

    print(f"\n{args.epochs} epochs, seeds 0..{args.seeds - 1}, mean ± sd over seeds:\n")
    print("| setting | n | " + " | ".join(LABELS[m] for m in METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for setting in SETTINGS:
        rows = [v for (s, _), v in final.items() if s == setting]
        cells = [mean_sd_text([r[m] for r in rows]) for m in METRICS]
        print(f"| {setting} | {len(rows)} | " + " | ".join(cells) + " |")
    print("\nAgainst the default (paired over seeds, mean ± SE, two-sided p):\n")
    def by_seed(setting: str, metric: str) -> dict[int, float]:
        return {k: v[metric] for (s, k), v in final.items() if s == setting}

    for setting in list(SETTINGS)[1:]:
        parts = [f"{m} {d.mean:+.3f} ± {d.se:.3f} (p = {d.p:.2f}, n = {d.n})"
                 for m in METRICS
                 if (d := paired_by_seed(by_seed(setting, m), by_seed("default", m)))]
        print(f"- {setting}: " + ("; ".join(parts) or "fewer than two paired seeds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

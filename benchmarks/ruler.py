"""What the ruler says: three settings on ``digits`` x seeds, scored by the evaluation.

    nice -n 5 python benchmarks/ruler.py                 # train what is missing, then report
    python benchmarks/ruler.py --report-only             # report the runs that finished
    python benchmarks/ruler.py --report-only --reevaluate  # re-score saved checkpoints

Settings (default epochs, 60; everything else at its default):

- ``default``: the method's default: staged, ``gate`` suppression, thirds, penalty on
  (lambda = 10, ``corr``);
- ``unsuppressed``: zay never suppressed (no staging) and no penalty;
- ``kl_weight``: staged with the published ``kl_weight`` formula (c multiplies KL(zay)).

Each run writes ``OUT/<setting>_s<seed>.json`` (final metrics, wall time) as soon as it
ends, and keeps its checkpoint under ``OUT/<setting>_s<seed>/`` so a later version of
the metrics can re-score it (``--reevaluate``). An interrupted run resumes from its
checkpoint (wall time then counts only the resumed part).
The report prints mean +- sd over seeds and, for each setting against ``default``,
whether the difference exceeds the seed spread: the two settings' seed ranges
(min..max) do not overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "unsuppressed": {"staged_training": False, "use_independence_penalty": False},
    "kl_weight": {"zay_suppression": "kl_weight"},
}
SCORES = (
    "disentanglement_score", "exclusivity_y", "exclusivity_a", "exclusivity_s",
    "exclusivity_hue_residual", "dci_disentanglement", "dci_completeness",
    "dci_informativeness", "zay_independence_score", "zay_independence_score_published",
    "zay_nonlinear_independence", "zay_label_leakage", "zay_interaction_content",
    "zay_coinformation", "zay_kl", "zay_collapsed", "task_accuracy", "acc_y_test",
    "disentanglement_score_label_only",
)
FACTORS = ("y", "a", "s", "hue_residual")
GROUPS = ("zy", "za", "zay", "zx")


def _run_name(setting: str, seed: int) -> str:
    return f"{setting}_s{seed}"


def train_missing(out: Path, seeds: list[int], epochs: int, settings: list[str]) -> None:
    import torch

    from trainer import RunConfig, fit

    # one thread: these small MLPs gain little from more, and a shared machine loses
    torch.set_num_threads(1)

    for seed in seeds:  # seed-major: a partial run has every setting for the first seeds
        for setting in settings:
            name = _run_name(setting, seed)
            path = out / f"{name}.json"
            if path.exists():
                continue
            cfg = RunConfig().replace(epochs=epochs, seed=seed, device="cpu",
                                      write_plots=False, **SETTINGS[setting])
            t0 = time.perf_counter()
            resume = (out / name / "checkpoint.pt").exists()  # an interrupted run goes on
            result = fit(cfg, checkpoint_dir=out / name, resume=resume)
            record = {"setting": setting, "seed": seed, "epochs": epochs,
                      "wall_s": time.perf_counter() - t0, "final": result.final,
                      "config": cfg.to_dict()}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(tmp, path)
            print(f"{name}: {record['wall_s']:.0f} s, disentanglement_score "
                  f"{result.final.get('disentanglement_score', float('nan')):.3f}", flush=True)


def reevaluate(out: Path) -> None:
    """Re-score every saved checkpoint with the current metrics (same data, same config)."""
    import torch

    from trainer import RunConfig
    from trainer._data import load_dataset
    from trainer._evaluation import evaluate
    from trainer._fit import build_model

    for path in sorted(out.glob("*.json")):
        record = json.loads(path.read_text())
        ckpt_path = out / path.stem / "checkpoint.pt"
        if not ckpt_path.exists():
            continue
        cfg = RunConfig.from_dict(record["config"])
        data = load_dataset(cfg.data, cfg.seed)
        model = build_model(cfg, data)
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["best_state"] or ckpt["model"])
        metrics = evaluate(model, data, cfg)["metrics"]
        record["final"].update(metrics)
        path.write_text(json.dumps(record, indent=1, sort_keys=True))
        print(f"re-scored {path.stem}", flush=True)


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, sd, min(values), max(values)


def report(out: Path, settings: list[str]) -> str:
    records: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
    seeds: dict[str, list[int]] = {s: [] for s in settings}
    for path in sorted(out.glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["setting"] in records:
            records[rec["setting"]].append(rec["final"])
            seeds[rec["setting"]].append(rec["seed"])
    lines = ["runs: " + ", ".join(f"{s} seeds {sorted(seeds[s])}" for s in settings), ""]
    metrics = list(SCORES) + [f"factor_{f}_from_{g}" for f in FACTORS for g in GROUPS]
    head = "| metric | " + " | ".join(settings) + " | " + " | ".join(
        f"{s} vs default" for s in settings if s != "default") + " |"
    lines += [head, "|" + "---|" * (1 + len(settings) + len(settings) - 1)]
    for m in metrics:
        cells, st = [], {}
        for s in settings:
            vals = [r[m] for r in records[s] if m in r]
            if vals:
                st[s] = _stats(vals)
                cells.append(f"{st[s][0]:.3f} ± {st[s][1]:.3f}")
            else:
                cells.append("–")
        comps = []
        for s in settings:
            if s == "default":
                continue
            if s in st and "default" in st:
                d = st[s][0] - st["default"][0]
                apart = st[s][3] < st["default"][2] or st[s][2] > st["default"][3]
                comps.append(f"{d:+.3f} {'**yes**' if apart else 'no'}")
            else:
                comps.append("–")
        lines.append(f"| {m} | " + " | ".join(cells) + " | " + " | ".join(comps) + " |")
    walls = [json.loads(p.read_text())["wall_s"] for p in out.glob("*.json")]
    if walls:
        lines += ["", f"wall time per run: {statistics.fmean(walls):.0f} s "
                      f"(min {min(walls):.0f}, max {max(walls):.0f}, {len(walls)} runs)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/ruler"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--reevaluate", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_missing(args.out, args.seeds, args.epochs, args.settings)
    if args.reevaluate:
        reevaluate(args.out)
    print(report(args.out, args.settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

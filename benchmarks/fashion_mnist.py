"""Does the digits answer hold on real images? The reference settings on Fashion-MNIST.

    nice -n 5 python benchmarks/fashion_mnist.py               # train what is missing, report
    nice -n 5 python benchmarks/fashion_mnist.py --seeds 0 --settings default  # time one run
    python benchmarks/fashion_mnist.py --report-only           # report the runs that finished

Rotated, coloured Fashion-MNIST (``--dataset fashion_mnist``: Debian's
``/usr/share/datasets/fashion-mnist`` unless ``--data-root``), made exactly as ``mnist``
and ``digits`` are: six rotation domains, colour carrying s = (y mod 2) XOR (a mod 2).
The size is what a shared 2-core CPU affords (default: the first 4,000 training images,
20 epochs, the conv model at 28 px); everything else is at its default. Settings
(``search.space.reference_settings``, the ones ``benchmarks/ruler.py`` measures on
``digits``):

- ``default``: the method's default: staged in thirds, ``gate`` suppression, penalty on
  (lambda = 10, ``corr``);
- ``unsuppressed``: zay never suppressed (no staging) and no penalty;
- ``kl_weight``: staged with the published ``kl_weight`` formula (c multiplies KL(zay)).

Seed s of every setting shares its data split and initial draws with seed s of the
others, so settings are compared on per-seed differences. Each run writes
``OUT/<setting>_s<seed>.json`` (final metrics, wall and CPU time) as soon as it ends and
keeps its checkpoint under ``OUT/<setting>_s<seed>/``: an interrupted run resumes from it
(its times then count only the resumed part). One process, one torch thread.

The report prints, per setting, mean +- sd over seeds of the task accuracy, the scores,
where s (the interaction factor) is read from (``factor_s_from_<group>``, posterior
samples), what zay holds besides it and what each group transmits; and each setting
against ``default``: the mean paired difference and a paired t test's p-value
(``search.checks.paired``), "**yes**" where p < 0.05.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from search.checks.paired import format_p, mean_sd_text, paired_by_seed  # noqa: E402 (from ROOT)
from search.space import reference_settings  # noqa: E402

SETTINGS = reference_settings("default", "unsuppressed", "kl_weight")
GROUPS = ("zy", "za", "zay", "zx")
#: the rows of the report, in order
METRICS = (
    "task_accuracy", "acc_y_test", "disentanglement_score", "zay_independence_score",
    "zay_label_leakage",
    *(f"factor_s_from_{g}" for g in GROUPS),
    "factor_y_from_zay", "factor_a_from_zay", "factor_y_from_zy", "factor_a_from_za",
    # disentanglement_score is 0 where zay collapsed; the exclusivity it would have been
    "factor_exclusivity", *(f"exclusivity_{f}" for f in ("y", "a", "s")),
    *(f"{g}_rate" for g in GROUPS), "zay_kl", "zay_active_dims",
    "zay_collapsed",
)


def _run_name(setting: str, seed: int) -> str:
    return f"{setting}_s{seed}"


def run_config(setting: str, seed: int, *, epochs: int, max_samples: int,
               data_root: str | None):
    """The trainer configuration of one run: the setting on the method's default."""
    from trainer import RunConfig

    return RunConfig().replace(dataset="fashion_mnist", data_root=data_root,
                               max_samples=max_samples, epochs=epochs, seed=seed,
                               device="cpu", write_plots=False, **SETTINGS[setting])


def train_missing(out: Path, seeds: list[int], settings: list[str], *, epochs: int,
                  max_samples: int, data_root: str | None) -> None:
    import torch

    from trainer import fit

    # one thread: the machine is shared, and a second thread buys these small models little
    torch.set_num_threads(1)
    for seed in seeds:  # seed-major: a partial run has every setting for the first seeds
        for setting in settings:
            name = _run_name(setting, seed)
            path = out / f"{name}.json"
            if path.exists():
                continue
            cfg = run_config(setting, seed, epochs=epochs, max_samples=max_samples,
                             data_root=data_root)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            resume = (out / name / "checkpoint.pt").exists()  # an interrupted run goes on
            result = fit(cfg, checkpoint_dir=out / name, resume=resume)
            record = {"setting": setting, "seed": seed, "epochs": epochs,
                      "max_samples": max_samples, "wall_s": time.perf_counter() - wall0,
                      "cpu_s": time.process_time() - cpu0, "final": result.final,
                      "config": cfg.to_dict()}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(tmp, path)
            print(f"{name}: {record['wall_s']:.0f} s wall, {record['cpu_s']:.0f} s CPU, "
                  f"task_accuracy {result.final.get('task_accuracy', float('nan')):.3f}, "
                  f"disentanglement_score "
                  f"{result.final.get('disentanglement_score', float('nan')):.3f}", flush=True)


def load_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*_s*.json"))]


def _comparison(setting: dict[int, float], default: dict[int, float]) -> str:
    """``+0.012 (0.039)`` over the shared seeds; where no t test applies, why not."""
    res = paired_by_seed(setting, default)
    if res is None:
        return "–"
    if res.degenerate:  # one seed, or the same difference on every seed: no t test
        return f"{res.mean:+.3f} ({res.degenerate})"
    return f"{res.mean:+.3f} ({format_p(res.p)}){' **yes**' if res.p < 0.05 else ''}"


def report(out: Path, settings: list[str]) -> str:
    """The markdown table of every metric by setting, and the paired differences."""
    records = load_records(out)
    by_seed: dict[str, dict[int, dict[str, float]]] = {s: {} for s in settings}
    for rec in records:
        if rec["setting"] in by_seed:
            by_seed[rec["setting"]][rec["seed"]] = rec["final"]
    sizes = sorted({(r["max_samples"], r["epochs"]) for r in records})
    lines = ["runs: " + ", ".join(f"{s} seeds {sorted(by_seed[s])}" for s in settings),
             "size: " + ", ".join(f"{n} images, {e} epochs" for n, e in sizes), ""]
    others = [s for s in settings if s != "default"]
    head = ["metric", *settings, *(f"{s} − default (p)" for s in others)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in METRICS:
        values = {s: {seed: f[m] for seed, f in by_seed[s].items() if m in f}
                  for s in settings}
        cells = [mean_sd_text(list(values[s].values())) for s in settings]
        comps = [_comparison(values[s], values.get("default", {})) for s in others]
        lines.append(f"| {m} | " + " | ".join(cells + comps) + " |")
    if records:
        walls = [r["wall_s"] for r in records]
        cpus = [r.get("cpu_s", float("nan")) for r in records]
        lines += ["", f"per run: {statistics.fmean(walls):.0f} s wall (min {min(walls):.0f}, "
                      f"max {max(walls):.0f}), {statistics.fmean(cpus):.0f} s CPU; "
                      f"{len(records)} runs, {sum(cpus) / 60:.1f} CPU-minutes in all"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/fashion_mnist"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-samples", type=int, default=4000,
                   help="the first N training images of Fashion-MNIST")
    p.add_argument("--data-root", default=None,
                   help="folder of Fashion-MNIST's IDX files (None: Debian's)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        try:
            train_missing(args.out, args.seeds, args.settings, epochs=args.epochs,
                          max_samples=args.max_samples, data_root=args.data_root)
        except ValueError as exc:  # ConfigError: e.g. Fashion-MNIST not installed
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(report(args.out, args.settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the ruler says: three settings on ``digits`` x seeds, scored by the evaluation.

    nice -n 5 python benchmarks/ruler.py --seeds 0 1 2 3 4   # train what is missing, report
    python benchmarks/ruler.py --report-only             # report the runs that finished
    python benchmarks/ruler.py --report-only --reevaluate  # re-score saved checkpoints
    python benchmarks/ruler.py --report-only --check-samples  # an independent probe

Settings (default epochs, 60; everything else at its default):

- ``default``: the method's default: staged, ``gate`` suppression, thirds, penalty on
  (lambda = 10, ``corr``);
- ``unsuppressed``: zay never suppressed (no staging) and no penalty;
- ``kl_weight``: staged with the published ``kl_weight`` formula (c multiplies KL(zay)).

Each run writes ``OUT/<setting>_s<seed>.json`` (final metrics, wall time) as soon as it
ends, and keeps its checkpoint under ``OUT/<setting>_s<seed>/`` so a later version of
the metrics can re-score it (``--reevaluate``). An interrupted run resumes from its
checkpoint (wall time then counts only the resumed part).
The report prints mean +- sd over seeds, the dependence of zay on zy and za (CKA, the
published correlations, HSIC) on posterior samples beside the same on the encoder means,
every factor x group entry on posterior samples beside the same entry on the encoder
means, each group's information rate and KL, and, for each setting against ``default``,
the paired difference (seed s of one against seed s of the other: same data split, same
initial draws) with a paired t-test's p-value; "**yes**" where p < 0.05.
``--check-samples`` re-reads every checkpoint with a probe built apart from the
evaluation (scikit-learn's logistic regression on posterior draws taken with torch from
the model's own encoder) and prints it beside the reported ``factor_s_from_<g>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from search.space import reference_settings

SETTINGS = reference_settings("default", "unsuppressed", "kl_weight")
FACTORS = ("y", "a", "s", "hue_residual")
GROUPS = ("zy", "za", "zay", "zx")
SCORES = (
    "disentanglement_score", "factor_exclusivity_means",
    *(f"exclusivity_{f}{m}" for f in FACTORS for m in ("", "_means")),
    "dci_disentanglement", "dci_completeness", "dci_informativeness",
    "zay_label_leakage", "zay_interaction_content",
    "zay_coinformation", "zay_collapsed", "task_accuracy", "acc_y_test",
    "disentanglement_score_label_only",
    *(f"{g}_{k}" for g in GROUPS for k in ("rate", "kl", "active_dims")),
)


#: dependence between zay and zy/za: on posterior samples (what the decoder receives)
#: beside the same measure on the encoder means
DEPENDENCE = tuple(f"{m}{source}" for m in (
    "zy_zay_correlation", "za_zay_correlation", "zay_independence_score",
    "zy_zay_correlation_published", "za_zay_correlation_published",
    "zay_independence_score_published", "zy_zay_hsic", "za_zay_hsic",
    "zay_nonlinear_independence") for source in ("", "_means"))


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


def _load_run(out: Path, path: Path):
    """The record, config, data and best model of one saved run (None if no checkpoint)."""
    import torch

    from trainer import RunConfig
    from trainer._data import load_dataset
    from trainer._fit import build_model

    record = json.loads(path.read_text())
    ckpt_path = out / path.stem / "checkpoint.pt"
    if not ckpt_path.exists():
        return None
    cfg = RunConfig.from_dict(record["config"])
    data = load_dataset(cfg.data, cfg.data_seed)
    model = build_model(cfg, data)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["best_state"] or ckpt["model"])
    return record, cfg, data, model


def reevaluate(out: Path) -> None:
    """Re-score every saved checkpoint with the current metrics (same data, same config)."""
    from trainer._evaluation import evaluate

    for path in sorted(out.glob("*.json")):
        run = _load_run(out, path)
        if run is None:
            continue
        record, cfg, data, model = run
        record["final"] = evaluate(model, data, cfg)["metrics"]
        path.write_text(json.dumps(record, indent=1, sort_keys=True))
        print(f"re-scored {path.stem}", flush=True)


def check_samples(out: Path, draws: int = 16) -> str:
    """s read from each group by a probe built apart from the evaluation, beside the
    reported ``factor_s_from_<g>``: scikit-learn's standardised logistic regression, fit
    on one posterior draw per validation input and scored on ``draws`` draws per test
    input, the draws taken with torch from the model's encoder (its own seed)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lines = ["| run | " + " | ".join(f"s from {g}: reported / independent" for g in GROUPS)
             + " |", "|---" * (1 + len(GROUPS)) + "|"]
    worst = 0.0
    for path in sorted(out.glob("*.json")):
        run = _load_run(out, path)
        if run is None:
            continue
        record = run[0]
        gen = torch.Generator().manual_seed(1234)

        def draw(split: str, group: str, n_draws: int, run=run, gen=gen):
            _, cfg, data, model = run
            idx = data.splits[split][: cfg.eval_max_samples]
            with torch.no_grad():
                mu, logvar = model.encode(data.x[idx], group)
                eps = torch.randn((n_draws, *mu.shape), generator=gen)
                z = (mu + (0.5 * logvar).exp() * eps).reshape(-1, mu.shape[1])
            s = np.tile(data.factors["s"][idx.numpy()], n_draws)
            return z.double().numpy(), s

        cells = []
        for g in GROUPS:
            (xf, sf), (xs, ss) = draw("val", g, 1), draw("test", g, draws)
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            acc = float((probe.fit(xf, sf).predict(xs) == ss).mean())
            chance = float(np.bincount(ss).max() / len(ss))
            independent = max(0.0, (acc - chance) / (1.0 - chance))
            reported = record["final"][f"factor_s_from_{g}"]
            worst = max(worst, abs(independent - reported))
            cells.append(f"{reported:.3f} / {independent:.3f}")
        lines.append(f"| {path.stem} | " + " | ".join(cells) + " |")
    lines += ["", f"largest |reported - independent|: {worst:.3f}"]
    return "\n".join(lines)


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, sd, min(values), max(values)


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int] | None:
    """Mean paired difference b - a over the seeds both have, its t-test p-value, n."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [b[s] - a[s] for s in seeds]
    if max(diffs) == min(diffs):
        return statistics.fmean(diffs), (1.0 if diffs[0] == 0 else 0.0), len(seeds)
    return statistics.fmean(diffs), float(stats.ttest_rel(
        [b[s] for s in seeds], [a[s] for s in seeds]).pvalue), len(seeds)


def report(out: Path, settings: list[str]) -> str:
    by_seed: dict[str, dict[int, dict[str, float]]] = {s: {} for s in settings}
    for path in sorted(out.glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["setting"] in by_seed:
            by_seed[rec["setting"]][rec["seed"]] = rec["final"]
    lines = ["runs: " + ", ".join(f"{s} seeds {sorted(by_seed[s])}" for s in settings), ""]
    matrix = [f"factor_{f}_from_{g}{m}" for f in FACTORS for g in GROUPS
              for m in ("", "_means")]
    others = [s for s in settings if s != "default"]
    head = "| metric | " + " | ".join(settings) + " | " + " | ".join(
        f"{s} - default (p)" for s in others) + " |"
    lines += [head, "|" + "---|" * (1 + len(settings) + len(others))]
    for m in list(SCORES) + list(DEPENDENCE) + matrix:
        values = {s: {seed: f[m] for seed, f in by_seed[s].items() if m in f}
                  for s in settings}
        cells = []
        for s in settings:
            vals = list(values[s].values())
            if vals:
                mean, sd, _, _ = _stats(vals)
                cells.append(f"{mean:.3f} ± {sd:.3f}")
            else:
                cells.append("–")
        comps = []
        for s in others:
            res = _paired(values.get("default", {}), values[s]) if "default" in values else None
            if res is None:
                comps.append("–")
            else:
                d, pval, _ = res
                comps.append(f"{d:+.3f} ({pval:.3f}){' **yes**' if pval < 0.05 else ''}")
        lines.append(f"| {m} | " + " | ".join(cells) + " | " + " | ".join(comps) + " |")
    walls = [json.loads(p.read_text())["wall_s"] for p in out.glob("*.json")]
    if walls:
        lines += ["", f"wall time per run: {statistics.fmean(walls):.0f} s "
                      f"(min {min(walls):.0f}, max {max(walls):.0f}, {len(walls)} runs)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/ruler"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--reevaluate", action="store_true")
    p.add_argument("--check-samples", action="store_true",
                   help="also read s from each group with an independent probe on "
                        "posterior samples")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_missing(args.out, args.seeds, args.epochs, args.settings)
    if args.reevaluate:
        reevaluate(args.out)
    print(report(args.out, args.settings))
    if args.check_samples:
        print()
        print(check_samples(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which cheap budget ranks settings on ``digits`` like the method's own 60 epochs?

    nice -n 5 python benchmarks/fidelity.py --out bench-fidelity          # train, report
    python benchmarks/fidelity.py --out bench-fidelity --report-only      # report only

16 settings x 3 paired seeds (seed s trains every setting on one split, from one initial
draw), each trained at the target budget (60 epochs on all 1,797 sources, the method's
size) and at every cheaper schedule: 6, 12 and 24 epochs (stage lengths scaled as the
default's thirds scale), and the search-quality benchmark's scaled size (6 epochs, 250
sources, hidden 64, 8-dimensional latents, learning rate 5e-3). The prefix rungs (epochs
10 to 50 of the target runs: 20 ends the default's stage 1, 40 its stage 2, 50 is midway
through stage 3) are read from the target runs' epoch rows, by each objective's
per-epoch proxy. ``search.checks.fidelity`` scores them: Spearman's rho and Kendall's tau against
the target with bootstrap intervals over settings (seeds resampled within settings),
the overlap of the top 4 and the regret.

The settings: the method's default; the search-quality benchmark's best setting (found
and confirmed at its scaled 6-epoch size: stage 1 = 1 of 6, stage 2 = 0, beta_zay 0.287,
beta_zx 1.386), here at 60 epochs (stage 1 = 10); and 14 drawn at random (Optuna's
RandomSampler, seed 0) from the sweep's space at 60 epochs with the search-quality
benchmark's ranges (KL weights of zay and zx, penalty pairs).

Every run is solo (``trainer.fit``, one torch thread): at the default size a population
trains no faster per member on this CPU (4 members of 6 epochs: 50 s against 4 x 9 s
solo). Each run writes ``OUT/runs/<budget>/<setting>_s<seed>.json`` when it ends; a rerun
trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.checks.fidelity import (  # noqa: E402
    RHO_BAR,
    Budget,
    budget_params,
    interval_text,
    plan_budgets,
    score_check,
)
from search.checks.resolution import metric_resolution  # noqa: E402
from search.objective import EPOCH_PROXIES  # noqa: E402

TARGET_EPOCHS = 60
SEEDS = (0, 1, 2)
N_RANDOM = 14
RANGES = ("beta_ay=0.25:4", "beta_x=0.25:4", "penalty_pairs=zy_za,zy_za_zx")
#: the search-quality benchmark's scaled trial (benchmarks/search_quality.py SIZES)
SCALED = dict(epochs=6, max_samples=250, lr=5e-3, hidden_dim=64, zy_dim=8, za_dim=8,
              zay_dim=8, zx_dim=8, batch_size=64, eval_max_samples=150)
BEST_6_EPOCH = {"stage1_epochs": 10, "stage2_epochs": 0, "use_independence_penalty": True,
                "independence_penalty": 1.0942003430240628, "penalty_pairs": "zy_za",
                "beta_ay": 0.28696664898241686, "beta_x": 1.3862134956351702}
OBJECTIVES = ("task_accuracy", "disentanglement_score", "zay_independence_score",
              "zay_nonlinear_independence", "zay_label_leakage")
RUNGS = (10, 20, 30, 40, 50)
KEPT_ROW_KEYS = ("epoch", "stage", *EPOCH_PROXIES.values())


def settings() -> dict[str, dict[str, Any]]:
    import optuna

    from search.space import build_space

    space = build_space(TARGET_EPOCHS, ranges=list(RANGES))
    out = {"default": space.baseline(), "best_6_epoch": dict(BEST_6_EPOCH)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(N_RANDOM):
        out[f"random_{i:02d}"] = space.sample(study.ask())
    return out


def budgets() -> list[Budget]:
    return plan_budgets(TARGET_EPOCHS, epochs=(6, 12, 24), rungs=RUNGS,
                        schedules={"scaled": SCALED})


def _path(out: Path, budget: str, setting: str, seed: int) -> Path:
    return out / "runs" / budget / f"{setting}_s{seed}.json"


def _train(job: tuple[str, str, int, dict[str, Any], str]) -> tuple[str, float]:
    """One run in a worker process; writes its record, returns its path and wall time."""
    import torch

    torch.set_num_threads(1)
    from trainer import DivergenceError, RunConfig, fit

    budget, setting, seed, params, path = job
    cfg = RunConfig().replace(seed=seed, device="cpu", write_plots=False, **params)
    t0 = time.perf_counter()
    try:
        result = fit(cfg)
        record = {"state": "complete", "final": result.final,
                  "history": [{k: r[k] for k in KEPT_ROW_KEYS if k in r}
                              for r in result.history]}
    except DivergenceError as exc:
        record = {"state": "failed", "reason": str(exc)}
    record |= {"budget": budget, "setting": setting, "seed": seed, "params": params,
               "wall_s": time.perf_counter() - t0}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(target)  # a run is on disk whole or not at all
    return path, record["wall_s"]


def train_missing(out: Path, workers: int) -> None:
    plan = settings()
    (out / "settings.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(plan, indent=1))
    schedules = [b for b in budgets() if not b.is_rung]
    jobs = []
    for seed in SEEDS:  # seed-major: a partial run has every budget for the first seeds
        for budget in schedules:
            for name, params in plan.items():
                path = _path(out, budget.name, name, seed)
                if not path.exists():
                    jobs.append((budget.name, name, seed,
                                 budget_params(params, budget, TARGET_EPOCHS), str(path)))
    print(f"{len(jobs)} runs to train on {workers} processes", flush=True)
    t0 = time.time()
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_train, job) for job in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            path, wall = fut.result()
            print(f"[{i}/{len(jobs)}] {Path(path).relative_to(out)}: {wall:.0f} s "
                  f"({time.time() - t0:.0f} s in all)", flush=True)


def load_runs(out: Path) -> tuple[dict[tuple[str, int, str], dict[str, Any]], dict[str, float]]:
    runs, wall = {}, {}
    for path in sorted((out / "runs").glob("*/*.json")):
        record = json.loads(path.read_text())
        runs[record["setting"], record["seed"], record["budget"]] = record
        wall[record["budget"]] = wall.get(record["budget"], 0.0) + record["wall_s"]
    return runs, wall


def report(out: Path) -> None:
    plan = json.loads((out / "settings.json").read_text())
    runs, wall = load_runs(out)
    names = list(plan)
    records = score_check(runs, names, list(SEEDS), budgets(), OBJECTIVES)
    (out / "fidelity.json").write_text(json.dumps(records, indent=1))
    done = {b: sum(1 for k in runs if k[2] == b) for b in {k[2] for k in runs}}
    print(f"runs: {done}; CPU s per budget: "
          + ", ".join(f"{b} {s:.0f}" for b, s in sorted(wall.items())))
    print(f"\n{len(names)} settings x {len(SEEDS)} seeds; target: {TARGET_EPOCHS} epochs, "
          f"all sources. Bar: lower 95% bound of rho >= {RHO_BAR}.\n")
    print("| objective | cheap budget | Spearman ρ [95% CI] | Kendall τ [95% CI] | "
          "top-4 overlap | regret [95% CI] | faithful |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        if "error" in r:
            print(f"| {r['objective']} | {r['budget']} | {r['error']} | | | | |")
            continue
        print(f"| {r['objective']} | {r['budget']} ({r['describe']}) | "
              f"{interval_text(r, 'spearman')} | {interval_text(r, 'kendall')} | "
              f"{r['top_k_overlap']:.2f} | {r['regret']:.3f} [{r['regret_lo']:.3f}, "
              f"{r['regret_hi']:.3f}] | {'yes' if r['faithful'] else 'no'} |")
    print("\nPer setting at the target (mean ± SE over seeds):")
    target_points = {r["objective"]: r["points"] for r in records
                     if r.get("budget") == "e6" and "points" in r}
    for objective, points in target_points.items():
        print(f"  {objective}: " + ", ".join(f"{p['setting']} {p['target']:.3f}±"
                                              f"{p['target_se']:.3f}" for p in points))
    for budget in ("target", "e6", "scaled"):
        print(f"\nbest_6_epoch - default at {budget} (paired by seed):")
        print("\n".join(winner_against_default(runs, budget)))
    print("\nResolution at each schedule (search.checks.resolution: sd between the settings' "
          "means / median SE within a setting; feasible settings only; >= 2 resolves):")
    for budget in [b for b in budgets() if not b.is_rung]:
        cells = []
        for objective in OBJECTIVES:
            vals, errs = _setting_stats(runs, names, budget.name, objective)
            r = metric_resolution(vals, errs)
            cells.append(f"{objective} {r.get('ratio', float('nan')):.1f}")
        print(f"  {budget.name}: " + ", ".join(cells))


def winner_against_default(runs, budget: str) -> list[str]:
    """The 6-epoch search's best setting against the default, paired by seed."""
    from search.checks.paired import paired_difference

    lines = []
    for metric in (*OBJECTIVES, "zay_rate", "factor_s_from_zx"):
        pairs = [(runs[w]["final"].get(metric), runs[d]["final"].get(metric)) for seed in SEEDS
                 for w, d in [(("best_6_epoch", seed, budget), ("default", seed, budget))]
                 if runs.get(w, {}).get("state") == "complete"
                 and runs.get(d, {}).get("state") == "complete"]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if len(pairs) < 2:
            continue
        diff = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        lines.append(f"  {metric}: {diff.mean:+.3f} ± {diff.se:.3f} (SE, n = {diff.n}), "
                     f"p = {diff.p:.3f}")
    return lines


def _setting_stats(runs, names, budget: str, objective: str) -> tuple[list[float], list[float]]:
    """Each feasible setting's mean and standard error over its seeds at a schedule."""
    import statistics

    vals, errs = [], []
    for name in names:
        finals = [runs[name, seed, budget]["final"] for seed in SEEDS
                  if runs.get((name, seed, budget), {}).get("state") == "complete"]
        if len(finals) < 2 or any(f.get("zay_collapsed", 0.0) >= 1 for f in finals):
            continue
        x = [float(f[objective]) for f in finals]
        vals.append(statistics.fmean(x))
        errs.append(statistics.stdev(x) / len(x) ** 0.5)
    return vals, errs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-fidelity"))
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if not args.report_only:
        train_missing(args.out, args.workers)
    report(args.out)


if __name__ == "__main__":
    main()

"""Search quality: hypervolume after 8, 16 and 32 trials for TPE, NSGA-II and random
search, over sampler seeds, on ``digits`` with the sweep's objective and space.

    python benchmarks/search_quality.py [--budgets 8,16,32] [--seeds 0,1]
        [--samplers tpe,nsga2,random] [--population 8]

Objectives: task accuracy and zay independence (``zay_independence_score``, the
permutation- and rotation-invariant score), both maximised; only feasible trials (zay not
collapsed) count. The method's default setting (stage thirds, penalty on, λ = 10) is
trial 0 of every study, as in a sweep, and its point is the hypervolume's reference: the
hypervolume is the area that found settings add beyond the default. A second column uses
the reference (0, 0).

Each study asks its trials in batches of ``--population`` (the sweep's samplers from
``search.study.make_sampler``, the sweep's space from ``search.space``) and trains each
batch with ``trainer.fit_population`` (torch probes). The epoch budget is scaled down
(``SIZES`` below) and stated in the output.

Studies live in ``--storage`` (SQLite): a rerun continues each study where it stopped,
so the run can be cut and resumed; a batch cut short is marked failed and not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = dict(epochs=6, max_samples=400, image_size=8, hidden_dim=64, zy_dim=8, za_dim=8,
             zay_dim=8, zx_dim=8, batch_size=64, eval_max_samples=500, write_plots=False,
             device="cpu", staged_training=True)
OBJECTIVES = ("task_accuracy", "zay_independence_score")
INTERRUPTED = "interrupted"


def _study(storage: str, sampler: str, seed: int, total: int | None = None):
    import optuna

    from search.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=f"{sampler}-seed{seed}",
                                directions=["maximize", "maximize"],
                                sampler=make_sampler(sampler, seed, n_trials=total),
                                load_if_exists=True)
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study


def _counted(study) -> list:
    return [t for t in study.trials if t.state.is_finished()
            and not t.user_attrs.get(INTERRUPTED)]


def run_study(storage: str, sampler: str, seed: int, budget: int, population: int,
              total: int) -> None:
    """Bring one study to ``budget`` counted trials, a population at a time; ``total`` (the
    largest budget) sizes the sampler as a sweep of that many trials would."""
    from optuna.trial import TrialState

    from search.objective import Objective
    from search.space import SearchSpace, baseline_params
    from trainer import RunConfig, fit_population

    objective = Objective(mode="pareto", disentanglement=OBJECTIVES[1])
    epochs = SIZES["epochs"]
    space = SearchSpace(epochs=epochs, stage1_epochs=(0, epochs), stage2_epochs=(0, epochs))
    study = _study(storage, sampler, seed, total)
    if not study.trials:
        study.enqueue_trial(baseline_params(epochs), user_attrs={"baseline": True})
    base = RunConfig().replace(**SIZES)
    while len(_counted(study)) < budget:
        k = min(population, budget - len(_counted(study)))
        trials = [study.ask() for _ in range(k)]
        params = [space.sample(t) for t in trials]
        cfgs = [RunConfig.from_dict(base.to_dict()).replace(**p) for p in params]
        t0 = time.perf_counter()
        results = fit_population(cfgs)
        for trial, result in zip(trials, results, strict=True):
            if isinstance(result, Exception):
                study.tell(trial, state=TrialState.FAIL)
                continue
            final = result.final
            trial.set_user_attr("feasible", objective.feasible(final))
            trial.set_user_attr("values_all", {k: final.get(k) for k in OBJECTIVES})
            study.tell(trial, objective.values(final))
        print(f"  {study.study_name}: {len(_counted(study))}/{budget} trials "
              f"({k} in {time.perf_counter() - t0:.0f} s)", flush=True)


def summarise(storage: str, samplers: list[str], seeds: list[int], budgets: list[int]
              ) -> dict:
    from optuna.trial import TrialState

    from analysis._pareto import hypervolume_2d

    directions = ["maximize", "maximize"]
    out: dict = {"sizes": SIZES, "objectives": OBJECTIVES, "studies": {}}
    default_point = None
    for sampler in samplers:
        for seed in seeds:
            study = _study(storage, sampler, seed)
            done = _counted(study)
            rows = [t for t in done if t.state == TrialState.COMPLETE]
            base = [t for t in rows if t.user_attrs.get("baseline")]
            if base:
                default_point = list(base[0].values)
            entry = {"trials": len(done), "default": list(base[0].values) if base else None,
                     "hv_vs_default": {}, "hv_vs_zero": {}, "dominating": []}
            for b in budgets:
                if len(done) < b:
                    continue
                first = [t for t in done[:b] if t.state == TrialState.COMPLETE
                         and t.user_attrs.get("feasible", True)]
                pts = np.array([t.values for t in first]) if first else np.zeros((0, 2))
                ref = entry["default"] or [0.0, 0.0]
                entry["hv_vs_default"][b] = hypervolume_2d(pts, directions, ref) if len(
                    pts) else 0.0
                entry["hv_vs_zero"][b] = hypervolume_2d(pts, directions, [0.0, 0.0]) if len(
                    pts) else 0.0
            if entry["default"]:
                d = entry["default"]
                for t in rows:
                    v = t.values
                    if (t.user_attrs.get("feasible", True) and v[0] >= d[0] and v[1] >= d[1]
                            and (v[0] > d[0] or v[1] > d[1])):
                        entry["dominating"].append(
                            {"study": f"{sampler}-seed{seed}", "number": t.number,
                             "params": t.params,
                             "d_accuracy": v[0] - d[0], "d_independence": v[1] - d[1]})
            out["studies"][f"{sampler}-seed{seed}"] = entry
    out["default_point"] = default_point
    return out


def table(summary: dict, samplers: list[str], seeds: list[int], budgets: list[int]) -> str:
    lines = ["| sampler | " + " | ".join(f"HV@{b} vs default (mean over seeds)"
                                        for b in budgets)
             + " | " + " | ".join(f"HV@{b} vs (0,0)" for b in budgets)
             + " | trials per seed | settings dominating the default, per seed |",
             "|---|" + "---|" * (2 * len(budgets) + 2)]
    for sampler in samplers:
        cells, cells0, ran = [], [], []
        for b in budgets:
            hv = [summary["studies"][f"{sampler}-seed{s}"]["hv_vs_default"].get(b)
                  for s in seeds]
            hv0 = [summary["studies"][f"{sampler}-seed{s}"]["hv_vs_zero"].get(b)
                   for s in seeds]
            got = [h for h in hv if h is not None]
            got0 = [h for h in hv0 if h is not None]
            cells.append(f"{np.mean(got):.2e} (n={len(got)})" if got else "not run")
            cells0.append(f"{np.mean(got0):.4f}" if got0 else "not run")
        dominating = []
        for s in seeds:
            entry = summary["studies"][f"{sampler}-seed{s}"]
            ran.append(str(entry["trials"]))
            dominating.append(str(len(entry["dominating"])))
        lines.append(f"| {sampler} | " + " | ".join(cells) + " | " + " | ".join(cells0)
                     + f" | {', '.join(ran)} | {', '.join(dominating)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="8,16,32")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--samplers", default="tpe,nsga2,random")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--epochs", type=int, default=SIZES["epochs"],
                   help="epoch budget of every trial (the sweep's default is 30)")
    p.add_argument("--storage", default=None,
                   help="study database (default: benchmarks/out/search_quality[_eN].db)")
    p.add_argument("--out", default=None, help="summary JSON (default: beside the database)")
    p.add_argument("--summary-only", action="store_true", help="report what is stored")
    args = p.parse_args()
    SIZES["epochs"] = args.epochs
    stem = "search_quality" + ("" if args.epochs == 6 else f"_e{args.epochs}")
    args.storage = args.storage or f"sqlite:///{ROOT / 'benchmarks/out' / (stem + '.db')}"
    args.out = args.out or str(ROOT / "benchmarks/out" / (stem + ".json"))
    import torch

    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        # breadth first: every study reaches the smallest budget before any the next
        for budget in budgets:
            for seed in seeds:
                for sampler in samplers:
                    run_study(args.storage, sampler, seed, budget, args.population,
                              max(budgets))
    summary = summarise(args.storage, samplers, seeds, budgets)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    print(f"sizes: {SIZES}; objectives {OBJECTIVES}; default point {summary['default_point']}")
    print(table(summary, samplers, seeds, budgets))
    best = max((d for e in summary["studies"].values() for d in e["dominating"]),
               key=lambda d: d["d_accuracy"] + d["d_independence"], default=None)
    if best:
        print(f"largest improvement on the default: {best['study']} trial "
              f"{best['number']} {best['params']} "
              f"(+{best['d_accuracy']:.4f} accuracy, +{best['d_independence']:.4f} "
              f"independence)")
    else:
        print("no setting found dominates the method's default")


if __name__ == "__main__":
    main()

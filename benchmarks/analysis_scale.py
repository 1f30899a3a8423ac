"""rank and report on a generated study of 10,000 trials (target: under 30 s).

    python benchmarks/analysis_scale.py [--trials 10000] [--db PATH]

Generation (writing the study) is timed separately; only reading and reporting count.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import create_trial

from search.objective import Objective
from search.study import OBJECTIVE_ATTR


def generate(url: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    objective = Objective()
    study = optuna.create_study(storage=url, study_name="big", directions=objective.directions)
    study.set_user_attr(OBJECTIVE_ATTR, objective.describe())
    dists = {"stage1_epochs": IntDistribution(0, 60), "stage2_epochs": IntDistribution(0, 60),
             "use_independence_penalty": CategoricalDistribution([True, False]),
             "independence_penalty": FloatDistribution(0.1, 100, log=True)}
    trials = []
    for i in range(n):
        s1 = int(rng.integers(0, 40))
        s2 = int(rng.integers(0, 60 - s1))
        on = bool(rng.integers(0, 2))
        params = {"stage1_epochs": s1, "stage2_epochs": s2, "use_independence_penalty": on}
        d = {k: dists[k] for k in params}
        if on:
            params["independence_penalty"] = float(10 ** rng.uniform(-1, 2))
            d["independence_penalty"] = dists["independence_penalty"]
        acc = float(np.clip(0.9 + 0.05 * rng.normal() - 0.001 * s1, 0, 1))
        ind = float(np.clip(0.9 + 0.04 * rng.normal() + 0.02 * on, 0, 1))
        attrs = {"zay_collapsed": float(rng.random() < 0.05), "zay_active_dims": 8.0,
                 "disentanglement_score": float(rng.random()), "baseline": i == 0}
        attrs["feasible"] = attrs["zay_collapsed"] < 1
        trials.append(create_trial(values=[acc, ind], params=params, distributions=d,
                                   user_attrs=attrs))
    study.add_trials(trials)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--db", default=None)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    db = Path(args.db) if args.db else tmp / "big.db"
    url = f"sqlite:///{db}"
    if not db.exists():
        t = time.perf_counter()
        generate(url, args.trials)
        print(f"generated {args.trials} trials in {time.perf_counter() - t:.1f} s (not counted)")
    from analysis.cli import main as analysis_main

    timings = {}
    for cmd in ("rank", "report"):
        t = time.perf_counter()
        argv = [cmd, "--storage", url, "--study", "big", "--out", str(tmp / "out")]
        if cmd == "rank":
            argv += ["--top", "5"]
        assert analysis_main(argv) == 0
        timings[cmd] = time.perf_counter() - t
    size = (tmp / "out" / "report.html").stat().st_size / 1e6
    print(f"rank {timings['rank']:.1f} s, report {timings['report']:.1f} s "
          f"(report.html {size:.1f} MB) for {args.trials} trials (target: each < 30 s)")


if __name__ == "__main__":
    main()

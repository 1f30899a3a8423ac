"""Sweep efficiency: the share of wall time spent inside training, and driver start-up.

    python benchmarks/sweep_efficiency.py [--trials 8] [--epochs 12] [--cpus-per-trial 1]

Runs a real sweep (local Ray, SQLite) of trials sized to about 20 s each on this machine,
then compares the time trials spent in ``trainer.fit`` (their own epoch clocks plus the
final evaluation, from the per-epoch table and Tune's results) with the driver's wall time
times the number of trial slots.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--max-samples", type=int, default=1000)  # ~20 s trials here
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--gpus-per-trial", type=float, default=None)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'eff.db'}"

    t0 = time.perf_counter()
    import os

    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # as the driver does

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0

    from search.driver.sweep import SweepOptions, run_sweep
    from search.space import build_space
    from trainer import RunConfig

    base = RunConfig().replace(epochs=args.epochs, staged_training=True,
                               max_samples=args.max_samples, write_plots=False).to_dict()
    opts = SweepOptions(storage=url, study="eff", n_trials=args.trials, base_config=base,
                        space=build_space(args.epochs), sampler="random", seed=0,
                        cpus_per_trial=args.cpus_per_trial,
                        gpus_per_trial=args.gpus_per_trial, quiet=True,
                        tune_dir=str(tmp / "tune"))
    t1, t1_wall = time.perf_counter(), time.time()
    run_sweep(opts)
    sweep_wall = time.perf_counter() - t1

    study = optuna.load_study(study_name="eff", storage=url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    busy = [t.user_attrs["fit_seconds"] for t in done]  # measured inside the worker
    to_first_fit = min(t.user_attrs["fit_started_at"] for t in done) - t1_wall
    slots = min(args.num_cpus // max(1, int(args.cpus_per_trial)), args.trials)
    share = sum(busy) / (sweep_wall * slots)
    share_steady = sum(busy) / ((sweep_wall - to_first_fit) * slots)
    report = {
        "trials": len(done), "slots": slots, "ray_init_s": round(ray_start, 2),
        "sweep_wall_s": round(sweep_wall, 1),
        "mean_trial_s": round(sum(busy) / len(busy), 1),
        "share_in_trials": round(share, 3), "share_after_startup": round(share_steady, 3),
        "sweep_start_to_first_fit_s": round(to_first_fit, 2),
    }
    overhead = sweep_wall - sum(busy) / slots
    report["driver_overhead_s"] = round(overhead, 1)
    print(f"driver fixed start-up: ray.init {ray_start:.1f} s + {to_first_fit:.1f} s from "
          f"sweep start to the first trial's fit (study, Tune, worker spawn, imports)")
    print(f"time outside training over the whole sweep: {overhead:.1f} s")
    print(f"{len(done)} trials, mean {report['mean_trial_s']} s inside fit, {slots} at a time, "
          f"sweep wall {sweep_wall:.1f} s")
    print(f"share of slot time inside training: {share:.1%} of the sweep's wall time, "
          f"{share_steady:.1%} after the fixed start-up (target >= 85%)")
    print(json.dumps(report))
    ray.shutdown()


if __name__ == "__main__":
    main()

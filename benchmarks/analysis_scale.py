"""``analyze rank``, ``report`` and ``importance`` on generated studies of 10,000 trials,
with 1, 2 and 3 objectives (targets: rank < 5 s, report < 30 s each).

    python benchmarks/analysis_scale.py [--trials 10000] [--objectives 1 2 3] [--dir DIR]
        [--screenshot docs/report-10000.png]

Writing the studies is timed separately; only reading, ranking and reporting count. Each
study has per-epoch rows (10 epochs) for every trial, as a sweep stores them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import create_trial

from search.db.storage import create_tables, epoch_metrics
from search.db.study import OBJECTIVE_ATTR
from search.objective import Objective

THIRD = "disentanglement_score"


def _spec(n_objectives: int) -> dict:
    if n_objectives == 1:
        return Objective(mode="scalar").describe()
    spec = Objective().describe()
    if n_objectives == 3:
        spec = {**spec, "names": [*spec["names"], THIRD],
                "directions": [*spec["directions"], "maximize"]}
    return spec


def generate(url: str, n: int, n_objectives: int, seed: int = 0, epochs: int = 10) -> None:
    """A study of ``n`` complete trials (5 % infeasible) plus their per-epoch rows."""
    rng = np.random.default_rng(seed)
    spec = _spec(n_objectives)
    storage = optuna.storages.RDBStorage(url)
    with storage.engine.connect() as conn:  # a scratch file: no fsync per trial
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql("PRAGMA journal_mode=MEMORY")
    study = optuna.create_study(storage=storage, study_name="big",
                                directions=spec["directions"])
    study.set_user_attr(OBJECTIVE_ATTR, spec)
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
        ind = float(np.clip(0.75 + 0.04 * rng.normal() + 0.004 * s1 + 0.02 * on, 0, 1))
        dis = float(np.clip(0.5 + 0.1 * rng.normal() + 0.005 * s2, 0, 1))
        values = {1: [0.5 * acc + 0.5 * ind], 2: [acc, ind], 3: [acc, ind, dis]}[n_objectives]
        collapsed = float(rng.random() < 0.05)
        attrs = {"zay_collapsed": collapsed, "zay_active_dims": 8.0, "feasible": collapsed < 1,
                 "disentanglement_score": dis, "baseline": i == 0}
        trials.append(create_trial(values=values, params=params, distributions=d,
                                   user_attrs=attrs,
                                   system_attrs={"constraints": [collapsed - 0.5]}))
    study.add_trials(trials[:1])  # through Optuna: the schema and the study as it makes them
    engine = sa.create_engine(url)
    _bulk_add_trials(engine, study._study_id, trials[1:], first_number=1)
    create_tables(engine)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT trial_id FROM trials ORDER BY number"))]
        rows = []
        for tid in ids:
            start = 100 + 10 * rng.random()
            for e in range(epochs):
                stage = 1 if e < epochs // 3 else 2 if e < 2 * epochs // 3 else 3
                rows.append({"trial_id": tid, "epoch": e, "stage": stage, "metrics": json.dumps(
                    {"epoch": float(e), "stage": float(stage),
                     "val_loss": start * 0.9 ** e})})
        conn.execute(epoch_metrics.insert(), rows)
    engine.dispose()


def _bulk_add_trials(engine: sa.Engine, study_id: int, trials: list, *,
                     first_number: int) -> None:
    """Insert complete trials into Optuna's tables in one transaction, rows exactly as
    ``Study.add_trials`` writes them (one commit per trial there takes minutes for 10,000
    on a busy machine; this takes seconds)."""
    from optuna.distributions import distribution_to_json

    meta = sa.MetaData()
    names = ("trials", "trial_values", "trial_params", "trial_user_attributes",
             "trial_system_attributes")
    tables = {n: sa.Table(n, meta, autoload_with=engine) for n in names}
    with engine.begin() as conn:
        start = conn.execute(sa.text("SELECT COALESCE(MAX(trial_id), 0) FROM trials")
                             ).scalar_one() + 1
        rows: dict[str, list[dict]] = {n: [] for n in names}
        for k, t in enumerate(trials):
            tid = start + k
            rows["trials"].append({"trial_id": tid, "number": first_number + k,
                                   "study_id": study_id, "state": "COMPLETE",
                                   "datetime_start": t.datetime_start,
                                   "datetime_complete": t.datetime_complete})
            for i, v in enumerate(t.values):
                rows["trial_values"].append({"trial_id": tid, "objective": i, "value": v,
                                             "value_type": "FINITE"})
            for name, value in t.params.items():
                dist = t.distributions[name]
                rows["trial_params"].append({
                    "trial_id": tid, "param_name": name,
                    "param_value": dist.to_internal_repr(value),
                    "distribution_json": distribution_to_json(dist)})
            for key, value in t.user_attrs.items():
                rows["trial_user_attributes"].append({"trial_id": tid, "key": key,
                                                      "value_json": json.dumps(value)})
            for key, value in t.system_attrs.items():
                rows["trial_system_attributes"].append({"trial_id": tid, "key": key,
                                                        "value_json": json.dumps(value)})
        for name in names:
            if rows[name]:
                conn.execute(tables[name].insert(), rows[name])


def screenshot(report: Path, png: Path, *, width: int = 1400, height: int = 2600) -> None:
    """A headless-Chromium screenshot of a report (PNG under 1 MB via 8-bit colour)."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("screenshots need Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        "--virtual-time-budget=20000", f"--window-size={width},{height}",
                        f"--screenshot={png}", f"file://{report.resolve()}"],
                       check=True, capture_output=True, timeout=300)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10_000, help="trials per study")
    p.add_argument("--objectives", type=int, nargs="+", default=[1, 2, 3],
                   help="objective counts to measure")
    p.add_argument("--dir", default=None, help="where the studies go (default: a temp dir; "
                                               "an existing database there is reused)")
    p.add_argument("--screenshot", default=None,
                   help="also save a screenshot of the 2-objective report here")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp())
    tmp.mkdir(parents=True, exist_ok=True)
    from analysis.cli import main as analysis_main

    results = []
    for k in args.objectives:
        db = tmp / f"big-{k}obj-{args.trials}.db"
        url = f"sqlite:///{db}"
        if not db.exists():
            t = time.perf_counter()
            generate(url, args.trials, k)
            print(f"{k} objective(s): generated {args.trials} trials in "
                  f"{time.perf_counter() - t:.1f} s (not counted)", flush=True)
        out = tmp / f"out-{k}"
        timings = {}
        for cmd in ("rank", "report", "importance"):
            argv = [cmd, "--storage", url, "--study", "big", "--out", str(out)]
            argv += {"rank": ["--top", "3"], "report": [], "importance": []}[cmd]
            t, c = time.perf_counter(), _cpu_s()
            assert analysis_main(argv) == 0
            timings[cmd] = time.perf_counter() - t
            timings[f"{cmd}_cpu"] = _cpu_s() - c
        size = (out / "report.html").stat().st_size / 1e6
        results.append((k, timings, size))
        if args.screenshot and k == 2:
            screenshot(out / "report.html", Path(args.screenshot))
    print()
    print(f"wall-clock seconds (CPU seconds of this process and the children it reaped; "
          f"kaleido's browser may be missing from them); load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for k, t, size in results:
        print(f"{args.trials} trials, {k} objective(s): rank {t['rank']:.2f} s "
              f"({t['rank_cpu']:.2f}), report {t['report']:.2f} s ({t['report_cpu']:.2f}; "
              f"report.html {size:.1f} MB, PNGs included), importance "
              f"{t['importance']:.2f} s ({t['importance_cpu']:.2f})   "
              "[targets: rank < 5 s, report < 30 s]")


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


if __name__ == "__main__":
    main()

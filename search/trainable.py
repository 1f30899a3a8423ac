"""The Tune trainable: a plain function that calls ``trainer.fit``.

It runs in a Ray worker, knows nothing of the database, and reports one flat dict per
epoch, then the final metrics with ``final = 1``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from typing import Any

import numpy as np

from search.objective import EPOCH_SCORE, Objective


def run_trial_config(config: dict[str, Any], report) -> dict[str, Any]:
    """Train the configuration a searcher suggested; ``report`` gets each epoch's row."""
    import torch

    from trainer import RunConfig, fit
    from trainer._config import apply_flat

    for module in config.get("imports", []):
        importlib.import_module(module)
    threads = config.get("threads")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    objective = Objective(**config["objective"])
    base = RunConfig.from_dict(apply_flat(config["base"], config["params"]))
    cfg = base.replace(write_plots=False)
    stage3_start = cfg.stage3_start

    def on_epoch(row: dict[str, float]) -> None:
        row = dict(row)
        # epochs since stage 3 began: the scheduler's clock, so that no rung can cut a
        # trial before zay has been brought in
        row["stage3_epoch"] = float(max(0, int(row["epoch"]) - stage3_start + 1))
        score = objective.epoch_score(row)
        if score is not None:
            row[EPOCH_SCORE] = score
        row["final"] = 0.0
        report(row)

    seeds = int(config.get("seeds", 1))
    finals, analysis = [], None
    t0, started_at = time.perf_counter(), time.time()
    for k in range(seeds):
        result = fit(cfg.replace(seed=cfg.seed + k), report=on_epoch if k == 0 else None)
        finals.append(result.final)
        analysis = analysis or result.analysis
    fit_seconds = time.perf_counter() - t0
    final = {key: float(np.mean([f[key] for f in finals])) for key in finals[0]
             if all(key in f for f in finals)}
    final["fit_seconds"] = fit_seconds  # wall time inside trainer.fit, all seeds
    final["fit_started_at"] = started_at  # unix time, for the sweep's start-up cost
    if seeds > 1:
        for key in objective.names:
            if key in final:
                final[f"{key}_std"] = float(np.std([f[key] for f in finals]))
        final["seeds"] = float(seeds)
    if "zay_collapsed" in final:  # collapsed in any seed counts as collapsed
        final["zay_collapsed"] = float(max(f.get("zay_collapsed", 0.0) for f in finals))
    final["stage3_epoch"] = float(cfg.optim.epochs - stage3_start)
    last_score = objective.epoch_score(result.history[-1]) if result.history else None
    if last_score is not None:  # a scheduler expects its metric in every result
        final[EPOCH_SCORE] = last_score
    final["final"] = 1.0
    final["config_json"] = cfg.to_json()
    final["correlations_json"] = json.dumps(analysis["correlations"]) if analysis else "{}"
    return final


def tune_trainable(config: dict[str, Any]) -> None:
    """Entry point Ray Tune runs in a worker."""
    from ray import tune

    os.environ.setdefault("OMP_NUM_THREADS", str(config.get("threads", 1)))
    final = run_trial_config(config, tune.report)
    tune.report(final)

"""What Ray Tune runs in a worker: one solo trial or one population of trials.

Its own module so that the runners stay below it: ``search.trainable`` (one trial
through ``trainer.fit``), ``search.replicates`` (a setting's seeds) and
``search.population`` (K trials × R seeds as one vectorised model), which builds on the
first two; none imports this one.
"""

from __future__ import annotations

import json
import os
from typing import Any

from search.replicates import OPTION
from search.trainable import failure_result, run_trial_config


def run_config(config: dict[str, Any], report, where: dict[str, Any]) -> dict[str, Any]:
    """Run a trial's config: a population (``members``), one setting's replicates as a
    population of one setting, or one run."""
    from search.population import MEMBER, run_population_config

    if "members" in config:  # K Optuna trials in one Ray trial
        return run_population_config(config, report, where)
    if config.get(OPTION):  # one setting, R seeds side by side; told as a solo trial
        members = {**config, "members": [{"params": config["params"]}]}
        out = run_population_config(
            members, lambda row: report({k: v for k, v in row.items() if k != MEMBER}),
            where)
        return json.loads(out["members_json"])[0]
    return run_trial_config(config, report, where)


def tune_trainable(config: dict[str, Any]) -> None:
    """Entry point Ray Tune runs in a worker."""
    from ray import tune

    os.environ.setdefault("OMP_NUM_THREADS", str(config.get("threads", 1)))
    import ray

    # the Ray node the trial ran on, stored on the trial (cluster sweeps: placement)
    node_id = ray.get_runtime_context().get_node_id()

    def report(row: dict[str, Any]) -> None:
        tune.report({**row, "node_id": node_id})

    where: dict[str, Any] = {}
    try:
        final = run_config(config, report, where)
    except Exception as exc:  # deterministic: told FAIL at once, never retried
        report(failure_result(exc, where))
        return
    report(final)

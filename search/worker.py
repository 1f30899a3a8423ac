"""What Ray Tune runs in a worker: one solo trial or one population of trials.

Its own module so that the two runners stay below it: ``search.trainable`` (one trial
through ``trainer.fit``) and ``search.population`` (K trials as one vectorised model),
which builds on the first; neither imports this one.
"""

from __future__ import annotations

import os
from typing import Any

from search.trainable import failure_result, run_trial_config


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
    run = run_trial_config
    if "members" in config:  # K Optuna trials in one Ray trial (search.population)
        from search.population import run_population_config as run
    try:
        final = run(config, report, where)
    except Exception as exc:  # deterministic: told FAIL at once, never retried
        report(failure_result(exc, where))
        return
    report(final)

"""The worker's side: what Ray Tune runs in a worker, any request through one entry.

``tune_trainable`` decodes the Ray trial's config into a ``search.contract.Request`` and
``answer`` runs it: one setting once (``solo``, ``trainer.fit``), or, with replicates,
leave-one-domain-out folds or several settings, as one vectorised population
(``population``, ``trainer.fit_population``; ``replicates`` averages a setting's runs).
Every answer goes back encoded by the contract. A worker knows nothing of the driver or
the study database (an import-linter contract).
"""

from __future__ import annotations

import os
from typing import Any

from search.contract import Request, population_final, read_epoch
from search.worker.solo import failure_result, run_trial

__all__ = ["answer", "tune_trainable"]


def answer(request: Request, report, where: dict[str, Any], trial_id: str | None = None
           ) -> dict[str, Any]:
    """Run ``request`` (in Ray trial ``trial_id``); its final result as the contract
    encodes it. ``report`` gets the epoch rows (a population's with each setting's index;
    one setting's replicates as a solo trial's)."""
    from search.worker.population import run_population

    if request.population:  # K Optuna trials (or planned runs) in one Ray trial
        answers = run_population(request, report, where, trial_id=trial_id)
        return population_final(answers, len(answers) * len(request.runs()))
    if request.replication is not None:  # one setting, R seeds side by side
        # told as a solo trial: its rows without the setting's index
        (one,) = run_population(request, lambda row: report(read_epoch(row)[1]), where)
        return one.encode()
    return run_trial(request, report, where).encode()


def tune_trainable(config: dict[str, Any]) -> None:
    """Entry point Ray Tune runs in a worker."""
    from ray import tune

    os.environ.setdefault("OMP_NUM_THREADS", str(config.get("threads", 1)))
    import ray

    # the Ray node the trial ran on, stored on the trial (cluster sweeps: placement)
    node_id = ray.get_runtime_context().get_node_id()
    trial_id = tune.get_context().get_trial_id()

    def report(row: dict[str, Any]) -> None:
        tune.report({**row, "node_id": node_id})

    where: dict[str, Any] = {}
    try:
        final = answer(Request.from_config(config), report, where, trial_id)
    except Exception as exc:  # deterministic: told FAIL at once, never retried
        report(failure_result(exc, where).encode())
        return
    report(final)

"""Parameter importance per objective: Optuna's PED-ANOVA, and fANOVA where affordable.

The evaluators want an Optuna study. Analysis never opens the database through Optuna's
storage (it may write), so the loaded records are turned into ``FrozenTrial`` objects
in an in-memory study.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from analysis._load import AnalysisError, StudyData

#: fANOVA fits random forests per objective (seconds per 100 trials on a small CPU):
#: beyond this many trials only PED-ANOVA runs
FANOVA_MAX_TRIALS = 500
EVALUATORS = ("ped-anova", "fanova")
PARETO_TARGET = "Pareto front"


def _distribution(spec: dict[str, Any]):
    import json

    from optuna.distributions import json_to_distribution

    return json_to_distribution(json.dumps(spec))


def in_memory_study(data: StudyData, trials: pd.DataFrame):
    """An Optuna study in memory holding ``trials`` (complete, with values) as they ran."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    dists = {name: _distribution(spec) for name, spec in data.distributions.items()}
    names = [p for p in dists if p in trials.columns]
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line
    study = optuna.create_study(directions=data.directions,
                                storage=optuna.storages.InMemoryStorage())
    frozen = []
    records = trials[[*names, *data.objectives]].to_dict("records")
    for rec in records:
        params, used = {}, {}
        for p in names:
            value = rec[p]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue  # a conditional parameter this trial did not have
            d = dists[p]
            if isinstance(d, CategoricalDistribution):
                if value not in d.choices:
                    continue
            elif isinstance(value, (bool, np.bool_)):
                continue
            params[p] = value.item() if isinstance(value, np.generic) else value
            used[p] = d
        frozen.append(create_trial(values=[float(rec[o]) for o in data.objectives],
                                   params=params, distributions=used))
    study.add_trials(frozen)
    return study


def param_importances(data: StudyData, trials: pd.DataFrame, *,
                      evaluators: tuple[str, ...] = EVALUATORS,
                      seed: int = 0) -> pd.DataFrame:
    """Importance of each searched parameter for each objective (and, with several
    objectives, for reaching the Pareto front).

    Returns a long table: ``evaluator, target, param, importance`` (importances of one
    evaluator and target sum to 1), most important first. fANOVA is skipped above
    ``FANOVA_MAX_TRIALS`` trials.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    scored = trials[trials[data.objectives].notna().all(axis=1)]
    varying = [p for p in data.distributions if p in scored.columns
               and scored[p].dropna().astype(str).nunique() > 1]
    if len(scored) < 4 or not varying:
        raise AnalysisError(f"importance needs at least 4 complete trials and a parameter "
                            f"that varies (have {len(scored)} trials, varying: "
                            f"{', '.join(varying) or 'none'})")
    study = in_memory_study(data, scored)
    rows = []
    targets: list[tuple[str, Any]] = []
    for i, (name, direction) in enumerate(zip(data.objectives, data.directions, strict=True)):
        sign = -1.0 if direction == "maximize" else 1.0
        targets.append((name, (lambda t, i=i, s=sign: s * t.values[i])))
    for evaluator_name in evaluators:
        if evaluator_name == "fanova" and len(scored) > FANOVA_MAX_TRIALS:
            continue
        evaluator = (PedAnovaImportanceEvaluator() if evaluator_name == "ped-anova"
                     else FanovaImportanceEvaluator(seed=seed))
        todo = list(targets)
        if evaluator_name == "ped-anova" and len(data.objectives) > 1:
            todo.append((PARETO_TARGET, None))  # PED-ANOVA's own multi-objective mode
        for target_name, target in todo:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.logging.set_verbosity(optuna.logging.ERROR)
                result = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, params=varying, target=target,
                    normalize=True)
            for param, value in result.items():
                rows.append({"evaluator": evaluator_name, "target": target_name,
                             "param": param, "importance": float(value)})
    table = pd.DataFrame(rows, columns=["evaluator", "target", "param", "importance"])
    return table.sort_values(["evaluator", "target", "importance"],
                             ascending=[True, True, False], ignore_index=True)

"""Replicates (``--replicates R``): every suggested setting trained with R seeds.

Replicate r of every setting uses the same seed, ``seed + r`` of the sweep's base
configuration, so that a difference between two settings is not a difference between
their seeds (paired). The data split is pinned to the base configuration's
(``split_seed``): replicates vary the model's initialisation, batch order and posterior
noise, share one data set, and so train side by side as members of one vectorised
population (K settings × R seeds as K·R members, ``search.population``). Whether a
setting's advantage survives other splits is what ``stagetune confirm`` asks, on fresh
seeds that draw fresh splits.

A trial's objective values are the means over its replicates. Its per-epoch rows (what
the study stores and ASHA compares) are the replicates' rows averaged epoch by epoch.
Beside the means, the trial stores each objective's standard deviation over seeds
(``<name>_sd``, n - 1 in the denominator) and standard error (``<name>_se`` = sd / √R),
the per-seed values (``replicate_values``) and the seeds (``replicate_seeds``). A setting
that diverges on any seed fails, with that seed named.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from search.objective import Objective
from search.trainable import epoch_result
from trainer.objectives import COLLAPSE_FLAG, DISENTANGLEMENT_OBJECTIVES, TASK_OBJECTIVE

#: the final metrics whose spread over seeds is stored (every selectable objective)
SPREAD_METRICS = (TASK_OBJECTIVE, *DISENTANGLEMENT_OBJECTIVES)
#: trial options key: ``{"seeds": [...], "split_seed": int}``
OPTION = "replicates"


def seeds_for(base_seed: int, replicates: int) -> list[int]:
    """The replicate seeds of a sweep whose base configuration has ``base_seed``."""
    if replicates < 1:
        raise ValueError(f"--replicates must be at least 1 (got {replicates})")
    return [base_seed + r for r in range(replicates)]


def trial_option(base_seed: int, split_seed: int, replicates: int) -> dict[str, Any] | None:
    """What a trial needs to train its replicates (``None`` for one seed)."""
    if replicates == 1:
        return None
    return {"seeds": seeds_for(base_seed, replicates), "split_seed": int(split_seed)}


def replicate_seeds(config: dict[str, Any]) -> list[int | None]:
    """A trial's replicate seeds; ``[None]`` when it trains its setting once."""
    option = config.get(OPTION)
    return list(option["seeds"]) if option else [None]


def replicate_config(cfg, seed: int | None, config: dict[str, Any]):
    """Replicate ``seed`` of the setting ``cfg`` (itself when ``seed`` is None)."""
    if seed is None:
        return cfg
    return cfg.replace(seed=int(seed), split_seed=int(config[OPTION]["split_seed"]))


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """Rows of one epoch averaged key by key (keys every row has); ``replicates`` counts
    the rows."""
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    for k in ("epoch", "stage"):
        if k in out:
            out[k] = float(rows[0][k])
    out["replicates"] = float(len(rows))
    return out


def _ended(row: dict[str, float], cfg) -> bool:
    return int(row["epoch"]) >= cfg.optim.epochs - 1 or bool(row.get("stopped_early"))


class Replicates:
    """Averages the epoch rows of each setting's replicates as a population reports them.

    ``add`` takes one epoch's rows by run index and returns, per setting, its averaged
    row to report now. The row on which the last of a setting's replicates ends is held
    (``held``) for the final result, so a scheduler that stops a trial on the epoch it
    ends anyway stops a finished trial, not a pruned one.
    """

    def __init__(self, settings: list, owner: list[int], objective: Objective) -> None:
        self.settings, self.owner, self.objective = settings, owner, objective
        self.live = {k: {j for j, o in enumerate(owner) if o == k}
                     for k in range(len(settings))}
        self.held: dict[int, dict[str, float]] = {}
        self._raw: dict[int, dict[str, float]] = {}

    def add(self, rows: dict[int, dict[str, float]]) -> list[tuple[int, dict[str, float]]]:
        by_setting: dict[int, list[int]] = {}
        for j in rows:
            by_setting.setdefault(self.owner[j], []).append(j)
        out = []
        for k, runs in sorted(by_setting.items()):
            raw = mean_rows([rows[j] for j in runs])
            cfg = self.settings[k]
            self.live[k] -= {j for j in runs if _ended(rows[j], cfg)}
            self._raw[k] = raw
            row = epoch_result(raw, cfg, self.objective)
            if self.live[k]:
                out.append((k, row))
            else:
                self.held[k] = row
        return out

    def last_raw(self, k: int) -> dict[str, float] | None:
        """Setting ``k``'s last averaged row, before the trial's bookkeeping."""
        return self._raw.get(k)


def combine(finals: list[dict[str, float]], seeds: list[int | None],
            objective: Objective) -> dict[str, Any]:
    """One setting's final result from its replicates' (same order as ``seeds``).

    Means of every numeric metric all replicates have; for the objectives and every
    selectable metric, ``<name>_sd`` and ``<name>_se`` and the per-seed values; collapse
    in any seed counts as collapse.
    """
    n = len(finals)
    keys = [k for k in finals[0] if all(k in f for f in finals)
            and isinstance(finals[0][k], int | float)]
    out: dict[str, Any] = {k: float(np.mean([f[k] for f in finals])) for k in keys}
    values: dict[str, list[float]] = {}
    for name in dict.fromkeys((*objective.names, *SPREAD_METRICS)):
        if name not in out:
            continue
        per_seed = [float(f[name]) for f in finals]
        values[name] = per_seed
        sd = float(np.std(per_seed, ddof=1)) if n > 1 else math.nan
        out[f"{name}_sd"] = sd
        out[f"{name}_se"] = sd / math.sqrt(n)
    if COLLAPSE_FLAG in out:
        out[COLLAPSE_FLAG] = float(max(f.get(COLLAPSE_FLAG, 0.0) for f in finals))
    for key in ("fit_seconds", "fit_started_at", "population_size"):  # the run's, not means
        if key in finals[0]:
            out[key] = float(finals[0][key])
    out["replicates"] = float(n)
    out["replicate_seeds_json"] = json.dumps([int(s) for s in seeds if s is not None])
    out["replicate_values_json"] = json.dumps(values)
    return out


def with_seed(failure_json: str, seed: int | None) -> str:
    """A failure's details with the replicate seed that failed named in its reason."""
    details = json.loads(failure_json)
    details["reason"] = f"replicate seed {seed}: {details.get('reason', 'failed')}"
    details["seed"] = seed
    return json.dumps(details)

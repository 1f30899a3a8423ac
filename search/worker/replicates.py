"""Replicates (``--replicates R``): every suggested setting trained with R seeds.

Replicate r of every setting uses the same seed, ``seed + r`` of the sweep's base
configuration, so that a difference between two settings is not a difference between
their seeds (paired). The data split is pinned to the base configuration's
(``split_seed``): replicates vary the model's initialisation, batch order and posterior
noise, share one data set, and so train side by side as members of one vectorised
population (K settings × R seeds as K·R members, ``search.worker.population``). Whether a
setting's advantage survives other splits is what ``stagetune confirm`` asks, on fresh
seeds that draw fresh splits.

A trial's objective values are the means over its replicates. Its per-epoch rows (what
the study stores and ASHA compares) are the replicates' rows averaged epoch by epoch.
Beside the means, the trial stores each objective's standard deviation over seeds
(``<name>_sd``, n - 1 in the denominator) and standard error (``<name>_se`` = sd / √R),
the per-seed values (``replicate_values``) and the seeds (``replicate_seeds``). A setting
that diverges on any seed fails, with that seed named.

Leave-one-domain-out (``--lodo``) adds folds: each replicate seed is trained once per
training domain, that domain held out as the run's validation domain (``val_domain``),
and the trial's task objective is ``lodo_accuracy``, the mean of the folds' held-out
accuracies (DIVA's rotated-MNIST protocol). Folds hold different data, so they train as
one population per fold, one after another; their epoch rows are averaged once all folds
have run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from search.contract import Replication
from search.objective import LODO_METRIC, TASK_METRICS, Objective
from search.worker.solo import epoch_result
from trainer.objectives import COLLAPSE_FLAG, DISENTANGLEMENT_OBJECTIVES

#: a run's accuracy on its held-out validation domain (a LODO fold's held-out accuracy)
HELD_OUT = "acc_y_val_domain"
#: the final metrics whose spread over seeds is stored: every selectable objective, and
#: the test domain's accuracy (reported only, never selected on)
SPREAD_METRICS = (*TASK_METRICS, *DISENTANGLEMENT_OBJECTIVES, "acc_y_test_domain")


def seeds_for(base_seed: int, replicates: int) -> list[int]:
    """The replicate seeds of a sweep whose base configuration has ``base_seed``."""
    if replicates < 1:
        raise ValueError(f"--replicates must be at least 1 (got {replicates})")
    return [base_seed + r for r in range(replicates)]


def replication(base_seed: int, split_seed: int, replicates: int,
                folds: list[int] | None = None) -> Replication | None:
    """What a trial needs to train its replicates and leave-one-domain-out folds
    (``None`` for one seed and no folds)."""
    if replicates == 1 and not folds:
        return None
    return Replication(tuple(seeds_for(base_seed, replicates)), int(split_seed),
                       tuple(int(k) for k in folds) if folds else None)


def run_config(cfg, run: tuple[int | None, int | None], rep: Replication | None):
    """The setting ``cfg`` for one of its runs: its seed (on the pinned split) and, for a
    leave-one-domain-out fold, that training domain held out as the validation domain."""
    seed, fold = run
    if seed is None or rep is None:
        return cfg
    cfg = cfg.replace(seed=seed, split_seed=rep.split_seed)
    return cfg if fold is None else cfg.replace(val_domain=int(fold))


def lodo_folds(domains: int, test_domain: int | None, val_domain: int | None) -> list[int]:
    """The held-out training domains of ``--lodo``: every domain but the test domain.

    Raises:
        ValueError: a validation domain is set (LODO picks its own), or fewer than two
            training domains are left.
    """
    if val_domain is not None:
        raise ValueError("--lodo holds out each training domain in turn; leave the base "
                         "configuration's val_domain unset")
    folds = [k for k in range(domains) if k != test_domain]
    if len(folds) < 2:
        raise ValueError(f"--lodo needs at least two training domains (the data has "
                         f"{domains}, test domain {test_domain})")
    return folds


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """Rows of one epoch averaged key by key (keys every row has); ``replicates`` counts
    the rows."""
    out = _mean_final(rows)
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
    row to report now. A replicate that stopped early (stage-3 patience) keeps its last
    row in the average of every later epoch, so each epoch's mean is over the same seeds
    (averaging only the replicates still running would lift a setting whose weak seed
    stopped first). The row on which the last of a setting's replicates ends is held
    (``held``) for the final result, so a scheduler that stops a trial on the epoch it
    ends anyway stops a finished trial, not a pruned one.
    """

    def __init__(self, settings: list, owner: list[int], objective: Objective) -> None:
        self.settings, self.owner, self.objective = settings, owner, objective
        self.runs = {k: {j for j, o in enumerate(owner) if o == k}
                     for k in range(len(settings))}
        self.live = {k: set(runs) for k, runs in self.runs.items()}
        self.held: dict[int, dict[str, float]] = {}
        self._raw: dict[int, dict[str, float]] = {}
        self._last: dict[int, dict[str, float]] = {}  # each run's latest row

    def add_setting(self, cfg, runs: list[int]) -> int:
        """A setting joining (a refill), trained by the new runs ``runs``; its index."""
        k = len(self.settings)  # (a setting that could not be built: cfg None, no runs)
        if runs != list(range(len(self.owner), len(self.owner) + len(runs))):
            raise ValueError(f"runs {runs} do not follow the {len(self.owner)} known runs")
        self.settings.append(cfg)
        self.owner.extend([k] * len(runs))
        self.runs[k] = set(runs)
        self.live[k] = set(runs)
        return k

    def add(self, rows: dict[int, dict[str, float]]) -> list[tuple[int, dict[str, float]]]:
        by_setting: dict[int, list[int]] = {}
        for j in rows:
            by_setting.setdefault(self.owner[j], []).append(j)
        out = []
        for k, runs in sorted(by_setting.items()):
            ended = sorted(j for j in self.runs[k] - set(runs)
                           if j not in self.live[k] and j in self._last)
            raw = mean_rows([rows[j] for j in runs] + [self._last[j] for j in ended])
            self._last.update({j: rows[j] for j in runs})
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


def combine(finals: list[dict[str, float]], runs: list[tuple[int | None, int | None]],
            objective: Objective) -> tuple[dict[str, float], dict[str, Any]]:
    """One setting's final result from its runs' (same order as ``runs``).

    Leave-one-domain-out folds are averaged first, seed by seed: ``lodo_accuracy`` is the
    mean over folds of each fold's held-out accuracy (``acc_y_val_domain``), and
    ``lodo_acc_domain_<k>`` the held-out accuracy of domain k (mean over seeds). Then
    the seeds: means of every numeric metric all have; for the objectives (a scalar
    study's ``scalar_score`` seed by seed) and every selectable metric, ``<name>_sd`` and
    ``<name>_se`` (over seeds) and the per-seed values; collapse in any run counts as
    collapse. Returns the metrics and the ``Outcome`` fields beside them
    (``replicate_seeds``, ``replicate_values``, ``lodo_domains``).
    """
    seeds = list(dict.fromkeys(seed for seed, _ in runs))
    folds = list(dict.fromkeys(fold for _, fold in runs if fold is not None))
    per_seed = []
    for seed in seeds:
        mine = [f for f, (s, _) in zip(finals, runs, strict=True) if s == seed]
        per_seed.append(_mean_final(mine) if folds else dict(mine[0]))
        if folds:
            per_seed[-1][LODO_METRIC] = per_seed[-1].get(HELD_OUT, math.nan)
        if objective.mode == "scalar":  # each seed's weighted score, for its spread
            per_seed[-1].update(objective.named_values(per_seed[-1]))
    n = len(per_seed)
    out = _mean_final(per_seed)
    for fold in folds:
        held = [f.get(HELD_OUT, math.nan) for f, (_, k) in zip(finals, runs, strict=True)
                if k == fold]
        out[f"lodo_acc_domain_{fold}"] = float(np.mean(held))
    values: dict[str, list[float]] = {}
    for name in dict.fromkeys((*objective.names, *SPREAD_METRICS)):
        if name not in out:
            continue
        values[name] = [float(f[name]) for f in per_seed]
        sd = float(np.std(values[name], ddof=1)) if n > 1 else math.nan
        out[f"{name}_sd"] = sd
        out[f"{name}_se"] = sd / math.sqrt(n)
    if COLLAPSE_FLAG in out:
        out[COLLAPSE_FLAG] = float(max(f.get(COLLAPSE_FLAG, 0.0) for f in finals))
    for key in ("fit_seconds", "fit_cpu_seconds", "fit_started_at",
                "population_size"):  # the run's, not means
        if key in finals[0]:
            out[key] = float(finals[0][key])
    out["replicates"] = float(n)
    attrs: dict[str, Any] = {"replicate_seeds": [int(s) for s in seeds if s is not None],
                             "replicate_values": values}
    if folds:
        out["lodo_folds"] = float(len(folds))
        attrs["lodo_domains"] = folds
    return out, attrs


def _mean_final(finals: list[dict[str, float]]) -> dict[str, float]:
    """Numeric metrics every one of ``finals`` has, averaged."""
    keys = [k for k in finals[0] if all(k in f for f in finals)
            and isinstance(finals[0][k], int | float)]
    return {k: float(np.mean([f[k] for f in finals])) for k in keys}

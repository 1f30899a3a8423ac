"""Population trials (``--population K``): K Optuna trials trained as one Ray trial.

The searcher asks up to K Optuna trials at once (each counted toward the study's total
and tagged like a solo trial), the trainable trains them with ``trainer.fit_population``
(members that cannot share a model go to separate populations, one after another) and
reports every epoch row with its member's index, then one final result holding every
member's final result. Each member is then told exactly as a solo trial would be (the
solo searcher's own code, keyed per member): its epoch rows, its final metrics, state,
failure reason. A stopped driver or a lost worker leaves each member RUNNING or FAILED
on its own, so a resume re-queues a half-finished population member by member.

The Ray trial's resources (``--cpus-per-trial``, ``--gpus-per-trial``) are the whole
population's. ASHA is refused: its rungs stop a whole Ray trial on one score, while a
population trial carries K members with K scores.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

from ray.tune.search import Searcher

from search.searcher import StudySearcher
from search.trainable import epoch_result, failure_result, final_result, trial_setup

MEMBER = "member"  # key of a member's index in its epoch rows


def member_key(trial_id: str, k: int) -> str:
    """The searcher's key for member ``k`` of Ray trial ``trial_id``."""
    return f"{trial_id}#{k}"


def check_population(population: int, *, asha: bool, seeds: int) -> None:
    """Refuse settings a population trial cannot honour, in one line each."""
    if population < 1:
        raise ValueError(f"--population must be at least 1 (got {population})")
    if population > 1 and asha:
        raise ValueError("--asha cannot be combined with --population: ASHA stops a whole "
                         "Ray trial on one score, and a population trial holds one score "
                         "per member; use one of the two")
    if population > 1 and seeds > 1:
        raise ValueError("--seeds > 1 cannot be combined with --population yet; run the "
                         "seeds as separate sweeps or use --population 1")


class PopulationSearcher(StudySearcher):
    """Suggests K Optuna trials per Ray trial and tells each member on its own."""

    def __init__(self, *args: Any, size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = size
        self._sizes: dict[str, int] = {}  # Ray trial id -> how many members it holds

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stopping:
            return Searcher.FINISHED
        members = []
        for k in range(self.size):
            asked = self._ask(trial_id, member_key(trial_id, k))
            if asked is None:  # the study's total is reached: a smaller population
                break
            trial, params = asked
            trial.set_user_attr("population_member", k)
            members.append({"params": params, "optuna_number": trial.number})
        if not members:
            return Searcher.FINISHED
        self._sizes[trial_id] = len(members)
        return {"members": members, "base": self.base_config, **self.trial_options}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if MEMBER not in result:
            return
        k = int(result[MEMBER])
        row = {key: v for key, v in result.items() if key != MEMBER}
        super().on_trial_result(member_key(trial_id, k), row)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        size = self._sizes.pop(trial_id, 0)
        result = result or {}
        members = json.loads(result["members_json"]) if "members_json" in result else None
        for k in range(size):
            if members is not None:
                member_result = dict(members[k])
                if "node_id" in result:
                    member_result["node_id"] = result["node_id"]
            else:  # no per-member results: the whole population raised, stopped or died
                member_result = dict(result)
            super().on_trial_complete(member_key(trial_id, k), member_result, error)


def searcher_class(population: int) -> type[StudySearcher] | partial:
    """The searcher a sweep with ``--population`` uses."""
    if population > 1:
        return partial(PopulationSearcher, size=population)
    return StudySearcher


def run_population_config(config: dict[str, Any], report,
                          where: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the members a ``PopulationSearcher`` suggested; ``report`` gets every epoch
    row with its member's index; returns the final result with ``members_json``."""
    from trainer import (
        DivergenceError,
        RunConfig,
        apply_flat,
        fit_population,
        group_population,
    )

    where = where if where is not None else {}
    where.update(phase="setup", epoch=None, stage=None)
    objective = trial_setup(config)
    cfgs = [RunConfig.from_dict(apply_flat(config["base"], m["params"])).replace(
        write_plots=False) for m in config["members"]]
    # the members' probes run in torch on the trial's device, all in one batch
    # (trainer.metrics.fit_probes)
    results: list[dict[str, Any] | None] = [None] * len(cfgs)
    for group in group_population(cfgs):
        where.update(phase="training", epoch=0)

        def on_epoch(j: int, row: dict[str, float], group: list[int] = group) -> None:
            k = group[j]
            where.update(epoch=int(row["epoch"]), stage=int(row["stage"]))
            report({**epoch_result(row, cfgs[k], objective), MEMBER: float(k)})

        t0, started_at = time.perf_counter(), time.time()
        try:
            outcomes = fit_population([cfgs[k] for k in group], report=on_epoch)
        except Exception as exc:  # this group's settings fail; other groups' results stand
            for k in group:
                results[k] = failure_result(exc, dict(where))
            continue
        seconds = time.perf_counter() - t0
        for k, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, DivergenceError):
                results[k] = failure_result(outcome, {"phase": "training"})
                continue
            final = dict(outcome.final)
            final["fit_seconds"] = seconds  # wall time of the whole population's fit
            final["fit_started_at"] = started_at
            final["population_size"] = float(len(group))
            results[k] = final_result(final, cfgs[k], objective, outcome.history,
                                      outcome.analysis)
    return {"final": 1.0, "members_json": json.dumps(results), "population": float(len(cfgs))}

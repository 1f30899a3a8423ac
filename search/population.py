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

from search.replicates import Replicates, combine, run_config, trial_runs, with_seed
from search.searcher import StudySearcher
from search.trainable import failure_result, final_result, trial_setup

MEMBER = "member"  # key of a member's index in its epoch rows


def member_key(trial_id: str, k: int) -> str:
    """The searcher's key for member ``k`` of Ray trial ``trial_id``."""
    return f"{trial_id}#{k}"


def check_population(population: int, *, asha: bool, replicates: int) -> None:
    """Refuse settings a population trial cannot honour, in one line each."""
    if population < 1:
        raise ValueError(f"--population must be at least 1 (got {population})")
    if population > 1 and asha:
        raise ValueError("--asha cannot be combined with --population: ASHA stops a whole "
                         "Ray trial on one score, and a population trial holds one score "
                         "per member; use one of the two")
    if replicates < 1:
        raise ValueError(f"--replicates must be at least 1 (got {replicates})")


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
    """Train the members a ``PopulationSearcher`` suggested, each with its replicates.

    Every member (an Optuna trial's setting) is trained once per replicate seed
    (``config["replicates"]``; one run with the base seed when absent), all as members of
    one vectorised population: K settings × R seeds are K·R models trained side by side,
    their data split pinned so that they share one data set. ``report`` gets, every
    epoch, each setting's row averaged over its replicates, with the setting's index
    (``MEMBER``); the row on which all of a setting's replicates have ended travels in its
    final result instead (``last_epoch_json``, as in a solo trial). Returns the final
    result with ``members_json``: per setting, the mean final metrics with standard
    errors and per-seed values (``search.replicates``), or the failure of a replicate.
    """
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
    settings = [RunConfig.from_dict(apply_flat(config["base"], m["params"])).replace(
        write_plots=False) for m in config["members"]]
    plan = trial_runs(config)
    runs = [(k, run, run_config(cfg, run, config)) for k, cfg in enumerate(settings)
            for run in plan]
    owner = [k for k, _, _ in runs]
    epochs = Replicates(settings, owner, objective)
    # leave-one-domain-out folds train one population after another: their rows are
    # averaged once every fold has its own
    folds = len({fold for _, fold in plan}) > 1
    buffered: dict[int, dict[int, dict[str, float]]] = {}

    def tell(rows: dict[int, dict[str, float]]) -> None:
        for k, mean in epochs.add(rows):
            report({**mean, MEMBER: float(k)})

    # the members' probes run in torch on the trial's device, all in one batch
    # (trainer.metrics.fit_probes)
    results: list[dict[str, Any] | None] = [None] * len(settings)
    outcomes: dict[int, Any] = {}
    for group in group_population([cfg for _, _, cfg in runs]):
        where.update(phase="training", epoch=0)

        def on_epoch(rows: dict[int, dict[str, float]], group: list[int] = group) -> None:
            row = next(iter(rows.values()))
            where.update(epoch=int(row["epoch"]), stage=int(row["stage"]))
            rows = {group[j]: r for j, r in rows.items()}
            if folds:
                buffered.setdefault(int(row["epoch"]), {}).update(rows)
            else:
                tell(rows)

        t0, started_at = time.perf_counter(), time.time()
        try:
            got = fit_population([runs[j][2] for j in group], report_epoch=on_epoch)
        except Exception as exc:  # this group's settings fail; other groups' results stand
            for j in group:
                results[owner[j]] = failure_result(exc, dict(where))
            continue
        seconds = time.perf_counter() - t0
        for j, outcome in zip(group, got, strict=True):
            outcomes[j] = (outcome, seconds, started_at, len(group))
    for epoch in sorted(buffered):
        tell(buffered[epoch])
    for k in range(len(settings)):
        if results[k] is not None:
            continue
        mine = [j for j in range(len(runs)) if owner[j] == k]
        failed = [(runs[j][1], outcomes[j][0]) for j in mine
                  if isinstance(outcomes[j][0], DivergenceError)]
        if failed:
            (seed, fold), error = failed[0]
            results[k] = failure_result(error, {"phase": "training"})
            if len(plan) > 1:
                results[k]["failure_json"] = with_seed(results[k]["failure_json"], seed, fold)
            continue
        finals = []
        for j in mine:
            outcome, seconds, started_at, size = outcomes[j]
            final = dict(outcome.final)
            final["fit_seconds"] = seconds  # wall time of the whole population's fit
            final["fit_started_at"] = started_at
            final["population_size"] = float(size)
            finals.append(final)
        first = outcomes[mine[0]][0]
        final = combine(finals, plan, objective) if len(plan) > 1 else finals[0]
        history = [epochs.last_raw(k)] if epochs.last_raw(k) else first.history
        results[k] = final_result(final, runs[mine[0]][2], objective, history, first.analysis)
        held = epochs.held.get(k)
        if held is not None:
            results[k]["last_epoch_json"] = json.dumps(held)
    return {"final": 1.0, "members_json": json.dumps(results),
            "population": float(len(runs))}

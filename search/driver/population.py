"""Population trials (``--population K``), the driver's side: K Optuna trials as one Ray
trial.

The searcher asks up to K Optuna trials at once (each counted toward the study's total
and tagged like a solo trial) and hands them to one worker as one request
(``search.contract.Request`` with ``population``), which trains them as one vectorised
population (``search.worker.population``) and reports every epoch row with its member's
index, then one final result holding every member's answer. Each member is then told
exactly as a solo trial would be (the solo searcher's own code, keyed per member): its
epoch rows, its final metrics, state, failure reason. A stopped driver or a lost worker
leaves each member RUNNING or FAILED on its own, so a resume re-queues a half-finished
population member by member.

The Ray trial's resources (``--cpus-per-trial``, ``--gpus-per-trial``) are the whole
population's. ASHA is refused: its rungs stop a whole Ray trial on one score, while a
population trial carries K members with K scores.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ray.tune.search import Searcher

from search.contract import Request, Setting, read_epoch, read_final, read_refill
from search.driver.searcher import StudySearcher


def member_key(trial_id: str, k: int) -> str:
    """The searcher's key for member ``k`` of Ray trial ``trial_id``."""
    return f"{trial_id}#{k}"


def check_population(population: int, *, asha: bool, replicates: int,
                     pareto: bool = True, lodo: bool = False) -> None:
    """Refuse settings a population trial cannot honour, in one line each."""
    if population < 1:
        raise ValueError(f"--population must be at least 1 (got {population})")
    if population > 1 and asha and not pareto:
        raise ValueError("--asha in a scalar study cannot be combined with --population: "
                         "Ray Tune's ASHA stops a whole Ray trial on one score, and a "
                         "population trial holds one score per member; use a Pareto study "
                         "(MO-ASHA decides member by member) or one of the two")
    if population > 1 and asha and lodo:
        raise ValueError("--asha cannot be combined with --population and --lodo: the "
                         "folds of a population train one after another, so no rung sees "
                         "a setting's fold-averaged row before every fold has run")
    if replicates < 1:
        raise ValueError(f"--replicates must be at least 1 (got {replicates})")


class PopulationSearcher(StudySearcher):
    """Suggests K Optuna trials per Ray trial and tells each member on its own."""

    def __init__(self, *args: Any, size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = size
        self._sizes: dict[str, int] = {}  # Ray trial id -> how many members it holds
        self._first: dict[str, int] = {}  # Ray trial id -> its first Optuna trial's number
        self._coordinator = None  # the coordinator's actor handle, on first refill

    _UNPICKLED = (*StudySearcher._UNPICKLED, "_coordinator")

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stopping:
            return Searcher.FINISHED
        members = []
        self._sizes[trial_id] = 0
        members = self._ask_members(trial_id, self.size)
        if not members:
            self._sizes.pop(trial_id)
            return Searcher.FINISHED
        return Request(base=self.base_config, settings=tuple(members), population=True,
                       **self.trial_options).to_config()

    def _ask_members(self, trial_id: str, n: int) -> list[Setting]:
        """Up to ``n`` more Optuna trials for Ray trial ``trial_id``, as its next members
        (fewer once the study's total is reached, none once the driver stops)."""
        members = []
        while len(members) < n and not self.stopping:
            k = self._sizes[trial_id]
            asked = self._ask(trial_id, member_key(trial_id, k))
            if asked is None:  # the study's total is reached: a smaller population
                break
            trial, params = asked
            trial.set_user_attr("population_member", k)
            # the population's name: the number of its first trial
            trial.set_user_attr("population_id", self._first.setdefault(trial_id, trial.number))
            members.append(Setting(params, trial.number))
            self._sizes[trial_id] = k + 1
        return members

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        wanted = read_refill(result)
        if wanted is not None:
            self._refill(trial_id, wanted)
            return
        k, row = read_epoch(result)
        if k is not None:
            super().on_trial_result(member_key(trial_id, k), row)

    def _refill(self, trial_id: str, wanted: int) -> None:
        """Post the next ``wanted`` settings for a population whose slots freed (an empty
        list: there are no more)."""
        import ray

        from search.driver.coordinator import actor_name

        members = self._ask_members(trial_id, wanted) if trial_id in self._sizes else []
        if getattr(self, "_coordinator", None) is None:  # none after unpickling either
            self._coordinator = ray.get_actor(actor_name(self.experiment))
        ray.get(self._coordinator.put.remote(trial_id, [m.encode() for m in members]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        size = self._sizes.pop(trial_id, 0)
        answers = read_final(result, size)
        for k in range(size):
            # no answers: the population was stopped or its worker died
            self._finish(member_key(trial_id, k), answers[k] if answers else None,
                         result or {}, error)


def searcher_class(population: int) -> type[StudySearcher] | partial:
    """The searcher a sweep with ``--population`` uses."""
    if population > 1:
        return partial(PopulationSearcher, size=population)
    return StudySearcher

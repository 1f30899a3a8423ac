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

from search.contract import Request, Setting, read_epoch, read_final
from search.driver.searcher import StudySearcher


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
            members.append(Setting(params, trial.number))
        if not members:
            return Searcher.FINISHED
        self._sizes[trial_id] = len(members)
        return Request(base=self.base_config, settings=tuple(members), population=True,
                       **self.trial_options).to_config()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        k, row = read_epoch(result)
        if k is not None:
            super().on_trial_result(member_key(trial_id, k), row)

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

"""Population trials (``--population K``), the driver's side: K Optuna trials as one Ray
trial.

The searcher asks up to K Optuna trials at once (each counted toward the study's total
and tagged like a solo trial) and hands them to one worker as one request
(``search.contract.Request`` with ``population``), which trains them as one vectorised
population (``search.worker.population``) and reports every epoch row with its member's
index, then one final result holding every member's answer. A refilling population asks,
through Tune, for the next trials when its members stop (``on_trial_result``: they are
asked from Optuna here and posted to the sweep's coordinator, ``search.driver.coordinator``);
a retried attempt that asks again from an earlier index gets the same trials back. Each
member is then told exactly as a solo trial would be (the solo searcher's own code, keyed
per member): its epoch rows, its final metrics, state, failure reason, or PRUNED where
MO-ASHA stopped it. A stopped driver or a lost worker leaves each member RUNNING or FAILED
on its own, so a resume re-queues a half-finished population member by member; a member
handed out whose population ended before it took a slot fails with ``UNTRAINED``.

The Ray trial's resources (``--cpus-per-trial``, ``--gpus-per-trial``) are the whole
population's. A scalar study's ASHA is refused: it stops a whole Ray trial on one score,
while a population trial carries K members with K scores (MO-ASHA decides member by
member).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ray.tune.search import Searcher

from search.contract import (
    Failure,
    Request,
    Setting,
    read_answer,
    read_epoch,
    read_final,
    read_refill,
)
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
    """Suggests K Optuna trials per Ray trial, hands a refilling population its next
    ones, and tells each member on its own."""

    #: why a member the driver handed out has no answer in its population's result
    UNTRAINED = ("not trained: its population ended before this trial took a slot "
                 "(a refill the worker never received)")

    def __init__(self, *args: Any, size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = size
        #: Ray trial id -> every member handed out to it, in the worker's order
        self._members: dict[str, list[Setting]] = {}
        self._coordinator = None  # the coordinator's actor handle, on first refill

    _UNPICKLED = (*StudySearcher._UNPICKLED, "_coordinator")

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stopping:
            return Searcher.FINISHED
        self._members[trial_id] = []
        members = self._ask_members(trial_id, self.size)
        if not members:
            self._members.pop(trial_id)
            return Searcher.FINISHED
        return Request(base=self.base_config, settings=tuple(members), population=True,
                       **self.trial_options).to_config()

    def _ask_members(self, trial_id: str, n: int) -> list[Setting]:
        """Up to ``n`` more Optuna trials for Ray trial ``trial_id``, as its next members
        (fewer once the study's total is reached, none once the driver stops)."""
        members = self._members[trial_id]
        asked_now = []
        while len(asked_now) < n and not self.stopping:
            k = len(members)
            asked = self._ask(trial_id, member_key(trial_id, k))
            if asked is None:  # the study's total is reached: a smaller population
                break
            trial, params = asked
            trial.set_user_attr("population_member", k)
            if self.trial_options.get("refill"):  # its name: the number of its first trial
                first = members[0].optuna_number if members else trial.number
                trial.set_user_attr("population_id", first)
            members.append(Setting(params, trial.number))
            asked_now.append(members[-1])
        return asked_now

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        wanted = read_refill(result)
        if wanted is not None:
            self._refill(trial_id, *wanted)
            return
        ended = read_answer(result)
        if ended is not None:  # a refilling population's member, told as it ends
            k, answer = ended
            self._finish(member_key(trial_id, k), answer, result, False)
            return
        k, row = read_epoch(result)
        if k is not None:
            super().on_trial_result(member_key(trial_id, k), row)

    def _refill(self, trial_id: str, wanted: int, start: int) -> None:
        """Post the ``wanted`` settings from the worker's ``start``-th member on (an empty
        list: there are no more). Members already handed out from ``start`` on (a retried
        attempt of the population asks again) are handed out again, not asked anew."""
        import ray

        from search.driver.coordinator import actor_name

        members = self._members.get(trial_id)
        got = [] if members is None else members[start:start + wanted]
        if members is not None and len(got) < wanted and start + len(got) == len(members):
            got += self._ask_members(trial_id, wanted - len(got))
        if getattr(self, "_coordinator", None) is None:  # none after unpickling either
            self._coordinator = ray.get_actor(actor_name(self.experiment))
        ray.get(self._coordinator.put.remote(trial_id, [m.encode() for m in got]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        size = len(self._members.pop(trial_id, []))
        answers = read_final(result, size)
        for k in range(size):
            if answers is None:  # the population was stopped or its worker died
                answer = None
            elif k < len(answers):
                answer = answers[k]
            else:
                answer = Failure({"reason": self.UNTRAINED, "type": "Untrained"})
            self._finish(member_key(trial_id, k), answer, result or {}, error)


def searcher_class(population: int) -> type[StudySearcher] | partial:
    """The searcher a sweep with ``--population`` uses."""
    if population > 1:
        return partial(PopulationSearcher, size=population)
    return StudySearcher

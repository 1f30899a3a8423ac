"""Population trials, the worker's side: K settings x R replicate runs as one vectorised
model (``trainer.fit_population``).

A request with several settings (``--population K``, a confirmation's or a fidelity
check's runs of one seed) or with replicates and leave-one-domain-out folds trains here:
every setting once per run of its replication, side by side, their data split pinned so
that they share one data set. Settings that cannot share a model go to separate
populations, one after another (``trainer.group_population``); a population that raises
fails its own settings only. Each setting gets its own answer
(``search.contract.Outcome`` or ``Failure``), which the driver tells member by member
(``search.driver.population``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from search.contract import (
    Answer,
    CoordinatorClient,
    Failure,
    Pruned,
    Request,
    answer_message,
    epoch_message,
)
from search.worker.replicates import Replicates, combine, run_config
from search.worker.solo import failure_result, final_result, trial_setup

log = logging.getLogger("stagetune.search")


def run_population(request: Request, report, where: dict[str, Any] | None = None, *,
                   trial_id: str | None = None) -> list[Answer]:
    """Train the settings of ``request``, each with its replicates; one answer each.

    Every setting (an Optuna trial's, or a planned run's) is trained once per run of the
    request's replication (one run with the base seed without one), all as members of
    one vectorised population: K settings × R seeds are K·R models trained side by side,
    their data split pinned so that they share one data set. ``report`` gets, every
    epoch, each setting's row averaged over its replicates with the setting's index
    (``search.contract.MEMBER``); the row on which all of a setting's replicates have
    ended travels in its outcome instead (``last_epoch``, as in a solo trial). Each
    setting's answer is its ``Outcome`` (mean final metrics with standard errors and
    per-seed values, ``search.worker.replicates``), the ``Failure`` of a replicate, or
    ``Pruned`` where MO-ASHA stopped it at a rung.

    With a coordinator (a sweep's ``--population``; ``trial_id`` is the Ray trial's) the
    population refills (``request.refill``: when a setting's members have all stopped,
    the next settings take their slots at epoch 0, asked from the driver, and answered
    after the first ones in the order they came; each setting's answer also goes to the
    driver as the setting ends, ``search.contract.answer_message``, with the time and
    slot counts until then) and asks the coordinator for the
    decision on each setting's row at MO-ASHA's rungs (``request.rungs``), stopping the
    members of a setting it prunes. Leave-one-domain-out folds do neither: their rows are
    averaged only once every fold has run.
    """
    where = where if where is not None else {}
    where.update(phase="setup", epoch=None, stage=None)
    objective = trial_setup(request)
    coordinator = None
    if request.coordinator is not None and len({f for _, f in request.runs()}) == 1:
        coordinator = CoordinatorClient(request.coordinator, trial_id or "", report)
    # (a coordinator without the Ray trial's id is refused there: it could not be asked)
    job = _Job(request, objective, report, coordinator)
    job.add_settings(request.settings)
    answers: dict[int, Answer] = {}
    groups = job.groups(range(len(job.runs)))
    while groups:
        group = groups.pop(0)
        where.update(phase="training", epoch=0)
        failed = job.train(group, where)
        if failed is not None:  # this group's settings fail; other groups' results stand
            answers.update({job.owner[j]: failed for j in group})
        if job.deferred:  # refills that could not share this group's model: their own
            groups.extend(job.groups(job.deferred))
            job.deferred = []
    job.flush()
    return [answers.get(k) or job.answer(k) for k in range(len(job.settings))]


class _Job:
    """One population request's runs (setting x replicate run), their epoch rows, the
    slots they filled and their outcomes."""

    def __init__(self, request: Request, objective, report,
                 coordinator: CoordinatorClient | None) -> None:
        self.request, self.objective, self.report = request, objective, report
        self.coordinator = coordinator
        self.plan = request.runs()
        self.settings: list = []  # RunConfig per setting
        self.numbers: list[int | None] = []  # Optuna trial number per setting
        self.runs: list[tuple[int, tuple, Any]] = []  # (setting, (seed, fold), RunConfig)
        self.owner: list[int] = []
        self.epochs = Replicates([], [], objective)
        # leave-one-domain-out folds train one population after another: their rows are
        # averaged once every fold has its own
        self.folds = len({fold for _, fold in self.plan}) > 1
        self.buffered: dict[int, dict[int, dict[str, float]]] = {}
        self.outcomes: dict[int, tuple[Any, float, float, dict[str, float]]] = {}
        self.pruned: dict[int, dict[str, float]] = {}  # setting -> its row at the rung
        self.deferred: list[int] = []  # refilled runs that cannot share the running model
        self.failed: dict[int, Failure] = {}  # refilled settings that could not be built
        self.exhausted = coordinator is None or not request.refill
        # a refilling population's settings are answered as they end (``answer_message``)
        self.early = coordinator is not None and request.refill and not self.folds

    def add_settings(self, settings) -> list[int]:
        """Add settings (``search.contract.Setting``); the indices of their runs."""
        from trainer import RunConfig, apply_flat

        ids = []
        for s in settings:
            k = len(self.settings)
            self.numbers.append(s.optuna_number)
            try:
                cfg = RunConfig.from_dict(apply_flat(self.request.base, s.params)).replace(
                    write_plots=False)
            except Exception as exc:  # this setting fails on its own, untrained
                self.settings.append(None)
                self.failed[k] = failure_result(exc, {"phase": "setup"})
                self.epochs.add_setting(None, [])
                if self.early:
                    self.report(answer_message(k, self.failed[k]))
                continue
            self.settings.append(cfg)
            mine = []
            for run in self.plan:
                mine.append(len(self.runs))
                self.runs.append((k, run, run_config(cfg, run, self.request.replication)))
                self.owner.append(k)
            self.epochs.add_setting(cfg, mine)
            ids += mine
        return ids

    def groups(self, runs) -> list[list[int]]:
        from trainer import group_population

        runs = list(runs)
        return [[runs[i] for i in g] for g in group_population([self.runs[j][2] for j in runs])]

    def tell(self, rows: dict[int, dict[str, float]]) -> list[tuple[int, dict[str, float]]]:
        told = self.epochs.add(rows)
        for k, mean in told:
            self.report(epoch_message(mean, k))
        return told

    def stops(self, told: list[tuple[int, dict[str, float]]], group: list[int]) -> list[int]:
        """The members (``group``'s positions) of the settings the coordinator prunes at
        this epoch's rung."""
        if self.coordinator is None or not self.request.rungs:
            return []
        out = []
        for k, mean in told:
            rung = int(mean["epoch"]) + 1 in self.request.rungs and int(mean["stage"]) > 1
            if rung and self.numbers[k] is not None \
                    and self.coordinator.stops(self.numbers[k], mean):
                self.pruned[k] = mean
                out += [group.index(j) for j in self.epochs.live[k]]
                if self.early:
                    self.report(answer_message(k, Pruned(mean)))
        return out

    def refill(self, free: int, group: list[int]) -> list:
        """The configurations that take ``free`` freed slots of ``group`` (its members
        appended in order): whole settings, each with all its runs."""
        from trainer import group_population

        n = free // len(self.plan)
        if self.exhausted or n == 0:
            return []
        try:
            new = self.coordinator.refill(n, len(self.settings))
        except Exception:  # the coordinator is gone: the population trains on without
            log.warning("refill failed; the population goes on without", exc_info=True)
            new = []
        if not new:
            self.exhausted = True  # the study's total is reached, or the driver stops
            return []
        template = self.runs[group[0]][2]
        taken = []
        for j in self.add_settings(new):
            if len(group_population([template, self.runs[j][2]])) == 1:
                taken.append(j)
            else:  # another model's shape: trained after this population, on its own
                self.deferred.append(j)
                self.exhausted = True
        group.extend(taken)
        return [self.runs[j][2] for j in taken]

    def train(self, group: list[int], where: dict[str, Any]) -> Failure | None:
        """Train one population (runs ``group``, which refills extend); the failure of
        all of it, if it raised."""
        from trainer import fit_population

        slots = {"population_slots": float(len(group)), "population_ticks": 0.0,
                 "population_member_epochs": 0.0}

        def on_epoch(rows: dict[int, dict[str, float]]) -> list[int]:
            row = next(iter(rows.values()))
            where.update(epoch=int(row["epoch"]), stage=int(row["stage"]))
            slots["population_ticks"] += 1
            slots["population_member_epochs"] += len(rows)
            rows = {group[j]: r for j, r in rows.items()}
            if self.folds:
                self.buffered.setdefault(int(row["epoch"]), {}).update(rows)
                return []
            return self.stops(self.tell(rows), group)

        refill = None if self.exhausted else (lambda free: self.refill(free, group))
        t0, c0, started_at = time.perf_counter(), time.thread_time(), time.time()

        def ended(i: int, outcome) -> None:  # run group[i] has its result: answer early
            taken = {**slots, "fit_cpu_seconds": time.thread_time() - c0}
            self.ended(group[i], (outcome, time.perf_counter() - t0, started_at, taken))

        try:
            got = fit_population([self.runs[j][2] for j in group], report_epoch=on_epoch,
                                 refill=refill, on_result=ended if self.early else None)
        except Exception as exc:
            return failure_result(exc, dict(where))
        seconds = time.perf_counter() - t0
        slots["fit_cpu_seconds"] = time.thread_time() - c0  # the whole population's
        for j, outcome in zip(group, got, strict=True):
            self.outcomes.setdefault(j, (outcome, seconds, started_at, slots))
        return None

    def ended(self, j: int, outcome: tuple) -> None:
        """Run ``j``'s result as it ended (its population still training: the time and
        slot counts so far); once every run of its setting has one, the setting's answer
        goes to the driver."""
        self.outcomes[j] = outcome
        k = self.owner[j]
        if k in self.pruned or k in self.failed:
            return
        mine = self.runs_of(k)
        if all(i in self.outcomes for i in mine):
            for i in mine:  # every run with the time and counts of the last to end (this)
                self.outcomes[i] = (self.outcomes[i][0], *outcome[1:])
            self.report(answer_message(k, self.answer(k)))

    def flush(self) -> None:
        """Report the folds' buffered rows, epoch by epoch."""
        for epoch in sorted(self.buffered):
            self.tell(self.buffered[epoch])

    def runs_of(self, k: int) -> list[int]:
        """The indices of setting ``k``'s runs."""
        return [j for j, owner in enumerate(self.owner) if owner == k]

    def answer(self, k: int) -> Answer:
        """Setting ``k``'s answer from its runs' results."""
        from trainer import DivergenceError

        if k in self.failed:
            return self.failed[k]
        if k in self.pruned:
            return Pruned(self.pruned[k])
        mine = self.runs_of(k)
        for j in mine:
            if isinstance(self.outcomes[j][0], DivergenceError):
                seed, fold = self.runs[j][1]
                failure = failure_result(self.outcomes[j][0], {"phase": "training"})
                return failure.at_run(seed, fold) if len(self.plan) > 1 else failure
        finals = []
        for j in mine:
            outcome, seconds, started_at, slots = self.outcomes[j]
            finals.append({**outcome.final,
                           "fit_seconds": seconds,  # wall time of the whole population's fit
                           "fit_started_at": started_at,
                           "population_size": slots["population_slots"],
                           "fit_cpu_seconds": slots["fit_cpu_seconds"],
                           # how full it ran: refilling or stopping populations only
                           **({k: v for k, v in slots.items() if k.startswith("population_")}
                              if self.coordinator is not None else {})})
        first = self.outcomes[mine[0]][0]
        attrs: dict[str, Any] = {}
        final = finals[0]
        if len(self.plan) > 1:
            final, attrs = combine(finals, self.plan, self.objective)
        raw = self.epochs.last_raw(k)
        out = final_result(final, self.runs[mine[0]][2], self.objective,
                           [raw] if raw else first.history, first.analysis)
        return replace(out, last_epoch=self.epochs.held.get(k), **attrs)

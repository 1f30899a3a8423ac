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

import time
from dataclasses import replace
from typing import Any

from search.contract import Answer, Failure, Request, epoch_message
from search.worker.replicates import Replicates, combine, run_config
from search.worker.solo import failure_result, final_result, trial_setup


def run_population(request: Request, report, where: dict[str, Any] | None = None
                   ) -> list[Answer]:
    """Train the settings of ``request``, each with its replicates; one answer each.

    Every setting (an Optuna trial's, or a planned run's) is trained once per run of the
    request's replication (one run with the base seed without one), all as members of
    one vectorised population: K settings × R seeds are K·R models trained side by side,
    their data split pinned so that they share one data set. ``report`` gets, every
    epoch, each setting's row averaged over its replicates with the setting's index
    (``search.contract.MEMBER``); the row on which all of a setting's replicates have
    ended travels in its outcome instead (``last_epoch``, as in a solo trial). Each
    setting's answer is its ``Outcome`` (mean final metrics with standard errors and
    per-seed values, ``search.worker.replicates``) or the ``Failure`` of a replicate.
    """
    from trainer import RunConfig, apply_flat

    where = where if where is not None else {}
    where.update(phase="setup", epoch=None, stage=None)
    objective = trial_setup(request)
    settings = [RunConfig.from_dict(apply_flat(request.base, s.params)).replace(
        write_plots=False) for s in request.settings]
    job = _Job(request, settings, objective, report)
    answers: dict[int, Answer] = {}
    for group in job.groups():
        where.update(phase="training", epoch=0)
        failed = job.train(group, where)
        if failed is not None:  # this group's settings fail; other groups' results stand
            answers.update({job.owner[j]: failed for j in group})
    job.flush()
    return [answers.get(k) or job.answer(k) for k in range(len(settings))]


class _Job:
    """One population request's runs (setting x replicate run), their epoch rows and
    their outcomes."""

    def __init__(self, request: Request, settings: list, objective, report) -> None:
        self.plan = request.runs()
        self.runs = [(k, run, run_config(cfg, run, request.replication))
                     for k, cfg in enumerate(settings) for run in self.plan]
        self.owner = [k for k, _, _ in self.runs]
        self.settings, self.objective, self.report = settings, objective, report
        self.epochs = Replicates(settings, self.owner, objective)
        # leave-one-domain-out folds train one population after another: their rows are
        # averaged once every fold has its own
        self.folds = len({fold for _, fold in self.plan}) > 1
        self.buffered: dict[int, dict[int, dict[str, float]]] = {}
        self.outcomes: dict[int, tuple[Any, float, float, int]] = {}

    def groups(self) -> list[list[int]]:
        from trainer import group_population

        return group_population([cfg for _, _, cfg in self.runs])

    def tell(self, rows: dict[int, dict[str, float]]) -> None:
        for k, mean in self.epochs.add(rows):
            self.report(epoch_message(mean, k))

    def train(self, group: list[int], where: dict[str, Any]) -> Failure | None:
        """Train one population (runs ``group``); the failure of all of it, if it raised."""
        from trainer import fit_population

        def on_epoch(rows: dict[int, dict[str, float]]) -> None:
            row = next(iter(rows.values()))
            where.update(epoch=int(row["epoch"]), stage=int(row["stage"]))
            rows = {group[j]: r for j, r in rows.items()}
            if self.folds:
                self.buffered.setdefault(int(row["epoch"]), {}).update(rows)
            else:
                self.tell(rows)

        t0, started_at = time.perf_counter(), time.time()
        try:
            got = fit_population([self.runs[j][2] for j in group], report_epoch=on_epoch)
        except Exception as exc:
            return failure_result(exc, dict(where))
        seconds = time.perf_counter() - t0
        for j, outcome in zip(group, got, strict=True):
            self.outcomes[j] = (outcome, seconds, started_at, len(group))
        return None

    def flush(self) -> None:
        """Report the folds' buffered rows, epoch by epoch."""
        for epoch in sorted(self.buffered):
            self.tell(self.buffered[epoch])

    def answer(self, k: int) -> Answer:
        """Setting ``k``'s answer from its runs' results."""
        from trainer import DivergenceError

        mine = [j for j in range(len(self.runs)) if self.owner[j] == k]
        for j in mine:
            if isinstance(self.outcomes[j][0], DivergenceError):
                seed, fold = self.runs[j][1]
                failure = failure_result(self.outcomes[j][0], {"phase": "training"})
                return failure.at_run(seed, fold) if len(self.plan) > 1 else failure
        finals = []
        for j in mine:
            outcome, seconds, started_at, size = self.outcomes[j]
            finals.append({**outcome.final,
                           "fit_seconds": seconds,  # wall time of the whole population's fit
                           "fit_started_at": started_at, "population_size": float(size)})
        first = self.outcomes[mine[0]][0]
        attrs: dict[str, Any] = {}
        final = finals[0]
        if len(self.plan) > 1:
            final, attrs = combine(finals, self.plan, self.objective)
        raw = self.epochs.last_raw(k)
        out = final_result(final, self.runs[mine[0]][2], self.objective,
                           [raw] if raw else first.history, first.analysis)
        return replace(out, last_epoch=self.epochs.held.get(k), **attrs)

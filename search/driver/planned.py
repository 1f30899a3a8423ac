"""Runs planned in advance, handed to Ray Tune: what ``confirm`` and ``fidelity`` share.

A sweep asks its sampler for each next setting; a confirmation or a fidelity check knows
every run before it starts (settings x seeds, and budgets), stores the plan in the
database and runs what is missing. ``PlanSearcher`` hands Tune those runs as jobs (one
Ray trial each: one run, or several runs as one vectorised population) and stores every
run as its job ends, through the subclass's ``store``; ``launch`` runs the jobs. Both go
through ``search.worker`` like a sweep's trials.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from search.contract import LOST, Failure, Replication, Request, Setting, read_epoch, read_final
from search.db.storage import DEFAULT_STORAGE
from search.driver.searcher import DatabaseState
from search.objective import COLLAPSED_PROXY, EPOCH_PROXIES, EPOCH_SCORE, TASK_METRICS

#: what a stored epoch row keeps: the schedule and the per-epoch proxies a rung reads
HISTORY_KEYS = tuple(dict.fromkeys((
    "epoch", "stage", "stopped_early", EPOCH_SCORE, COLLAPSED_PROXY, *EPOCH_PROXIES.values(),
    *(proxy for proxy, _ in TASK_METRICS.values()))))

#: the command-line options of how a plan's runs are scheduled (``PlanRunOptions``' fields)
RUN_OPTIONS = ("population", "cpus_per_trial", "gpus_per_trial", "max_concurrent",
               "address", "num_cpus", "retries", "imports", "tune_dir", "quiet", "verbose")


@dataclass
class PlanRunOptions:
    """Where a plan's study is, and how its runs are scheduled on Ray (what
    ``ConfirmOptions`` and ``FidelityOptions`` share)."""

    storage: str = DEFAULT_STORAGE
    study: str = "stagetune"
    population: bool = False  # one population per seed (and budget) holding every setting
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    address: str | None = None
    num_cpus: int | None = None
    retries: int = 2
    imports: tuple[str, ...] = ()
    tune_dir: str = ""
    quiet: bool = False
    verbose: bool = False

    @staticmethod
    def from_args(args) -> dict[str, Any]:
        """The fields of parsed command-line arguments, as keywords."""
        return {"storage": args.storage, "study": args.study,
                **{name: tuple(getattr(args, name)) if name == "imports"
                   else getattr(args, name) for name in RUN_OPTIONS}}

Run = Hashable


def history_row(result: dict[str, Any]) -> dict[str, float]:
    """An epoch row as a plan stores it."""
    return {k: float(result[k]) for k in HISTORY_KEYS if k in result
            and isinstance(result[k], int | float)}


class PlanSearcher(DatabaseState, Searcher):
    """Hands Tune planned jobs and stores each of their runs when the job ends.

    Subclasses say what a job trains (``job_request``) and where a finished
    run goes (``store``). With ``keeps_history`` the runs' epoch rows are collected too
    (a population's rows carry their member's index, ``MEMBER``; a run's last row travels
    in its final result).
    """

    keeps_history = False

    def __init__(self, jobs: Sequence[Sequence[Run]], *, engine, trial_options: dict[str, Any],
                 on_event=None) -> None:
        super().__init__(metric=None, mode=None)
        self.jobs = [list(job) for job in jobs]
        self.engine = engine
        self.trial_options = trial_options
        self.on_event = on_event or (lambda kind, info: None)
        self.running: dict[str, list[Run]] = {}
        self.histories: dict[str, dict[int, list[dict[str, float]]]] = {}
        self.stopping = False
        self.left_running: list[int] = []
        self.outcomes = {"complete": 0, "fail": 0}

    # -- what a subclass says ------------------------------------------------------------

    def job_request(self, job: list[Run]) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                   Replication | None]:
        """What ``job`` trains: the base configuration, each run's parameters over it,
        and the runs' replication (``None``: one plain run each)."""
        raise NotImplementedError

    def store(self, run: Run, *, state: str, metrics: dict[str, float],
              history: list[dict[str, float]], reason: str | None) -> None:
        """Write one finished run (``state`` "complete" or "failed")."""
        raise NotImplementedError

    # -- Tune's side -------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping = True

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        if self.stopping or not self.jobs:
            return Searcher.FINISHED
        job = self.jobs.pop(0)
        self.running[trial_id] = job
        self.histories[trial_id] = {}
        self.on_event("start", {"runs": job})
        base, params, rep = self.job_request(job)
        return Request(base=base, settings=tuple(Setting(p) for p in params),
                       population=len(job) > 1, replication=rep,
                       **self.trial_options).to_config()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if not self.keeps_history or trial_id not in self.running or result.get("final"):
            return
        member, row = read_epoch(result)
        self.histories[trial_id].setdefault(member or 0, []).append(history_row(row))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        job = self.running.pop(trial_id, None)
        histories = self.histories.pop(trial_id, {})
        if job is None:
            return
        result = result or {}
        if self.stopping and not result.get("final"):
            return  # cut short by a stop: a resume runs it again
        answers = [Failure({"reason": LOST})] * len(job) if error else read_final(result, len(job))
        if answers is None:
            return  # ended without a final result: nothing stored, a resume runs it again
        for k, (run, answer) in enumerate(zip(job, answers, strict=True)):
            history = list(histories.get(k, []))
            if isinstance(answer, Failure):
                self.store(run, state="failed", metrics={}, history=history,
                           reason=answer.reason)
                self.outcomes["fail"] += 1
                self.on_event("fail", {"run": run, "reason": answer.reason})
                continue
            if self.keeps_history and answer.last_epoch:
                history.append(history_row(answer.last_epoch))
            # a retried trial reports its epochs again: keep each epoch's latest row
            history = sorted({int(r["epoch"]): r for r in history if "epoch" in r}.values(),
                             key=lambda r: r["epoch"])
            self.store(run, state="complete", metrics=dict(answer.metrics), history=history,
                       reason=None)
            self.outcomes["complete"] += 1
            self.on_event("complete", {"run": run})

    # the database is the state: nothing of this searcher goes into Tune's files
    _UNPICKLED = ("engine", "on_event")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.engine, self.on_event = None, lambda kind, info: None


def run_jobs(opts, jobs: Sequence[Sequence[Run]], make_searcher, *, name: str,
             error: type[Exception], objective: dict[str, Any], describe) -> int | None:
    """Start Ray (``opts.address`` joins a cluster), check that a node can hold a run,
    and run ``jobs`` through ``make_searcher(jobs, on_event, trial_options)``, printing a
    line per finished run (``describe(run)`` names it). Returns the signal that stopped
    it, if one did. ``opts`` is a confirmation's or a fidelity check's options; a
    request no node can hold raises ``error``, before anything runs."""
    from search.driver import launch as tune

    try:
        gpus = tune.start_workers(opts)
    except tune.PreflightError as exc:
        raise error(str(exc)) from None

    def progress(kind: str, info: dict[str, Any]) -> None:
        if opts.quiet or kind == "start":
            return
        print(f"  {describe(info['run'])}: "
              + ("done" if kind == "complete" else f"failed: {info['reason']}"), flush=True)

    searcher = make_searcher(jobs, progress, {
        "objective": objective, "threads": max(1, int(opts.cpus_per_trial)),
        "imports": tuple(opts.imports)})
    stop = tune.SignalStop(searcher)
    how = tune.Launch(experiment=tune.experiment_name(name), n_samples=len(jobs),
                      cpus=opts.cpus_per_trial, gpus=gpus, max_concurrent=opts.max_concurrent,
                      retries=opts.retries, tune_dir=opts.tune_dir)
    tune.launch(searcher, how, stop)
    return stop.signum

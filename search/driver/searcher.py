"""A Ray Tune searcher over Optuna's ask/tell, with the study database as its state.

What it does differently from the stock ``OptunaSearch``:
- a trial stopped early by a scheduler is told PRUNED, never COMPLETE with a truncated
  value;
- every Optuna trial carries its Tune trial id, and the driver repairs orphans from the
  database on resume (no ``Tuner.restore``), so nothing is re-run or left RUNNING;
- the objective's names and directions live here, not in ``TuneConfig``;
- a trial retried after a worker failure is told exactly once, when it finally ends;
- per-epoch metrics go to our own table, which multi-objective studies need;
- ``--n-trials`` is the study's total across drivers: the database is counted at every
  ask, under a lock all drivers share, and asking stops once the total is reached;
- each trial's sampler seed derives from the sweep's seed and the trial's number, so
  concurrent drivers never propose the same settings;
- a trial that raised (reported by the trainable) or whose objective is not finite is
  told FAIL with its reason in user attributes.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from search.contract import (
    LOST,
    Answer,
    Failure,
    Outcome,
    Pruned,
    Request,
    Setting,
    own_metrics,
    read_epoch,
    read_final,
)
from search.db import storage as db
from search.db.storage import study_lock
from search.db.study import (
    FAIL_REASON_ATTR,
    count_toward_total,
    make_sampler,
    study_engine,
    trial_seed,
)
from search.objective import EPOCH_SCORE, Objective
from search.space import SearchSpace
from trainer.objectives import COLLAPSE_FLAG

log = logging.getLogger("stagetune.search")

class DatabaseState:
    """For a Tune searcher whose state is the study database: nothing to save beside the
    experiment, nothing to restore from it (a resume reopens the database)."""

    def save(self, checkpoint_path: str) -> None:
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return None

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        return None

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        return None


class StudySearcher(DatabaseState, Searcher):
    """Suggests from an Optuna study and tells it every outcome."""

    def __init__(
        self,
        study: optuna.Study,
        space: SearchSpace,
        objective: Objective,
        *,
        base_config: dict[str, Any],
        trial_options: dict[str, Any],
        experiment: str,
        engine: Any,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        total: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Args (beyond the obvious): ``trial_options`` are the ``Request`` fields every
        trial shares (objective, threads, imports, replication); ``total`` is the study's
        ``--n-trials`` (``None``: no limit); ``sampler`` and ``seed`` name the sampler made
        afresh for each trial, seeded by the trial's number (``None``: keep the study's
        sampler)."""
        super().__init__(metric=None, mode=None)
        self.study = study
        self.space = space
        self.objective = objective
        self.base_config = base_config
        self.trial_options = trial_options
        self.experiment = experiment
        self.on_event = on_event or (lambda kind, info: None)
        self._engine = engine  # the study database's SQLAlchemy engine
        self.total, self.sampler_name, self.seed = total, sampler, seed
        self._live: dict[str, optuna.Trial] = {}
        self._lock = threading.Lock()
        self.stopping = False  # the driver was told to stop: no new trials
        self.left_running: list[int] = []  # numbers of trials interrupted by a stop
        self.outcomes = {"complete": 0, "prune": 0, "fail": 0}  # told by this searcher

    def _told(self, kind: str, info: dict[str, Any]) -> None:
        self.outcomes[kind] += 1
        self.on_event(kind, info)

    def request_stop(self) -> None:
        """Ask for nothing more; trials cut short from now on stay RUNNING for the driver
        to mark as stopped and re-queue."""
        self.stopping = True

    # Tune hands us its metric/mode; ours are fixed by the objective, so accept anything.
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stopping:
            return Searcher.FINISHED
        asked = self._ask(trial_id, trial_id)
        if asked is None:
            return Searcher.FINISHED
        trial, params = asked
        return Request(base=self.base_config, settings=(Setting(params, trial.number),),
                       **self.trial_options).to_config()

    def _ask(self, trial_id: str, key: str) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """Ask one Optuna trial for Tune trial ``trial_id``, kept live under ``key``;
        ``None`` once the study's total is reached."""
        engine = self._engine if self._engine is not None else study_engine(self.study)
        # Counting, asking and tagging happen under the study's lock: no other driver asks
        # in between (the total holds) and no resume takes the untagged trial for an orphan.
        with self._lock, study_lock(engine, self.study.study_name):
            counted, number = count_toward_total(self.study)
            if self.total is not None and counted >= self.total:
                return None
            if self.sampler_name is not None:
                self.study.sampler = make_sampler(self.sampler_name,
                                                  trial_seed(self.seed, number),
                                                  n_trials=self.total)
            trial = self.study.ask()
            trial.set_user_attr("tune_trial_id", trial_id)
            trial.set_user_attr("tune_experiment", self.experiment)
            params = self.space.sample(trial)
            self._live[key] = trial
        self.on_event("start", {"number": trial.number, "params": params})
        return trial, params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._live.get(trial_id)
        if trial is None or result.get("final"):
            return
        self._record_epoch(trial, own_metrics(result))

    def _record_epoch(self, trial: optuna.Trial, row: dict[str, float]) -> None:
        if "epoch" not in row:
            return
        db.write_epoch(self._engine, trial._trial_id, int(row["epoch"]), int(row["stage"]), row)
        if self.objective.mode == "scalar" and EPOCH_SCORE in row:
            trial.report(row[EPOCH_SCORE], step=int(row["epoch"]))

    def _fail(self, trial: optuna.Trial, reason: str, details: dict[str, Any]) -> None:
        """Tell FAIL, with the reason (one line) and its details as user attributes."""
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
        for key, value in details.items():
            if value is not None:
                trial.set_user_attr(f"fail_{key}", value)
        self.study.tell(trial, state=TrialState.FAIL)
        self._told("fail", {"number": trial.number, "reason": reason})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        answers = read_final(result)
        self._finish(trial_id, answers[0] if answers else None, result or {}, error)

    def _finish(self, key: str, answer: Answer | None, result: dict[str, Any],
                error: bool) -> None:
        """Tell the Optuna trial kept under ``key`` how it ended: ``answer`` is its final
        answer, ``None`` where the trial was cut short (``result``: the row it was cut
        on; ``error``: its worker was lost on every retry)."""
        with self._lock:
            trial = self._live.pop(key, None)
        if trial is None:
            return
        frozen = self.study._storage.get_trial(trial._trial_id)
        if frozen.state.is_finished():  # told already (a retried trial ends only once)
            return
        if result.get("node_id"):  # the Ray node of the trial's last attempt
            trial.set_user_attr("node_id", str(result["node_id"]))
        if self.stopping and answer is None:
            # cut short by the driver's stop: the driver fails and re-queues it
            self.left_running.append(trial.number)
        elif error:
            # The trainable reports every exception of its own, so an error reaching Tune
            # means the worker process or its node was lost, on every allowed retry.
            self._fail(trial, LOST, {"type": "WorkerLost"})
        elif isinstance(answer, Failure):
            details = dict(answer.details)
            self._fail(trial, details.pop("reason", "the trial raised"), details)
        elif answer is None:  # the scheduler stopped the Ray trial on this row
            self._prune(trial, own_metrics(result))
        elif isinstance(answer, Pruned):  # a population member stopped at a rung
            self._prune(trial, own_metrics(read_epoch(answer.row)[1]))
        else:
            self._complete(trial, answer)

    def _prune(self, trial: optuna.Trial, row: dict[str, float]) -> None:
        """Stopped by the scheduler before the run finished: its numbers are those of an
        undertrained model, so it must not enter the front. Tune hands the result it
        stopped on to ``on_trial_complete`` only, so its epoch is recorded here."""
        self._record_epoch(trial, row)
        trial.set_user_attr("final_stage", float(row.get("stage", 0.0)))
        trial.set_user_attr("epochs_run", float(row.get("epoch", -1.0)) + 1.0)
        self.study.tell(trial, state=TrialState.PRUNED)
        self._told("prune", {"number": trial.number})

    def _complete(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Tell a finished run's values, or FAIL where its objective is missing or not
        finite; its metrics, configuration and replicates' values become user
        attributes."""
        if outcome.last_epoch is not None:
            # the last epoch comes with the final result, so that a scheduler whose clock
            # runs out on that epoch cannot cut a fully trained trial short
            self._record_epoch(trial, outcome.last_epoch)
        final = dict(outcome.metrics)
        try:
            values = self.objective.values(final)
        except KeyError as exc:
            self._fail(trial, f"objective {exc.args[0]!r} missing from the trial's result",
                       {"type": "MissingObjective"})
            return
        if not all(math.isfinite(v) for v in values):
            for key, value in final.items():
                trial.set_user_attr(key, value)
            self._fail(trial, "non-finite objective",
                       {"type": "NonFiniteObjective",
                        "message": ", ".join(f"{n}={v}" for n, v in
                                             zip(self.objective.names, values, strict=True))})
            return
        feasible = self.objective.feasible(final)
        for key, value in final.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("feasible", feasible)
        trial.set_constraint(COLLAPSE_FLAG, self.objective.constraint(final))
        if outcome.config is not None:
            trial.set_user_attr("config", outcome.config)
        for key, value in outcome.attrs().items():  # replicates, leave-one-domain-out folds
            trial.set_user_attr(key, value)
        if outcome.correlations is not None:
            db.write_artifact(self._engine, trial._trial_id, "correlations",
                              outcome.correlations)
        self.study.tell(trial, values)
        self._told("complete", {"number": trial.number, "values": values,
                                "feasible": feasible})

    # Tune pickles its searcher into the experiment folder (tuner.pkl). The study handle,
    # its engine and URL (which may hold a password) must not go there: the database is
    # the state, and a resume reopens it.
    _UNPICKLED = ("study", "_engine", "_live", "_lock", "on_event")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.study, self._engine, self._live = None, None, {}
        self._lock, self.on_event = threading.Lock(), lambda kind, info: None



class SignalStopper(Stopper):
    """Ends a Tune experiment once its driver was sent SIGINT/SIGTERM.

    Tune pickles its stoppers with the experiment, so this one holds only a key into a
    registry of this process's stop events.
    """

    _events: ClassVar[dict[str, threading.Event]] = {}

    def __init__(self, key: str) -> None:
        self.key = key

    @classmethod
    def register(cls, key: str, event: threading.Event) -> SignalStopper:
        cls._events[key] = event
        return cls(key)

    @classmethod
    def unregister(cls, key: str) -> None:
        cls._events.pop(key, None)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        event = self._events.get(self.key)
        return event is not None and event.is_set()

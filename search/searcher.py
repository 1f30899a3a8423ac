"""A Ray Tune searcher over Optuna's ask/tell, with the study database as its state.

What it does differently from the stock ``OptunaSearch``:
- a trial stopped early by a scheduler is told PRUNED, never COMPLETE with a truncated
  value;
- every Optuna trial carries its Tune trial id, and the driver repairs orphans from the
  database on resume (no ``Tuner.restore``), so nothing is re-run or left RUNNING;
- the objective's names and directions live here, not in ``TuneConfig``;
- a trial retried after a worker failure is told exactly once, when it finally ends;
- per-epoch metrics go to our own table, which multi-objective studies need.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search import storage as db
from search.objective import EPOCH_SCORE, Objective
from search.space import SearchSpace
from trainer.objectives import COLLAPSE_FLAG

log = logging.getLogger("stagetune.search")

#: keys of a trial's per-epoch report that are ours (Ray adds its own bookkeeping)
_RAY_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
             "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
             "iterations_since_restore", "checkpoint_dir_name", "experiment_tag"}


def own_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if k not in _RAY_KEYS and not k.startswith("config/")
            and isinstance(v, int | float) and not isinstance(v, bool)}


class StudySearcher(Searcher):
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
    ) -> None:
        super().__init__(metric=None, mode=None)
        self.study = study
        self.space = space
        self.objective = objective
        self.base_config = base_config
        self.trial_options = trial_options
        self.experiment = experiment
        self.on_event = on_event or (lambda kind, info: None)
        self._engine = engine  # the study database's SQLAlchemy engine
        self._live: dict[str, optuna.Trial] = {}
        self._lock = threading.Lock()

    # Tune hands us its metric/mode; ours are fixed by the objective, so accept anything.
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with self._lock:
            trial = self.study.ask()
            params = self.space.sample(trial)
            trial.set_user_attr("tune_trial_id", trial_id)
            trial.set_user_attr("tune_experiment", self.experiment)
            self._live[trial_id] = trial
        self.on_event("start", {"number": trial.number, "params": params})
        return {"params": params, "base": self.base_config, "optuna_number": trial.number,
                **self.trial_options}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._live.get(trial_id)
        if trial is None or result.get("final"):
            return
        row = own_metrics(result)
        if "epoch" not in row:
            return
        db.write_epoch(self._engine, trial._trial_id, int(row["epoch"]), int(row["stage"]), row)
        if self.objective.mode == "scalar" and EPOCH_SCORE in row:
            trial.report(row[EPOCH_SCORE], step=int(row["epoch"]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        with self._lock:
            trial = self._live.pop(trial_id, None)
        if trial is None:
            return
        frozen = self.study._storage.get_trial(trial._trial_id)
        if frozen.state.is_finished():  # told already (a retried trial ends only once)
            return
        info: dict[str, Any] = {"number": trial.number}
        if error:
            self.study.tell(trial, state=TrialState.FAIL)
            self.on_event("fail", info)
            return
        result = result or {}
        if not result.get("final"):
            # Stopped by the scheduler before the run finished: its numbers are those of
            # an undertrained model, so it must not enter the front.
            trial.set_user_attr("final_stage", float(result.get("stage", 0.0)))
            trial.set_user_attr("epochs_run", float(result.get("epoch", -1.0)) + 1.0)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.on_event("prune", info)
            return
        final = own_metrics(result)
        final.pop("final", None)
        feasible = self.objective.feasible(final)
        config = json.loads(result["config_json"]) if "config_json" in result else None
        for key, value in final.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("feasible", feasible)
        trial.set_constraint(COLLAPSE_FLAG, self.objective.constraint(final))
        if config is not None:
            trial.set_user_attr("config", config)
        if "correlations_json" in result:
            db.write_artifact(self._engine, trial._trial_id, "correlations",
                              json.loads(result["correlations_json"]))
        values = self.objective.values(final)
        self.study.tell(trial, values)
        info.update(values=values, feasible=feasible)
        self.on_event("complete", info)

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

    # The study database is the searcher's state: nothing to save beside the experiment.
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

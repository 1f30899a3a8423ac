"""Opening, checking and repairing the Optuna study that a sweep writes to."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from search.objective import Objective
from search.storage import (
    StorageError,
    create_tables,
    live_experiments,
    make_engine,
    ping,
    redact,
)

log = logging.getLogger("stagetune.search")
OBJECTIVE_ATTR = "stagetune_objective"
ORPHAN_ATTR = "stagetune_orphaned"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StudyError(RuntimeError):
    pass


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # group=True is marked experimental; it is what makes TPE model the conditional λ
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # constant liar: running trials count as bad guesses, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True,
                                          group=True, n_startup_trials=5)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"unknown sampler {name!r}; choose tpe, nsga2 or random")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url`` plus our tables; errors never show a password."""
    engine = make_engine(url)
    ping(engine, url)
    engine.dispose()
    attempts = 5
    for attempt in range(attempts):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            break
        except Exception as exc:
            # Two processes creating a new database's schema at once: one of them loses
            # the race on Optuna's version table. The schema exists now; open it again.
            text = str(exc)
            racing = any(sign in text for sign in ("UNIQUE constraint", "duplicate key",
                                                   "already exists", "database is locked"))
            if racing and attempt < attempts - 1:
                time.sleep(0.3 * (attempt + 1))
                continue
            raise StorageError(f"cannot open study database {redact(url)}: "
                               f"{redact(str(exc).splitlines()[0])}") from None
    create_tables(storage.engine)
    return storage


@dataclass
class OpenedStudy:
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    created: bool


def open_study(url: str, name: str, objective: Objective, *, sampler: str, seed: int | None,
               create: bool = True) -> OpenedStudy:
    """Load a study, or create it; refuse one made for other objectives."""
    storage = open_storage(url)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    spec = objective.describe()
    if name in existing:
        summary = existing[name]
        directions = [d.name.lower() for d in summary.directions]
        stored = summary.user_attrs.get(OBJECTIVE_ATTR)
        if directions != objective.directions or (stored and stored["names"] != spec["names"]):
            theirs = stored["names"] if stored else directions
            raise StudyError(
                f"study {name!r} exists with other objectives ({', '.join(theirs)} / "
                f"{', '.join(directions)}); use its objective flags or another --study"
            )
        n_done = sum(1 for t in storage.get_all_trials(summary._study_id, deepcopy=False)
                     if t.state in FINISHED)
        study = optuna.load_study(
            study_name=name, storage=storage,
            sampler=make_sampler(sampler, None if seed is None else seed + n_done),
        )
        return OpenedStudy(study, storage, created=False)
    if not create:
        known = ", ".join(sorted(existing)) or "none"
        raise StudyError(f"no study {name!r} in {redact(url)}; studies there: {known}")
    study = optuna.create_study(
        storage=storage, study_name=name, directions=objective.directions,
        sampler=make_sampler(sampler, seed),
    )
    study.set_user_attr(OBJECTIVE_ATTR, spec)
    return OpenedStudy(study, storage, created=True)


DRIVER_BEAT_S = 20.0  # how often a driver records that it is alive
DRIVER_STALE_S = 120.0  # after this long without a beat, its RUNNING trials are orphans


def recover_orphans(study: optuna.Study, engine=None, *,
                    stale_after_s: float = DRIVER_STALE_S) -> list[int]:
    """Trials a dead driver left RUNNING: mark them failed and re-queue their settings.

    Optuna's heartbeat does not cover ask/tell trials, so drivers beat in our own table;
    trials of a driver that beat recently (another sweep on the same study, still
    running) are left alone. Returns the numbers of the trials re-queued.
    """
    storage = study._storage
    live = live_experiments(engine, within_s=stale_after_s) if engine is not None else set()
    requeued = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("tune_experiment") in live:
            continue
        storage.set_trial_user_attr(t._trial_id, ORPHAN_ATTR, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"requeued_from": t.number})
        requeued.append(t.number)
        log.warning("trial %d was left running by a driver that stopped; re-queued", t.number)
    return requeued


def count_finished(study: optuna.Study) -> dict[str, int]:
    """Trials by state; ``done`` counts those toward the study's total (not orphans)."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "orphaned": 0, "running": 0,
              "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["orphaned" if t.user_attrs.get(ORPHAN_ATTR) else "failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1
    counts["done"] = counts["complete"] + counts["pruned"] + counts["failed"]
    return counts


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials whose zay did not collapse: the ones a front is made of."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible", True)]



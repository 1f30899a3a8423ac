"""Opening, checking and repairing the Optuna study that a sweep writes to.

The study layer, above :mod:`search.db.storage`: Optuna's storage and study, the objective
a study was made for, orphaned trials and their re-queueing. It calls the database layer
for URLs, engines, the study lock and drivers' heartbeats; that layer never calls back.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from search.db import fixed as fixed_config
from search.db.storage import (
    DRIVER_STALE_S,
    SCHEMA_ATTEMPTS,
    StorageError,
    create_tables,
    existing_database,
    has_study_tables,
    live_experiments,
    lost_schema_race,
    make_engine,
    ping,
    redact,
    remove_dead_drivers,
    sqlite_file,
    study_lock,
)
from search.objective import Objective
from trainer.objectives import TASK_OBJECTIVE

log = logging.getLogger("stagetune.search")
OBJECTIVE_ATTR = "stagetune_objective"
ORPHAN_ATTR = "stagetune_orphaned"
#: seeds per suggested setting a study was swept with (absent: 1)
REPLICATES_ATTR = "stagetune_replicates"
#: a FAIL trial's reason, one line (``status`` and the report show it)
FAIL_REASON_ATTR = "fail_reason"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StudyError(RuntimeError):
    pass


def trial_seed(seed: int | None, number: int) -> int | None:
    """The sampler seed for trial ``number``: a function of the sweep's seed and the
    trial's number, so concurrent drivers never share a random stream and a sweep is
    reproducible however many drivers ran it."""
    if seed is None:
        return None
    import numpy as np

    return int(np.random.SeedSequence([int(seed) % 2**32, number]).generate_state(1)[0])


def nsga2_population_size(n_trials: int | None) -> int:
    """NSGA-II's generation size for a sweep of ``n_trials``.

    Optuna's default (50) draws the whole first generation at random, so a sweep of fewer
    than 50 trials would be random search. A quarter of the budget (4 to 50) leaves at
    least four generations to evolve.
    """
    if n_trials is None:
        return 50
    return max(4, min(50, n_trials // 4))


#: the samplers ``--sampler`` names (``search.cli`` lists them too, without importing optuna)
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random", "gp")
#: trials the GP sampler draws at random before it fits its first model (as TPE's 5)
GP_STARTUP_TRIALS = 5


def make_sampler(name: str, seed: int | None, *,
                 n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The named sampler, seeded; ``n_trials`` (the study's total) sizes NSGA-II's
    generations."""
    if name == "tpe":
        # group=True is marked experimental; it is what makes TPE model the conditional λ
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # constant liar: running trials count as bad guesses, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True,
                                          group=True, n_startup_trials=5)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=nsga2_population_size(n_trials))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        # Gaussian-process Bayesian optimisation: multi-objective (logEHVI) and constrained
        # since Optuna 4.5; it reads the collapse constraint each finished trial carries
        # (``Trial.set_constraint``), as the other samplers do. Categorical parameters are
        # searched by the GP; a parameter outside the space every trial shares (λ, only
        # sampled while the penalty is on) is drawn by its seeded independent sampler.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=GP_STARTUP_TRIALS,
                                         warn_independent_sampling=False)
    raise StudyError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url`` plus our tables; errors never show a password."""
    engine = make_engine(url)
    ping(engine, url)
    engine.dispose()
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            break
        except Exception as exc:
            # Two processes creating a new database's schema at once: one of them loses
            # the race on Optuna's version table. The schema exists now; open it again.
            if lost_schema_race(exc) and attempt < SCHEMA_ATTEMPTS - 1:
                time.sleep(0.3 * (attempt + 1))
                continue
            raise StorageError(f"cannot open study database {redact(url)}: "
                               f"{redact(str(exc).splitlines()[0])}") from None
    try:
        create_tables(storage.engine)
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot create stagetune's tables in {redact(url)}: "
                           f"{redact(str(exc).splitlines()[0])}") from None
    return storage


def open_storage_read_only(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on an existing study database, opened so that nothing can be
    created, migrated or written (what ``status`` uses)."""
    engine = existing_database(url)
    if engine is None:
        raise StorageError(f"no study database at {sqlite_file(url)} (nothing was created); "
                           "check --storage")
    try:
        is_study_db = has_study_tables(engine, url)
    except StorageError:
        is_study_db = False
    if not is_study_db:
        engine.dispose()
        raise StorageError(f"{redact(url)} is not a study database (no Optuna tables); "
                           "point --storage at the database a sweep wrote")
    kwargs = {}
    if engine.dialect.name == "postgresql":
        kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on",
                                  "connect_timeout": 10}
    rendered = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    try:
        return optuna.storages.RDBStorage(rendered, engine_kwargs=kwargs,
                                          skip_table_creation=True)
    except Exception as exc:  # e.g. a schema of another Optuna version
        raise StorageError(f"cannot read study database {redact(url)}: "
                           f"{redact(str(exc).strip().splitlines()[0])}") from None


def peek_study(url: str, name: str, objective: Objective, *, replicates: int | None = None,
               fixed: dict[str, Any] | None = None, change_budget: bool = False
               ) -> int | None:
    """Read-only look before a sweep starts anything: ``None`` if the study does not exist
    yet, else its finished trials (orphans excluded); refuses another objective, another
    number of replicates (when ``replicates`` is given) or other fixed fields (``fixed``,
    :func:`check_fixed`)."""
    engine = existing_database(url)
    if engine is None:
        return None
    try:
        if not has_study_tables(engine, url):
            return None
    finally:
        engine.dispose()
    storage = open_storage_read_only(url)
    try:
        if not any(s.study_name == name for s in storage.get_all_studies()):
            return None
        study = _load_existing(storage, name, objective, "random", None)
        if replicates is not None:
            check_replicates(study, replicates)
        if fixed is not None:
            check_fixed(study, fixed, change_budget=change_budget)
        return count_finished(study)["done"]
    finally:
        storage.engine.dispose()


@dataclass
class OpenedStudy:
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    created: bool
    #: the study was moved to another budget now (``--change-budget``)
    moved: bool = False


def _objective_mismatch(stored: dict, directions: list[str], objective: Objective) -> str:
    """What differs between a stored study's objective and ``objective`` ('' if nothing)."""
    spec = objective.describe()
    theirs = {"mode": stored.get("mode"), "metric": stored.get("disentanglement"),
              "task metric": stored.get("task", TASK_OBJECTIVE),
              "names": stored.get("names"), "directions": directions,
              "weight": stored.get("weight")}
    ours = {"mode": spec["mode"], "metric": spec["disentanglement"],
            "task metric": spec["task"], "names": spec["names"],
            "directions": spec["directions"], "weight": spec["weight"]}
    if not stored:  # a study made before its objective was recorded: directions only
        theirs = {"directions": directions}
        ours = {"directions": spec["directions"]}
    if theirs.get("mode", ours.get("mode")) != "scalar":
        # the weight enters the stored values only in scalar mode
        theirs.pop("weight", None)
        ours.pop("weight", None)
    diff = [k for k in ours if theirs.get(k) != ours[k]]
    return ", ".join(f"{k} {_show(theirs.get(k))} (this run: {_show(ours[k])})" for k in diff)


def _show(value) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else str(value)


def _load_existing(storage, name: str, objective: Objective, sampler: str,
                   seed: int | None, *, wait_for_spec_s: float = 0.0) -> optuna.Study:
    summary = next(s for s in storage.get_all_studies() if s.study_name == name)
    stored = summary.user_attrs.get(OBJECTIVE_ATTR)
    if stored is None and storage.get_all_trials(summary._study_id, deepcopy=False):
        wait_for_spec_s = 0.0  # an older study, or one made by plain Optuna: nothing comes
    deadline = time.monotonic() + wait_for_spec_s
    while stored is None and time.monotonic() < deadline:
        # created by another process a moment ago: its objective is written right after
        time.sleep(0.05)
        summary = next(s for s in storage.get_all_studies() if s.study_name == name)
        stored = summary.user_attrs.get(OBJECTIVE_ATTR)
    directions = [d.name.lower() for d in summary.directions]
    mismatch = _objective_mismatch(stored or {}, directions, objective)
    if mismatch:
        raise StudyError(
            f"study {name!r} exists with other objectives: {mismatch}; resume it with "
            "its own objective flags (stagetune status shows them) or use another --study"
        )
    return optuna.load_study(study_name=name, storage=storage,
                             sampler=make_sampler(sampler, seed))


def load_named_study(storage, url: str, name: str) -> optuna.Study:
    """The study ``name`` of an opened storage; a missing one is refused in one line that
    lists the studies there (``url`` shown without its password)."""
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        raise StorageError(f"no study {name!r} in {redact(url)}; studies there: "
                           f"{', '.join(sorted(names)) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def study_replicates(study: optuna.Study) -> int:
    """The seeds per setting a study was swept with (1 for a study made before)."""
    return int(study.user_attrs.get(REPLICATES_ATTR, 1))


def check_replicates(study: optuna.Study, replicates: int) -> None:
    """Refuse to continue a study with another number of replicates: its trials' means
    would average different numbers of seeds."""
    stored = study_replicates(study)
    if stored != replicates:
        raise StudyError(f"study {study.study_name!r} was swept with --replicates {stored}; "
                         f"resume it with --replicates {stored} (this run: {replicates}) "
                         "or use another --study")


def stored_fixed(study: optuna.Study) -> tuple[dict[str, Any] | None, bool]:
    """The fixed fields a study's trials share and whether they were stored as such:
    the study attribute, else (a study made before it was stored) those of its first
    complete trial's configuration without the seeds; ``(None, False)`` before any."""
    stored = study.user_attrs.get(fixed_config.FIXED_CONFIG_ATTR)
    if isinstance(stored, dict):
        return stored, True
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if isinstance(t.user_attrs.get("config"), dict):
            return fixed_config.fixed_from_trial(
                t.user_attrs["config"], lodo=bool(t.user_attrs.get("lodo_domains"))), False
    return None, False


def check_fixed(study: optuna.Study, fixed: dict[str, Any], *, change_budget: bool) -> bool:
    """Refuse to continue a study with other fixed fields than its trials share, in one
    line naming the difference; a different epoch budget only with ``change_budget``.

    Returns:
        Whether the command moves the study to another budget.
    """
    stored, _ = stored_fixed(study)
    if stored is None:
        return False
    diff = fixed_config.differences(stored, fixed)
    if not diff:
        return False
    if diff == [fixed_config.BUDGET_FIELD] and change_budget:
        return True
    moved = len(fixed_config.budgets(study.user_attrs)) > 1
    raise StudyError(fixed_config.mismatch_message(study.study_name, stored, fixed, diff,
                                                   moved=moved))


def record_fixed(study: optuna.Study, engine, fixed: dict[str, Any], *,
                 change_budget: bool) -> bool:
    """Check ``fixed`` against the study's (:func:`check_fixed`) under the study's lock
    and store it: a study made before fixed fields were stored gets them now, and a budget
    move is recorded with the number of the first trial it applies to. Returns whether
    the study moved."""
    with study_lock(engine, study.study_name):
        moved = check_fixed(study, fixed, change_budget=change_budget)
        stored, was_stored = stored_fixed(study)
        if moved:
            attrs = dict(study.user_attrs)
            # a study made before fixed fields were stored: the budget its trials ran at
            attrs.setdefault(fixed_config.FIXED_CONFIG_ATTR, stored)
            history = fixed_config.moved_budgets(
                attrs, fixed[fixed_config.BUDGET_FIELD], len(study.get_trials(deepcopy=False)))
            study.set_user_attr(fixed_config.BUDGETS_ATTR, history)
        if moved or not was_stored:
            study.set_user_attr(fixed_config.FIXED_CONFIG_ATTR, fixed)
    return moved


def budget_summary(study: optuna.Study) -> dict[str, Any]:
    """The budgets a study ran at (``search.db.fixed``: oldest first, empty for a study that
    never moved), each trial's (those that ran: not waiting, not re-queued) and the line
    ``status`` prints (``None`` for one budget)."""
    from trainer.params import flat_config

    history = fixed_config.budgets(study.user_attrs)
    if len(history) < 2:
        return {"budgets": history, "trials": {}, "line": None}
    ran_trials = [t for t in study.get_trials(deepcopy=False)
                  if t.state != TrialState.WAITING and not t.user_attrs.get(ORPHAN_ATTR)]
    configs = {t.number: flat_config(t.user_attrs["config"]) for t in ran_trials
               if isinstance(t.user_attrs.get("config"), dict)}
    ran = {n: int(c[fixed_config.BUDGET_FIELD]) for n, c in configs.items()
           if c.get(fixed_config.BUDGET_FIELD) is not None}
    by_trial = fixed_config.trial_budgets(history, [t.number for t in ran_trials], ran)
    return {"budgets": history, "trials": by_trial,
            "line": fixed_config.budget_line(history, by_trial)}


def summary_objective(study: optuna.Study) -> Objective:
    """The objective to summarise ``study`` by (``status``): the one it was swept for, or,
    for a study plain Optuna made, scalar for one objective and pareto for two.

    Raises:
        StudyError: the study's objectives are not ones a summary can name (e.g. a study
            of three objectives); nothing has been printed.
    """
    directions = [d.name.lower() for d in study.directions]
    spec = study.user_attrs.get(OBJECTIVE_ATTR)
    if isinstance(spec, dict):
        objective = Objective.from_spec(spec)
    else:
        objective = Objective(mode="scalar" if len(directions) == 1 else "pareto")
    if len(directions) != len(objective.names):
        raise StudyError(
            f"cannot summarise study {study.study_name!r}: it has {len(directions)} "
            f"objective{'s' if len(directions) != 1 else ''} ({_show(directions)}), not "
            f"the {len(objective.names)} of a {objective.mode} sweep "
            f"({_show(objective.names)}); 'stagetune analyze rank' reads a study of any "
            "objectives")
    return objective


def open_study(url: str, name: str, objective: Objective, *, sampler: str, seed: int | None,
               create: bool = True, replicates: int | None = None,
               fixed: dict[str, Any] | None = None, change_budget: bool = False
               ) -> OpenedStudy:
    """Load a study, or create it; refuse one made for another objective, other
    replicates or other fixed fields (``fixed``: stored with a new study, checked and
    recorded by :func:`record_fixed` on an existing one).

    Several drivers may open the same new study at once: the one whose create wins makes
    it, the others load it (Optuna's ``load_if_exists`` still races).
    """
    make_sampler(sampler, seed)  # refuse an unknown sampler before anything is written
    storage = open_storage(url)
    if any(s.study_name == name for s in storage.get_all_studies()):
        study = _load_existing(storage, name, objective, sampler, seed, wait_for_spec_s=5.0)
        if replicates is not None:
            check_replicates(study, replicates)
        moved = (record_fixed(study, storage.engine, fixed, change_budget=change_budget)
                 if fixed is not None else False)
        return OpenedStudy(study, storage, created=False, moved=moved)
    if not create:
        known = ", ".join(sorted(s.study_name for s in storage.get_all_studies())) or "none"
        raise StudyError(f"no study {name!r} in {redact(url)}; studies there: {known}")
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=objective.directions,
            sampler=make_sampler(sampler, seed),
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = _load_existing(storage, name, objective, sampler, seed, wait_for_spec_s=5.0)
        return OpenedStudy(study, storage, created=False)
    study.set_user_attr(OBJECTIVE_ATTR, objective.describe())
    if replicates is not None and replicates > 1:
        study.set_user_attr(REPLICATES_ATTR, int(replicates))
    if fixed is not None:
        study.set_user_attr(fixed_config.FIXED_CONFIG_ATTR, fixed)
    return OpenedStudy(study, storage, created=True)


@dataclass(frozen=True)
class StudyRequest:
    """What a sweep asks of its study: where it is, its objective and sampler, and what a
    resumed study must match (replicates, fixed fields; another budget only with
    ``change_budget``). ``baseline`` is the method's default setting, queued as the first
    trial of a new study or a new budget (``None``: it lies outside the space)."""

    url: str
    name: str
    objective: Objective
    sampler: str
    seed: int | None
    replicates: int
    fixed: dict[str, Any]
    change_budget: bool = False
    baseline: dict[str, Any] | None = None

    def check(self) -> int | None:
        """Read-only, before anything starts: ``None`` for a study not there yet, else
        its finished trials; refuses a study this request does not match."""
        return peek_study(self.url, self.name, self.objective, replicates=self.replicates,
                          fixed=self.fixed, change_budget=self.change_budget)


@dataclass
class SweepStudy:
    """A study opened for a sweep, what opening it did, and what it holds now."""

    opened: OpenedStudy
    requeued: list[int]  # trials a stopped driver left running, failed and queued again
    done: int  # finished trials counted toward the total
    baseline_skipped: bool  # a new study or budget whose default lies outside the space

    @property
    def study(self) -> optuna.Study:
        return self.opened.study


def open_sweep_study(request: StudyRequest) -> SweepStudy:
    """Open (or create) a sweep's study, in one call: refuse a study it does not match,
    re-queue the trials a dead driver left running, queue the default as the reference of
    a new study or budget, and count what is done."""
    opened = open_study(request.url, request.name, request.objective,
                        sampler=request.sampler, seed=request.seed,
                        replicates=request.replicates, fixed=request.fixed,
                        change_budget=request.change_budget)
    requeued = recover_orphans(opened.study, opened.storage.engine)
    fresh = opened.created or opened.moved  # a new budget gets the default as its reference
    if fresh and request.baseline is not None:
        opened.study.enqueue_trial(request.baseline, user_attrs={"baseline": True})
    return SweepStudy(opened, requeued, count_finished(opened.study)["done"],
                      baseline_skipped=fresh and request.baseline is None)


def study_engine(study: optuna.Study):
    """The SQLAlchemy engine under a study's (possibly cached) RDB storage."""
    storage = study._storage
    return getattr(storage, "engine", None) or storage._backend.engine


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Fail a trial that a stopped driver left RUNNING, not counting it toward the total,
    and queue its settings to run again."""
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, ORPHAN_ATTR, True)
    storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, reason)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    study.enqueue_trial(dict(trial.params), user_attrs={"requeued_from": trial.number})


def requeue_stopped(study: optuna.Study, engine, experiment: str) -> list[int]:
    """The trials of the driver ``experiment`` still RUNNING after it was stopped: FAIL
    "driver stopped", not counted toward the total, their settings queued to run again.
    Returns their numbers."""
    stopped = []
    with study_lock(engine, study.study_name):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("tune_experiment") == experiment:
                requeue(study, t, "driver stopped")
                stopped.append(t.number)
    return stopped


def recover_orphans(study: optuna.Study, engine=None, *,
                    stale_after_s: float = DRIVER_STALE_S) -> list[int]:
    """Trials a dead driver left RUNNING: mark them failed and re-queue their settings.

    Optuna's heartbeat does not cover ask/tell trials, so drivers beat in our own table;
    trials of a driver that beat recently (another sweep on the same study, still
    running) are left alone, and the rows of dead drivers are removed. It runs under the
    study's lock, which a driver holds from asking for a trial until the trial carries
    its driver's name, so a trial is never taken for an orphan in between. Returns the
    numbers of the trials re-queued.
    """
    requeued = []
    with study_lock(engine or study_engine(study), study.study_name):
        live = (live_experiments(engine, within_s=stale_after_s) if engine is not None
                else set())
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("tune_experiment") in live:
                continue
            requeue(study, t, "driver lost")
            requeued.append(t.number)
            log.warning("trial %d was left running by a driver that stopped; re-queued",
                        t.number)
        if engine is not None:
            remove_dead_drivers(engine, live)
    return requeued


def count_toward_total(study: optuna.Study) -> tuple[int, int]:
    """``(counted, next_number)`` from the database now: trials that count toward
    ``--n-trials`` (finished, not re-queued orphans, plus running) and the number the
    next ``ask`` will get (the oldest waiting trial, else a new one). Call it under
    :func:`study_lock`, so that no other driver asks in between."""
    import sqlalchemy as sa

    engine = study_engine(study)
    study_id = study._study_id
    with engine.connect() as conn:
        counted = conn.execute(sa.text(
            "SELECT COUNT(*) FROM trials t WHERE t.study_id = :sid AND t.state IN "
            "('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING') AND NOT EXISTS (SELECT 1 FROM "
            "trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = :orphan)"),
            {"sid": study_id, "orphan": ORPHAN_ATTR}).scalar_one()
        waiting = conn.execute(sa.text(
            "SELECT MIN(number) FROM trials WHERE study_id = :sid AND state = 'WAITING'"),
            {"sid": study_id}).scalar_one()
        total = conn.execute(sa.text("SELECT COUNT(*) FROM trials WHERE study_id = :sid"),
                             {"sid": study_id}).scalar_one()
    return int(counted), int(waiting) if waiting is not None else int(total)


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



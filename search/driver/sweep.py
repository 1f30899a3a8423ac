"""The sweep driver: a study in the database, Ray Tune scheduling trials against it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from search.contract import Replication
from search.db.fixed import budgets, fixed_fields
from search.db.storage import DRIVER_BEAT_S, beat, check_sqlite_folder, end_driver, redact
from search.db.study import StudyRequest, SweepStudy, open_sweep_study, requeue_stopped
from search.driver.coordinator import actor_name, start_coordinator
from search.driver.launch import (
    Launch,
    PreflightError,
    SignalStop,
    experiment_name,
    launch,
    start_workers,
)
from search.driver.progress import (
    Progress,
    default_work_dir,
    print_summary,
    summarize,
)
from search.objective import EPOCH_SCORE, Objective
from search.space import SearchSpace
from search.worker.replicates import lodo_folds, replication

log = logging.getLogger("stagetune.search")


@dataclass
class SweepOptions:
    storage: str = "sqlite:///stagetune.db"
    study: str = "stagetune"
    n_trials: int = 20
    base_config: dict[str, Any] = field(default_factory=dict)
    space: SearchSpace = field(default_factory=SearchSpace)
    objective: Objective = field(default_factory=Objective)
    sampler: str = "tpe"
    seed: int | None = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 per trial when the cluster has GPUs
    max_concurrent: int | None = None
    address: str | None = None
    num_cpus: int | None = None  # local Ray only
    asha: bool = False
    retries: int = 2
    replicates: int = 1  # seeds per suggested setting, paired across settings
    lodo: bool = False  # every setting once per held-out training domain
    population: int = 1  # Optuna trials trained together in one Ray trial
    refill: bool = True  # a population member that stops frees its slot for the next trial
    imports: tuple[str, ...] = ()
    tune_dir: str = field(default_factory=lambda: str(default_work_dir()))
    quiet: bool = False
    verbose: bool = False  # show Ray's own warnings
    resume_command: str | None = None  # printed after a stop signal (password hidden)
    #: move a stored study to this sweep's --epochs (recorded; reports show which trials
    #: ran at which budget); without it another budget is refused
    change_budget: bool = False
    #: MO-ASHA's rungs (epochs completed) in a Pareto study with ``asha``; None: the
    #: faithful rungs of the study's latest fidelity check (``search.driver.moasha``)
    rungs: tuple[int, ...] | None = None
    reduction_factor: float = 3.0


class SweepInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the sweep; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, stopped: list[int]) -> None:
        self.signum, self.stopped = signum, stopped
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def check_trial_config(opts: SweepOptions) -> None:
    """What every trial would trip over, checked once before launch: the ``--import``
    modules, the trainer configuration, the data set's name and its data root."""
    import importlib

    for module in opts.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PreflightError(f"cannot import --import module {module!r}: {exc}") from None
    from trainer import RunConfig, dataset_names

    cfg = RunConfig.from_dict(opts.base_config)
    if cfg.data.dataset not in dataset_names():
        raise PreflightError(
            f"unknown dataset {cfg.data.dataset!r}; choose one of "
            f"{', '.join(dataset_names())} (a data set of your own needs --import MODULE)")
    root = cfg.data.data_root
    if root and not Path(root).expanduser().is_dir():
        raise PreflightError(f"data root {root} does not exist or is not a directory")


def replicate_option(base_config: dict[str, Any], replicates: int, *, lodo: bool = False
                     ) -> Replication | None:
    """The trials' replicate seeds, pinned split and leave-one-domain-out folds, from the
    base configuration."""
    from trainer import RunConfig

    base = RunConfig.from_dict(base_config)
    folds = (lodo_folds(len(base.data.domains), base.data.test_domain, base.data.val_domain)
             if lodo else None)
    return replication(base.seed, base.data_seed, replicates, folds)


def check_task_metric(opts: SweepOptions) -> None:
    """Refuse a task objective the runs cannot measure, in one line each."""
    from search.objective import LODO_METRIC
    from trainer import RunConfig

    cfg = RunConfig.from_dict(opts.base_config)
    task = opts.objective.task
    if opts.lodo:
        if cfg.data.dataset == "camelyon17":
            raise PreflightError("--lodo cannot re-split camelyon17: WILDS fixes its "
                                 "hospitals; use --task-metric acc_y_val_domain (WILDS' "
                                 "out-of-distribution validation hospital)")
        if opts.asha:
            raise PreflightError("--asha cannot be combined with --lodo: a trial's epoch "
                                 "rows are its folds' average, known only once every fold "
                                 "has trained")
        if task != LODO_METRIC:
            raise PreflightError(f"--lodo optimises {LODO_METRIC}; leave --task-metric unset "
                                 f"or set it to {LODO_METRIC} (got {task})")
        try:
            lodo_folds(len(cfg.data.domains), cfg.data.test_domain, cfg.data.val_domain)
        except ValueError as exc:
            raise PreflightError(str(exc)) from None
    elif task == LODO_METRIC:
        raise PreflightError(f"--task-metric {LODO_METRIC} needs --lodo")
    if task == "acc_y_val_domain" and cfg.data.val_domain is None:
        raise PreflightError("--task-metric acc_y_val_domain needs a validation domain: "
                             "--val-domain K (a domain other than --test-domain; "
                             "camelyon17: 1, WILDS' validation hospital)")


def check_rungs(opts: SweepOptions) -> SweepOptions:
    """A Pareto sweep with ``asha``: its MO-ASHA rungs, chosen before anything is stored
    (``--rungs``, else the faithful rungs of the study's latest fidelity check; refused
    where neither exists)."""
    if not opts.asha or opts.objective.mode != "pareto":
        return opts
    from search.db.storage import existing_database, has_study_tables, latest_fidelity_summary
    from search.driver.moasha import RungBook, RungError, choose_rungs

    summary = None
    engine = existing_database(opts.storage)
    if engine is not None:
        try:
            if has_study_tables(engine, opts.storage):
                summary = latest_fidelity_summary(engine, opts.study)
        finally:
            engine.dispose()
    try:
        rungs = choose_rungs(opts.rungs, summary, opts.objective.names, opts.space.epochs)
        # the book a sweep would build, so that what it refuses is refused before the
        # study is created (an objective with no per-epoch proxy, say)
        RungBook(tuple(rungs), tuple(opts.objective.names), tuple(opts.objective.directions),
                 opts.reduction_factor)
    except RungError as exc:
        raise PreflightError(str(exc)) from None
    return replace(opts, rungs=tuple(rungs))


def rung_book(opts: SweepOptions, study, engine):
    """MO-ASHA's book over the study's objectives, its rungs rebuilt from the stored epoch
    rows of every finished trial (a resumed driver decides as the stopped one would
    have)."""
    from optuna.trial import TrialState

    from search.db.storage import read_epochs
    from search.driver.moasha import RungBook

    book = RungBook(tuple(opts.rungs or ()), tuple(opts.objective.names),
                    tuple(opts.objective.directions), opts.reduction_factor)
    finished = study.get_trials(deepcopy=False,
                                states=(TrialState.COMPLETE, TrialState.PRUNED))
    book.replay((t.number, row) for t in finished for row in read_epochs(engine, t._trial_id))
    return book


def mo_asha_scheduler(opts: SweepOptions, study, engine):
    """MO-ASHA as Ray Tune's scheduler of solo trials."""
    from search.driver.moasha import scheduler_class

    return scheduler_class()(rung_book(opts, study, engine))


def run_sweep(opts: SweepOptions) -> dict[str, Any]:
    """Run (or continue) a sweep until the study holds ``n_trials`` finished trials.

    In order: check everything that would make every trial fail, or wait forever, before
    the study is created or a trial launched (:class:`PreflightError`; a resumed study
    with another objective, other replicates or other fixed fields, ``search.db.fixed``:
    another budget only with ``change_budget``, is refused); start the workers (Ray);
    open the study (``search.db.study.open_sweep_study``); run the trials.
    SIGINT/SIGTERM stop it gracefully (:class:`SweepInterrupted`).
    """
    opts, request = preflight(opts)
    done_before = request.check()
    gpus = start_workers(opts) if done_before is None or done_before < opts.n_trials else None
    sweep = open_sweep_study(request)
    remaining = opts.n_trials - sweep.done
    if not opts.quiet:
        print_opened(opts, sweep, remaining)
    t_start = time.perf_counter()
    outcomes: dict[str, int] = {}
    if remaining > 0:
        if gpus is None:  # trials re-queued since the check
            gpus = start_workers(opts)
        outcomes = _run_tune(opts, sweep.study, gpus, sweep.done, sweep.opened.storage.engine)
    summary = summarize(sweep.study, opts.objective)
    summary["requeued"] = sweep.requeued
    summary["this_run"] = outcomes
    summary["wall_s"] = time.perf_counter() - t_start
    if not opts.quiet:
        print_summary(summary)
    return summary


def preflight(opts: SweepOptions) -> tuple[SweepOptions, StudyRequest]:
    """Every check a sweep makes before it starts or stores anything; the options as the
    sweep runs them (its rungs chosen, its space read against the base configuration) and
    what it asks of its study."""
    if opts.n_trials < 1:  # 0 would create a study and queue its default, to run nothing
        raise ValueError(f"--n-trials must be at least 1 (got {opts.n_trials}): it is the "
                         "study's total of finished trials")
    check_sqlite_folder(opts.storage)  # before Ray starts: nothing to start for a typo
    check_trial_config(opts)
    from search.driver.population import check_population

    check_population(opts.population, asha=opts.asha, replicates=opts.replicates,
                     pareto=opts.objective.mode == "pareto", lodo=opts.lodo)
    check_task_metric(opts)
    opts = check_rungs(opts)
    # where a parameter acts depends on what every trial keeps fixed (penalty_in_stage3, ..)
    opts = replace(opts, space=opts.space.with_base(opts.base_config))
    base = opts.space.baseline()
    return opts, StudyRequest(
        opts.storage, opts.study, opts.objective, sampler=opts.sampler, seed=opts.seed,
        replicates=opts.replicates, fixed=fixed_fields(opts.base_config),
        change_budget=opts.change_budget,
        baseline=base if opts.space.admits(base) else None)


def print_opened(opts: SweepOptions, sweep: SweepStudy, remaining: int) -> None:
    """What opening the study did, in a line or three."""
    if sweep.opened.moved:
        first = budgets(sweep.study.user_attrs)[-1]["first_trial"]
        print(f"study {opts.study!r} moved to epochs={opts.space.epochs} from trial {first} "
              "on (--change-budget; recorded: status and the report show the budgets)")
    if sweep.baseline_skipped:
        print("the method's default setting lies outside the space; not enqueued")
    print(f"study {opts.study!r} in {redact(opts.storage)}: "
          f"{'created' if sweep.opened.created else 'resumed'}, {sweep.done} of "
          f"{opts.n_trials} trials done"
          + (f", re-queued {len(sweep.requeued)} left running by a stopped driver"
             if sweep.requeued else "")
          + f"; {max(0, remaining)} to run", flush=True)


def _run_tune(opts: SweepOptions, study, gpus: float, done: int, engine) -> dict[str, int]:
    from ray.tune.logger import JsonLoggerCallback

    from search.driver.population import searcher_class

    experiment = experiment_name(opts.study)
    heartbeat = _Heartbeat(engine, experiment)
    progress = Progress(opts.n_trials, done, opts.objective, study, quiet=opts.quiet)
    trial_options = {"objective": asdict(opts.objective),
                     "threads": max(1, int(opts.cpus_per_trial)),
                     "imports": tuple(opts.imports),
                     "replication": replicate_option(opts.base_config, opts.replicates,
                                                     lodo=opts.lodo)}
    coordinator = _coordinator(opts, study, engine, experiment)
    try:
        if coordinator is not None:  # populations: refills and MO-ASHA's decisions
            trial_options.update(coordinator=actor_name(experiment),
                                 refill=_coordinator_kind(opts) == "refill",
                                 rungs=tuple(opts.rungs or ()) if _moasha(opts) else ())
        searcher = searcher_class(opts.population)(
            study, opts.space, opts.objective,
            base_config=opts.base_config, trial_options=trial_options,
            experiment=experiment, engine=engine, on_event=progress,
            total=opts.n_trials, sampler=opts.sampler, seed=opts.seed,
        )
        stop = SignalStop(searcher)

        def requeue() -> None:
            if stop.signum is not None:
                stopped = requeue_stopped(study, engine, experiment)
                raise SweepInterrupted(stop.signum, stopped)

        how = Launch(experiment=experiment, n_samples=opts.n_trials, cpus=opts.cpus_per_trial,
                     gpus=gpus, max_concurrent=_max_concurrent(opts, gpus),
                     retries=opts.retries, tune_dir=opts.tune_dir,
                     scheduler=_scheduler(opts, study, engine),
                     callbacks=[JsonLoggerCallback()])
        heartbeat.start()
        launch(searcher, how, stop, after=requeue)
    finally:
        if coordinator is not None:
            import ray

            ray.kill(coordinator)
        progress.close()
        heartbeat.stop()
        try:
            end_driver(engine, experiment)
        except Exception as exc:  # the row only delays nothing: a stale row is ignored
            log.warning("could not remove the driver's row: %s",
                        redact(str(exc)).splitlines()[0])
    return dict(searcher.outcomes)


def _max_concurrent(opts: SweepOptions, gpus: float) -> int | None:
    """``--max-concurrent``; for refilling populations by default as many as the cluster
    runs at once, so that Tune asks for no population in advance (a pending one would
    take the trials that the running ones' freed slots wait for)."""
    if opts.max_concurrent is not None or _coordinator_kind(opts) != "refill":
        return opts.max_concurrent
    import ray

    free = ray.cluster_resources()
    slots = int(free.get("CPU", 1) // opts.cpus_per_trial)
    if gpus:
        slots = min(slots, int(free.get("GPU", 0) // gpus))
    return max(1, slots)


def _moasha(opts: SweepOptions) -> bool:
    return opts.asha and opts.objective.mode == "pareto"


def _coordinator_kind(opts: SweepOptions) -> str | None:
    """What a sweep's populations need a coordinator for: "refill" (with or without
    rungs), "rungs", or nothing (solo trials; populations that neither refill nor stop;
    leave-one-domain-out folds, which do neither)."""
    if opts.population <= 1 or opts.lodo:
        return None
    return "refill" if opts.refill else "rungs" if _moasha(opts) else None


def _coordinator(opts: SweepOptions, study, engine, experiment: str):
    """A population sweep's coordinator actor (its refills, and with ``asha`` its rung
    book), or ``None`` where it needs none."""
    if _coordinator_kind(opts) is None:
        return None
    return start_coordinator(experiment, rung_book(opts, study, engine) if _moasha(opts)
                             else None)


def _scheduler(opts: SweepOptions, study, engine):
    """The sweep's early stopping of solo trials: MO-ASHA in a Pareto study, ASHA on the
    epoch score in a scalar one, none without ``asha`` (population members are stopped by
    the coordinator's book)."""
    if not opts.asha or opts.population > 1:
        return None
    if opts.objective.mode == "pareto":
        return mo_asha_scheduler(opts, study, engine)
    from ray.tune.schedulers import ASHAScheduler

    # Rungs count epochs since stage 3 began, so none falls before zay is brought in.
    return ASHAScheduler(time_attr="stage3_epoch", metric=EPOCH_SCORE, mode="max",
                         max_t=max(1, opts.space.epochs), grace_period=1, reduction_factor=3)


class _Heartbeat:
    """Beats in the study database while a driver runs, so that another driver's resume
    does not take this one's running trials for orphans."""

    def __init__(self, engine, experiment: str) -> None:
        self.engine, self.experiment = engine, experiment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stagetune-heartbeat",
                                        daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                beat(self.engine, self.experiment)
            except Exception as exc:  # a missed beat only risks an early orphan call
                log.warning("driver heartbeat failed: %s", redact(str(exc)).splitlines()[0])
            self._stop.wait(DRIVER_BEAT_S)

    def start(self) -> None:
        beat(self.engine, self.experiment)  # alive before its first trial is asked for
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

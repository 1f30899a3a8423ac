"""The sweep driver: a study in the database, Ray Tune scheduling trials against it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from search._progress import (
    Progress,
    default_work_dir,
    print_summary,
    quiet_ray_logs,
    summarize,
)
from search.fixed import budgets, fixed_fields
from search.objective import EPOCH_SCORE, Objective
from search.replicates import OPTION, lodo_folds, trial_option
from search.space import SearchSpace
from search.storage import DRIVER_BEAT_S, beat, check_sqlite_folder, end_driver, redact
from search.study import (
    count_finished,
    open_study,
    peek_study,
    recover_orphans,
    requeue_stopped,
)

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
    imports: tuple[str, ...] = ()
    tune_dir: str = field(default_factory=lambda: str(default_work_dir()))
    quiet: bool = False
    verbose: bool = False  # show Ray's own warnings
    resume_command: str | None = None  # printed after a stop signal (password hidden)
    #: move a stored study to this sweep's --epochs (recorded; reports show which trials
    #: ran at which budget); without it another budget is refused
    change_budget: bool = False
    #: MO-ASHA's rungs (epochs completed) in a Pareto study with ``asha``; None: the
    #: faithful rungs of the study's latest fidelity check (``search.moasha``)
    rungs: tuple[int, ...] | None = None
    reduction_factor: float = 3.0


class PreflightError(ValueError):
    """The sweep cannot run as asked; found before anything is stored or launched."""


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
                     ) -> dict[str, Any] | None:
    """The trials' replicate seeds, pinned split and leave-one-domain-out folds, from the
    base configuration."""
    from trainer import RunConfig

    base = RunConfig.from_dict(base_config)
    folds = (lodo_folds(len(base.data.domains), base.data.test_domain, base.data.val_domain)
             if lodo else None)
    return trial_option(base.seed, base.data_seed, replicates, folds)


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


def check_resources(opts: SweepOptions) -> float:
    """Refuse a per-trial request no node of the Ray cluster can hold (Tune would wait for
    it forever); returns the GPUs per trial to ask for."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    cpus = sum(n.get("CPU", 0) for n in nodes)
    gpus_total = sum(n.get("GPU", 0) for n in nodes)
    gpus = opts.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if gpus_total > 0 else 0.0
    cluster = (f"the Ray cluster has {cpus:g} CPUs and {gpus_total:g} GPUs on {len(nodes)} "
               f"node{'s' if len(nodes) != 1 else ''}")
    if opts.cpus_per_trial <= 0 or gpus < 0:
        raise PreflightError("--cpus-per-trial must be positive and --gpus-per-trial not "
                             "negative")
    if not any(n.get("CPU", 0) >= opts.cpus_per_trial and n.get("GPU", 0) >= gpus
               for n in nodes):
        hint = ("; use --gpus-per-trial 0 or join a cluster with GPUs (--address)" if gpus
                else "; lower --cpus-per-trial")
        raise PreflightError(f"no node can run a trial with --cpus-per-trial "
                             f"{opts.cpus_per_trial:g} --gpus-per-trial {gpus:g}: "
                             f"{cluster}{hint}")
    return gpus


def init_ray(opts: SweepOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # The study database holds every result. Of Tune's own loggers only the JSON one is
    # kept (Tune reads it back at the end); CSV and TensorBoard would write each result
    # again per trial, on the driver's critical path.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune's newer console output ignores verbose=0; the sweep prints its own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    quiet_ray_logs(opts.verbose)  # e.g. the token-authentication warning: --verbose shows it
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.INFO if opts.verbose else logging.ERROR}
    if opts.address:
        ray.init(address=opts.address, **kwargs)
    else:
        # Without --address the sweep is local: start a Ray of its own rather than attach
        # to whichever cluster happens to run on this machine.
        ray.init(address="local", num_cpus=opts.num_cpus, **kwargs)


def check_rungs(opts: SweepOptions) -> SweepOptions:
    """A Pareto sweep with ``asha``: its MO-ASHA rungs, chosen before anything is stored
    (``--rungs``, else the faithful rungs of the study's latest fidelity check; refused
    where neither exists)."""
    if not opts.asha or opts.objective.mode != "pareto":
        return opts
    from search.fidelity import latest_summary
    from search.moasha import RungBook, RungError, choose_rungs
    from search.storage import existing_database, has_study_tables

    summary = None
    engine = existing_database(opts.storage)
    if engine is not None:
        try:
            if has_study_tables(engine, opts.storage):
                summary = latest_summary(engine, opts.study)
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


def mo_asha_scheduler(opts: SweepOptions, study, engine):
    """MO-ASHA over the study's objectives, its rungs rebuilt from the stored epoch rows
    of every finished trial (a resumed driver decides as the stopped one would have)."""
    from optuna.trial import TrialState

    from search.moasha import RungBook, scheduler_class
    from search.storage import read_epochs

    book = RungBook(tuple(opts.rungs or ()), tuple(opts.objective.names),
                    tuple(opts.objective.directions), opts.reduction_factor)
    finished = study.get_trials(deepcopy=False,
                                states=(TrialState.COMPLETE, TrialState.PRUNED))
    book.replay((t.number, row) for t in finished for row in read_epochs(engine, t._trial_id))
    return scheduler_class()(book)


def run_sweep(opts: SweepOptions) -> dict[str, Any]:
    """Run (or continue) a sweep until the study holds ``n_trials`` finished trials.

    Everything that would make every trial fail, or wait forever, is checked before the
    study is created or a trial launched (:class:`PreflightError`); a resumed study with
    another objective, other replicates or other fixed fields (``search.fixed``: another
    budget only with ``change_budget``) is refused. SIGINT/SIGTERM stop it gracefully
    (:class:`SweepInterrupted`).
    """
    if opts.n_trials < 1:  # 0 would create a study and queue its default, to run nothing
        raise ValueError(f"--n-trials must be at least 1 (got {opts.n_trials}): it is the "
                         "study's total of finished trials")
    check_sqlite_folder(opts.storage)  # before Ray starts: nothing to start for a typo
    check_trial_config(opts)
    from search.population import check_population

    check_population(opts.population, asha=opts.asha, replicates=opts.replicates)
    check_task_metric(opts)
    opts = check_rungs(opts)
    # where a parameter acts depends on what every trial keeps fixed (penalty_in_stage3, ..)
    opts = replace(opts, space=opts.space.with_base(opts.base_config))
    fixed = fixed_fields(opts.base_config)
    done_before = peek_study(opts.storage, opts.study, opts.objective,
                             replicates=opts.replicates, fixed=fixed,
                             change_budget=opts.change_budget)
    gpus = 0.0
    if done_before is None or done_before < opts.n_trials:
        init_ray(opts)
        gpus = check_resources(opts)
    opened = open_study(opts.storage, opts.study, opts.objective, sampler=opts.sampler,
                        seed=opts.seed, replicates=opts.replicates, fixed=fixed,
                        change_budget=opts.change_budget)
    study = opened.study
    requeued = recover_orphans(study, opened.storage.engine)
    if opened.moved and not opts.quiet:
        first = budgets(study.user_attrs)[-1]["first_trial"]
        print(f"study {opts.study!r} moved to epochs={opts.space.epochs} from trial {first} "
              "on (--change-budget; recorded: status and the report show the budgets)")
    if opened.created or opened.moved:  # a new budget gets the default as its reference
        base = opts.space.baseline()
        if opts.space.admits(base):
            study.enqueue_trial(base, user_attrs={"baseline": True})
        elif not opts.quiet:
            print("the method's default setting lies outside the space; not enqueued")
    counts = count_finished(study)
    remaining = opts.n_trials - counts["done"]
    if not opts.quiet:
        print(f"study {opts.study!r} in {redact(opts.storage)}: "
              f"{'created' if opened.created else 'resumed'}, {counts['done']} of "
              f"{opts.n_trials} trials done"
              + (f", re-queued {len(requeued)} left running by a stopped driver"
                 if requeued else "")
              + f"; {max(0, remaining)} to run", flush=True)
    t_start = time.perf_counter()
    outcomes: dict[str, int] = {}
    if remaining > 0:
        if done_before is not None and done_before >= opts.n_trials:  # a re-queue since
            init_ray(opts)
            gpus = check_resources(opts)
        outcomes = _run_tune(opts, study, gpus, counts["done"], opened.storage.engine)
    summary = summarize(study, opts.objective)
    summary["requeued"] = requeued
    summary["this_run"] = outcomes
    summary["wall_s"] = time.perf_counter() - t_start
    if not opts.quiet:
        print_summary(summary)
    return summary


class SignalStop:
    """SIGINT/SIGTERM: no new trials, Tune stops the running ones, the driver marks them.

    Tune's own SIGINT handler is switched off: it saves the experiment for
    ``Tuner.restore``, which this project does not use (the study database is the state).
    """

    def __init__(self, searcher) -> None:
        self.searcher = searcher
        self.signum: int | None = None
        self.event = threading.Event()

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            self.searcher.request_stop()
            self.event.set()

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        previous = {sig: signal.signal(sig, self._handle)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stopper(self, experiment: str):
        """A Tune stopper that ends the experiment once a signal came."""
        from search.searcher import SignalStopper

        return SignalStopper.register(experiment, self.event)


def _run_tune(opts: SweepOptions, study, gpus: float, done: int, engine) -> dict[str, int]:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from search.population import searcher_class
    from search.worker import tune_trainable

    experiment = f"{opts.study}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    heartbeat = _Heartbeat(engine, experiment)
    progress = Progress(opts.n_trials, done, opts.objective, study, quiet=opts.quiet)
    searcher = searcher_class(opts.population)(
        study, opts.space, opts.objective,
        base_config=opts.base_config,
        trial_options={"objective": {"mode": opts.objective.mode,
                                     "disentanglement": opts.objective.disentanglement,
                                     "weight": opts.objective.weight,
                                     "task": opts.objective.task},
                       "threads": max(1, int(opts.cpus_per_trial)),
                       "imports": list(opts.imports),
                       OPTION: replicate_option(opts.base_config, opts.replicates,
                                                lodo=opts.lodo)},
        experiment=experiment, engine=engine, on_event=progress,
        total=opts.n_trials, sampler=opts.sampler, seed=opts.seed,
    )
    stop = SignalStop(searcher)
    scheduler = None
    if opts.asha and opts.objective.mode == "pareto":
        scheduler = mo_asha_scheduler(opts, study, engine)
    elif opts.asha:
        # Rungs count epochs since stage 3 began, so none falls before zay is brought in.
        scheduler = ASHAScheduler(time_attr="stage3_epoch", metric=EPOCH_SCORE, mode="max",
                                  max_t=max(1, opts.space.epochs), grace_period=1,
                                  reduction_factor=3)
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": opts.cpus_per_trial, "gpu": gpus}),
        tune_config=tune.TuneConfig(
            # the searcher ends the sweep when the study's total is reached (it counts
            # the database at every ask); this is only an upper bound
            search_alg=searcher, scheduler=scheduler, num_samples=max(1, opts.n_trials),
            # a warm worker per slot: imports (torch, scikit-learn) happen once, not per trial
            max_concurrent_trials=opts.max_concurrent, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(Path(opts.tune_dir).resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=opts.retries),
            callbacks=[JsonLoggerCallback()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            stop=stop.stopper(experiment),
        ),
    )
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    heartbeat.start()
    try:
        with stop.installed():
            tuner.fit()
            if stop.signum is not None:
                stopped = requeue_stopped(study, engine, experiment)
                raise SweepInterrupted(stop.signum, stopped)
    finally:
        from search.searcher import SignalStopper

        SignalStopper.unregister(experiment)
        progress.close()
        heartbeat.stop()
        try:
            end_driver(engine, experiment)
        except Exception as exc:  # the row only delays nothing: a stale row is ignored
            log.warning("could not remove the driver's row: %s",
                        redact(str(exc)).splitlines()[0])
    return dict(searcher.outcomes)


class _Heartbeat:
    """Beats in the study database while a driver runs, so that another driver's resume
    does not take this one's running trials for orphans."""

    def __init__(self, engine, experiment: str) -> None:
        import threading

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

"""The sweep driver: a study in the database, Ray Tune scheduling trials against it."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search._progress import (
    Progress,
    default_work_dir,
    print_summary,
    quiet_ray_logs,
    summarize,
)
from search.objective import EPOCH_SCORE, Objective
from search.space import SearchSpace, baseline_params
from search.storage import redact
from search.study import (
    DRIVER_BEAT_S,
    count_finished,
    open_study,
    recover_orphans,
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
    seeds: int = 1
    imports: tuple[str, ...] = ()
    tune_dir: str = field(default_factory=lambda: str(default_work_dir()))
    quiet: bool = False
    verbose: bool = False  # show Ray's own warnings


def _init_ray(opts: SweepOptions) -> None:
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


def run_sweep(opts: SweepOptions) -> dict[str, Any]:
    """Run (or continue) a sweep until the study holds ``n_trials`` finished trials."""
    if opts.n_trials < 0:
        raise ValueError(f"--n-trials must not be negative (got {opts.n_trials})")
    opened = open_study(opts.storage, opts.study, opts.objective, sampler=opts.sampler,
                        seed=opts.seed)
    study = opened.study
    requeued = recover_orphans(study, opened.storage.engine)
    if opened.created:
        base = baseline_params(opts.space.epochs)
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
    if remaining > 0:
        _run_tune(opts, study, remaining, counts["done"], opened.storage.engine)
    summary = summarize(study, opts.objective)
    summary["requeued"] = requeued
    summary["wall_s"] = time.perf_counter() - t_start
    if not opts.quiet:
        print_summary(summary)
    return summary


def _run_tune(opts: SweepOptions, study, remaining: int, done: int, engine) -> None:
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from search.searcher import StudySearcher
    from search.trainable import tune_trainable

    _init_ray(opts)
    gpus = opts.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    experiment = f"{opts.study}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    heartbeat = _Heartbeat(engine, experiment)
    progress = Progress(opts.n_trials, done, opts.objective, study, quiet=opts.quiet)
    searcher = StudySearcher(
        study, opts.space, opts.objective,
        base_config=opts.base_config,
        trial_options={"objective": {"mode": opts.objective.mode,
                                     "disentanglement": opts.objective.disentanglement,
                                     "weight": opts.objective.weight},
                       "threads": max(1, int(opts.cpus_per_trial)), "seeds": opts.seeds,
                       "imports": list(opts.imports)},
        experiment=experiment, engine=engine, on_event=progress,
    )
    scheduler = None
    if opts.asha:
        # Rungs count epochs since stage 3 began, so none falls before zay is brought in.
        scheduler = ASHAScheduler(time_attr="stage3_epoch", metric=EPOCH_SCORE, mode="max",
                                  max_t=max(1, opts.space.epochs), grace_period=1,
                                  reduction_factor=3)
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": opts.cpus_per_trial, "gpu": gpus}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=remaining,
            # a warm worker per slot: imports (torch, scikit-learn) happen once, not per trial
            max_concurrent_trials=opts.max_concurrent, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(Path(opts.tune_dir).resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=opts.retries),
            callbacks=[JsonLoggerCallback()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    heartbeat.start()
    try:
        tuner.fit()
    finally:
        progress.close()
        heartbeat.stop()


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
        from search.storage import beat

        while not self._stop.is_set():
            try:
                beat(self.engine, self.experiment)
            except Exception as exc:  # a missed beat only risks an early orphan call
                log.warning("driver heartbeat failed: %s", redact(str(exc)).splitlines()[0])
            self._stop.wait(DRIVER_BEAT_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

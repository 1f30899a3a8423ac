"""Starting Ray and running a searcher's trials through Ray Tune: one launcher for the
sweep, the confirmation and the fidelity check.

``init_ray`` starts a local Ray (or joins ``--address``), ``check_resources`` refuses a
per-trial request no node can hold before anything runs, ``SignalStop`` turns
SIGINT/SIGTERM into "no new trials, stop the running ones", and ``launch`` runs a
searcher's trials (with a scheduler, for the sweep's ASHA or MO-ASHA) in one Tune
experiment, every trial through ``search.worker.tune_trainable``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from search.driver.progress import default_work_dir, quiet_ray_logs

__all__ = ["Launch", "PreflightError", "RayOptions", "SignalStop", "check_resources",
           "experiment_name", "init_ray", "launch", "start_workers"]


class RayOptions(Protocol):
    """What starting Ray and checking its resources read (a sweep's, a confirmation's or
    a fidelity check's options)."""

    cpus_per_trial: float
    gpus_per_trial: float | None
    address: str | None
    num_cpus: int | None
    verbose: bool


class PreflightError(ValueError):
    """The sweep cannot run as asked; found before anything is stored or launched."""


def check_resources(opts: RayOptions) -> float:
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


def init_ray(opts: RayOptions) -> None:
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
        from search.driver.searcher import SignalStopper

        return SignalStopper.register(experiment, self.event)


def start_workers(opts: RayOptions) -> float:
    """Start Ray (or join ``--address``) and check that a node can hold a trial; the GPUs
    per trial."""
    init_ray(opts)
    return check_resources(opts)


def experiment_name(name: str) -> str:
    """A Tune experiment's name: ``name``-<time>-<pid> (unique per driver)."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


@dataclass
class Launch:
    """How one Tune experiment runs its trials."""

    experiment: str
    n_samples: int
    cpus: float
    gpus: float
    max_concurrent: int | None
    retries: int
    tune_dir: str
    scheduler: Any = None
    callbacks: Sequence[Any] = ()


def launch(searcher, how: Launch, stop: SignalStop,
           after: Callable[[], None] | None = None) -> None:
    """Run ``searcher``'s trials through Ray Tune (Ray already started) as ``how`` says;
    ``stop`` ends the experiment on SIGINT/SIGTERM, and ``after`` runs once Tune returns,
    with the signal handlers still in place."""
    from ray import tune

    from search.driver.searcher import SignalStopper
    from search.worker import tune_trainable

    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": how.cpus, "gpu": how.gpus}),
        tune_config=tune.TuneConfig(
            # the searcher ends the run when it has nothing more to ask; this is only an
            # upper bound
            search_alg=searcher, scheduler=how.scheduler, num_samples=max(1, how.n_samples),
            # a warm worker per slot: imports (torch, scikit-learn) happen once, not per trial
            max_concurrent_trials=how.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=how.experiment,
            storage_path=str(Path(how.tune_dir or default_work_dir()).resolve()),
            verbose=0, failure_config=tune.FailureConfig(max_failures=how.retries),
            callbacks=list(how.callbacks),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            stop=stop.stopper(how.experiment)),
    )
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        with stop.installed():
            tuner.fit()
            if after is not None:
                after()
    finally:
        SignalStopper.unregister(how.experiment)

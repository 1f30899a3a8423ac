"""The Tune trainable: a plain function that calls ``trainer.fit``.

It runs in a Ray worker, knows nothing of the database, and reports one row per epoch,
then answers with the run's ``search.contract.Outcome``. The last epoch's row travels
inside the outcome (``last_epoch``): a scheduler that stops a trial on the epoch it ends
anyway then stops a finished trial, not a pruned one.

An exception in the trial is deterministic (the same settings fail the same way), so it
is caught here and reported as a failed final result, with its type, message, the last
lines of its traceback and the epoch and stage it happened in; Tune's retries are left
for what the trial cannot report itself: a lost worker process or node.
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
from dataclasses import replace
from typing import Any

from search.contract import Failure, Outcome, Request
from search.objective import EPOCH_SCORE, Objective

#: lines of a failed trial's traceback kept in the study (the innermost frames)
TRACEBACK_LINES = 12


def run_trial(request: Request, report, where: dict[str, Any] | None = None) -> Outcome:
    """Train the one setting of ``request`` once (replicates train as a population:
    ``search.worker.population``); ``report`` gets each epoch's row except the last, which the
    outcome carries (``last_epoch``). ``where`` (if given) is kept up to date with the
    run's phase, epoch and stage."""

    from trainer import RunConfig, apply_flat, fit, stage_of

    where = where if where is not None else {}
    where.update(phase="setup", epoch=None, stage=None)

    objective = trial_setup(request)
    base = RunConfig.from_dict(apply_flat(request.base, request.settings[0].params))
    cfg = base.replace(write_plots=False)
    last_epoch = cfg.optim.epochs - 1
    held: list[dict[str, float]] = []  # the run's last epoch, sent with the final result

    def on_epoch(row: dict[str, float]) -> None:
        row = dict(row)
        epoch = int(row["epoch"])
        ended = epoch >= last_epoch or bool(row.get("stopped_early"))
        where.update(phase="evaluation" if ended else "training", epoch=epoch + (not ended),
                     stage=int(row["stage"]) if ended else stage_of(epoch + 1, cfg))
        row = epoch_result(row, cfg, objective)
        if ended:
            held[:] = [row]
        else:
            report(row)

    t0, c0, started_at = time.perf_counter(), time.thread_time(), time.time()
    where.update(phase="training", epoch=0, stage=stage_of(0, cfg))
    result = fit(cfg, report=on_epoch)
    final = dict(result.final)
    final["fit_seconds"] = time.perf_counter() - t0  # wall time inside trainer.fit
    final["fit_cpu_seconds"] = time.thread_time() - c0  # this thread's CPU time in it
    final["fit_started_at"] = started_at  # unix time, for the sweep's start-up cost
    outcome = final_result(final, cfg, objective, result.history, result.analysis)
    return replace(outcome, last_epoch=held[0]) if held else outcome


def trial_setup(request: Request) -> Objective:
    """A trial's ``--import`` modules and thread count; returns its objective."""
    import torch

    for module in request.imports:
        importlib.import_module(module)
    torch.set_num_threads(max(1, int(request.threads)))
    return Objective(**request.objective)


def epoch_result(row: dict[str, float], cfg, objective: Objective) -> dict[str, float]:
    """An epoch's row as a trial reports it: with the scheduler's clock and score."""
    row = dict(row)
    # epochs since stage 3 began: the scheduler's clock, so that no rung can cut a
    # trial before zay has been brought in
    row["stage3_epoch"] = float(max(0, int(row["epoch"]) - cfg.stage3_start + 1))
    score = objective.epoch_score(row)
    if score is not None:
        row[EPOCH_SCORE] = score
    row["final"] = 0.0
    return row


def final_result(final: dict[str, float], cfg, objective: Objective,
                 history: list[dict[str, float]], analysis: dict[str, Any] | None
                 ) -> Outcome:
    """A finished run's outcome: its final metrics with the scheduler's clock and score,
    its configuration and correlations."""
    final = dict(final)
    final["stage3_epoch"] = float(cfg.optim.epochs - cfg.stage3_start)
    last_score = objective.epoch_score(history[-1]) if history else None
    if last_score is not None:  # a scheduler expects its metric in every result
        final[EPOCH_SCORE] = last_score
    return Outcome(final, config=json.loads(cfg.to_json()),
                   correlations=analysis["correlations"] if analysis else {})


def failure_result(exc: BaseException, where: dict[str, Any]) -> Failure:
    """The final result of a trial that raised: why, and where in the run (the trainer's
    note on an exception from its final evaluation says so, solo or population)."""
    from trainer import EVALUATION

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    epoch, stage, phase = where.get("epoch"), where.get("stage"), where.get("phase")
    if any(EVALUATION in note for note in getattr(exc, "__notes__", ())):
        phase = "evaluation"
    place = (f"epoch {epoch}, stage {stage}" if epoch is not None else phase or "setup")
    if phase == "evaluation":
        place = (f"evaluation after epoch {epoch}" if epoch is not None
                 else "the final evaluation")
    details = {
        "reason": f"{type(exc).__name__}: {message} ({place})" if message
        else f"{type(exc).__name__} ({place})",
        "type": type(exc).__name__, "message": message,
        "traceback": "\n".join(lines[-TRACEBACK_LINES:]),
        "epoch": epoch, "stage": stage, "phase": phase,
    }
    return Failure(details)

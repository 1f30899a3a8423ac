"""Multi-objective asynchronous successive halving at stage-aware rungs (``--asha`` in a
Pareto study).

Optuna's pruners and Ray Tune's ASHA compare one number; a Pareto study has two. This is
MO-ASHA (Schmucker et al., "Multi-objective multi-fidelity hyperparameter optimization
with application to fairness", 2021; Syne Tune's ``MOASHA``): asynchronous successive
halving whose rungs rank the trials that reached them by non-dominated sorting.

- **What a rung compares.** The per-epoch proxy of each of the study's objectives
  (``search.objective.EPOCH_PROXIES``: validation only), as the trial reports it: with
  replicates, the means over its seeds.
- **The decision.** When a trial ends epoch ``r`` of a rung, its point joins every point
  recorded at that rung so far (asynchronous: earlier trials were decided against fewer).
  The points are ranked: feasible ones first (a collapsed zay, ``val_zay_collapsed`` > 0,
  never outranks a live one); then by non-dominated front (the first front is every point
  no other dominates); within a front by crowding distance, largest first (a front's two
  end points have an infinite one: they are kept before any interior point); remaining
  ties by trial number, lower first. The trial continues when its position is among the
  first ``ceil(n / reduction_factor)`` of the ``n`` points; else it stops, PRUNED, its
  epoch rows kept.
- **Where the rungs are.** Only where the proxies mean something: by default the rungs
  that the study's latest fidelity check (``stagetune fidelity``) found to rank like the
  end for every objective (lower 95% bound of Spearman's rho >= 0.7); ``--rungs`` sets
  them. A trial still in stage 1 at a rung (zay gated out) is not compared there: it
  passes the rung without a point.
- **Resumable.** The rungs' points are a function of the stored epoch rows, so a driver
  killed mid-rung and run again rebuilds them from the database (``RungBook.replay``)
  and decides as it would have; ties break by trial number, not arrival, for that reason.

``RungBook`` decides (plain Python, testable without Ray); ``MOASHAScheduler`` is its
Ray Tune face.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from search.objective import COLLAPSED_PROXY as COLLAPSED
from search.objective import proxy_of
from search.pareto import crowding_distance, pareto_ranks

REDUCTION_FACTOR = 3
CONTINUE, STOP = "continue", "stop"


class RungError(ValueError):
    """Rungs that cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class RungPoint:
    """A trial's point at a rung: each objective's proxy signed so that larger is better."""

    number: int
    values: tuple[float, ...]
    feasible: bool


def rank_points(points: Sequence[RungPoint]) -> list[RungPoint]:
    """The points best first: feasible, then front, then crowding (largest first), then
    trial number (lowest first)."""
    key: dict[int, tuple] = {}
    for feasible in (True, False):
        # in trial-number order, so that the crowding of identical points is canonical
        group = sorted((p for p in points if p.feasible == feasible), key=lambda p: p.number)
        if not group:
            continue
        values = np.array([p.values for p in group])
        fronts = pareto_ranks(values, ["maximize"] * values.shape[1])
        for level in set(fronts.tolist()):
            members = np.flatnonzero(fronts == level)
            crowd = crowding_distance(values[members])
            for i, c in zip(members, crowd, strict=True):
                key[group[i].number] = (not feasible, level, -float(c), group[i].number)
    return sorted(points, key=lambda p: key[p.number])


@dataclass
class RungBook:
    """Every trial's point at each rung, and the decision each new point gives.

    Attributes:
        rungs: epochs completed at which trials are compared, ascending.
        objectives: the study's objectives (each with a per-epoch proxy).
        directions: "maximize" or "minimize", per objective.
        reduction_factor: 1 / the share of a rung's points that continue.
    """

    rungs: tuple[int, ...]
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    reduction_factor: float = REDUCTION_FACTOR
    points: dict[int, dict[int, RungPoint]] = field(default_factory=dict)
    decided: dict[tuple[int, int], str] = field(default_factory=dict)  # (rung, trial)

    def __post_init__(self) -> None:
        if self.reduction_factor <= 1:
            raise RungError(f"the reduction factor must exceed 1 (got {self.reduction_factor})")
        if any(r < 1 for r in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise RungError(f"rungs must be distinct positive epochs (got {list(self.rungs)})")
        missing = [o for o in self.objectives if proxy_of(o) is None]
        if missing:
            raise RungError(f"no per-epoch proxy for {', '.join(missing)}")
        self.points = {r: {} for r in self.rungs}

    def point(self, number: int, row: Mapping[str, float]) -> RungPoint | None:
        """A row's point (``None`` where a proxy is missing or not finite)."""
        values = []
        for name, d in zip(self.objectives, self.directions, strict=True):
            v = row.get(proxy_of(name))
            if v is None or not math.isfinite(float(v)):
                return None
            values.append(float(v) if d == "maximize" else -float(v))
        return RungPoint(number, tuple(values), float(row.get(COLLAPSED, 0.0)) <= 0.0)

    def on_row(self, number: int, row: Mapping[str, float]) -> str:
        """The decision for trial ``number``'s epoch row: ``STOP`` only at a rung where it
        ranks below the top ``ceil(n / reduction_factor)``; a row off the rungs, inside
        stage 1 continues; a row already decided gets the same decision again (a population
        retried after a lost worker reaches its rungs a second time)."""
        rung = int(row["epoch"]) + 1
        if rung not in self.points or int(row.get("stage", 3)) <= 1:
            return CONTINUE
        recorded = self.points[rung]
        if number in recorded:
            return self.decided.get((rung, number), CONTINUE)
        p = self.point(number, row)
        if p is None:
            return CONTINUE
        recorded[number] = p
        ranked = rank_points(list(recorded.values()))
        kept = math.ceil(len(ranked) / self.reduction_factor)
        position = next(i for i, q in enumerate(ranked) if q.number == number)
        self.decided[(rung, number)] = CONTINUE if position < kept else STOP
        return self.decided[(rung, number)]

    def replay(self, rows: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        """Record stored rows (``(trial number, row)``) without deciding: what a resumed
        driver knows of the rungs."""
        for number, row in rows:
            rung = int(row["epoch"]) + 1
            if rung in self.points and int(row.get("stage", 3)) > 1:
                p = self.point(number, row)
                if p is not None:
                    self.points[rung].setdefault(number, p)


def faithful_rungs(summary: Mapping | None, objectives: Sequence[str]) -> list[int] | None:
    """The rungs a fidelity check's summary found faithful for every objective; ``None``
    without a summary."""
    if summary is None:
        return None
    by_budget: dict[str, list[bool]] = {}
    for r in summary["records"]:
        if r["objective"] in objectives and r["budget"].startswith("rung"):
            by_budget.setdefault(r["budget"], []).append(bool(r.get("faithful")))
    return sorted(int(b[len("rung"):]) for b, ok in by_budget.items()
                  if len(ok) == len(objectives) and all(ok))


def choose_rungs(given: Sequence[int] | None, summary: Mapping | None,
                 objectives: Sequence[str], epochs: int) -> list[int]:
    """The rungs a sweep uses: ``given`` (``--rungs``), else the fidelity check's faithful
    ones; refused in one line where neither says where a rung would mean something."""
    if given:
        bad = [r for r in given if not 0 < r < epochs]
        if bad:
            raise RungError(f"--rungs must lie inside the {epochs}-epoch budget (got "
                            f"{', '.join(map(str, bad))})")
        return sorted(set(given))
    if summary is not None and int(summary["target_epochs"]) != epochs:
        raise RungError(f"the study's latest fidelity check ({summary['id']}) measured a "
                        f"{summary['target_epochs']}-epoch target, not this sweep's {epochs} "
                        "epochs: run 'stagetune fidelity' at this budget, or give --rungs")
    if summary is not None and not summary["complete"]:
        raise RungError(f"fidelity check {summary['id']} is incomplete: run the same "
                        "'stagetune fidelity' command again to finish it, or give --rungs")
    faithful = faithful_rungs(summary, objectives)
    if faithful is None:
        raise RungError("--asha in a Pareto study needs rungs where the per-epoch proxies "
                        "rank like the end: run 'stagetune fidelity' on this study first, "
                        "or give --rungs")
    if not faithful:
        raise RungError(f"fidelity check {summary['id']} found no rung that ranks like the "
                        f"end for {', '.join(objectives)}; sweep without --asha, or give "
                        "--rungs to stop trials anyway")
    return faithful


def scheduler_class():
    """``MOASHAScheduler``, defined on first use (Ray Tune imported only then)."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class MOASHAScheduler(FIFOScheduler):
        """Ray Tune's face of a ``RungBook``: each epoch row a trial reports is decided
        by the book (the trial's Optuna number: its config's ``optuna_number``)."""

        def __init__(self, book: RungBook) -> None:
            super().__init__()
            self.book = book
            self.stopped = 0

        def on_trial_result(self, tune_controller, trial, result):
            if result.get("final") or "epoch" not in result:
                return TrialScheduler.CONTINUE
            number = int(trial.config.get("optuna_number", -1))
            if self.book.on_row(number, result) == STOP:
                self.stopped += 1
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    return MOASHAScheduler

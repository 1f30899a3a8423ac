"""MO-ASHA: decisions on constructed fronts, its stated tie-break, feasibility, stage 1,
the rungs a fidelity check allows, and a driver that resumes mid-rung from the database."""

from __future__ import annotations

import math

import optuna
import pytest

from search.db import storage as db
from search.driver.moasha import (
    CONTINUE,
    STOP,
    RungBook,
    RungError,
    RungPoint,
    choose_rungs,
    rank_points,
)
from search.pareto import crowding_distance, pareto_ranks

OBJECTIVES = ("task_accuracy", "disentanglement_score")
DIRECTIONS = ("maximize", "maximize")


def _row(acc: float, dis: float, *, epoch: int = 3, stage: int = 3, collapsed: float = 0.0):
    return {"epoch": epoch, "stage": stage, "val_acc_y": acc,
            "val_disentanglement_score": dis, "val_zay_collapsed": collapsed}


def _book(rungs=(4,)) -> RungBook:
    return RungBook(rungs, OBJECTIVES, DIRECTIONS, reduction_factor=3)


DOMINATED = [(0.1, 0.1), (0.2, 0.1), (0.1, 0.2), (0.15, 0.15), (0.05, 0.05)]


def test_fronts_and_crowding_on_known_points():
    pts = [(0.9, 0.9), (0.2, 0.1), (0.1, 0.2), (0.15, 0.15), (0.12, 0.12)]
    assert pareto_ranks(pts, ["maximize"] * 2).tolist() == [0, 1, 1, 1, 2]
    # a front of three: the ends are infinite, the middle one's gaps (0.1 / 0.1 per axis)
    assert crowding_distance([(0.1, 0.2), (0.15, 0.15), (0.2, 0.1)]).tolist() == [
        math.inf, pytest.approx(2.0), math.inf]


def test_a_dominated_trial_stops_at_a_rung_and_a_front_trial_continues():
    book = _book()
    decisions = [book.on_row(i, _row(*v)) for i, v in enumerate(DOMINATED)]
    # ceil(n / 3) places: trial 0 is alone; 1 dominates 0 (n 2, keep 1); 2 ties 1 on the
    # front and loses on number (n 3, keep 1); 3 is the front's interior point, behind the
    # ends 1 and 2 (n 4, keep 2); 4 is dominated by all (n 5, keep 2)
    assert decisions == [CONTINUE, CONTINUE, STOP, STOP, STOP]
    assert book.on_row(5, _row(0.9, 0.9)) == CONTINUE  # dominates every point: first
    # 7 points keep 3: trial 5, then the ends of the second front (1 and 2); 6 lies below
    assert book.on_row(6, _row(0.12, 0.12)) == STOP
    # a point off the rung's epoch is not compared at all
    assert book.on_row(7, _row(0.0, 0.0, epoch=1)) == CONTINUE
    assert 7 not in book.points[4]


def test_ties_break_by_crowding_then_trial_number():
    # two front points, both ends (infinite crowding): the lower trial number ranks first
    ranked = rank_points([RungPoint(7, (0.9, 0.1), True), RungPoint(3, (0.1, 0.9), True)])
    assert [p.number for p in ranked] == [3, 7]
    # three front points: both ends before the interior one, whatever their numbers
    ranked = rank_points([RungPoint(1, (0.5, 0.5), True), RungPoint(8, (0.9, 0.1), True),
                          RungPoint(9, (0.1, 0.9), True)])
    assert [p.number for p in ranked] == [8, 9, 1]
    # identical points: one front, tied everywhere but the number
    same = rank_points([RungPoint(4, (0.5, 0.5), True), RungPoint(2, (0.5, 0.5), True)])
    assert [p.number for p in same] == [2, 4]


def test_a_collapsed_zay_never_outranks_a_live_one():
    book = _book()
    assert book.on_row(0, _row(0.2, 0.2)) == CONTINUE
    assert book.on_row(1, _row(0.3, 0.3)) == CONTINUE  # dominates trial 0: ranks first
    # the best values of all, but zay collapsed: last of 3, and 3 keep 1
    assert book.on_row(2, _row(0.99, 0.99, collapsed=1.0)) == STOP


def test_a_trial_still_in_stage_1_passes_the_rung_without_a_point():
    book = _book()
    for i, v in enumerate(DOMINATED):
        book.on_row(i, _row(*v))
    assert book.on_row(9, _row(0.0, 0.0, stage=1)) == CONTINUE
    assert 9 not in book.points[4]


def test_a_minimised_objective_is_ranked_the_other_way():
    book = RungBook((4,), ("task_accuracy", "zay_label_leakage"), ("maximize", "minimize"))
    row = {"epoch": 3, "stage": 3, "val_acc_y": 0.5}
    assert book.on_row(0, {**row, "val_zay_label_leakage": 0.1}) == CONTINUE
    # same accuracy, more leakage: dominated; 2 points keep 1
    assert book.on_row(1, {**row, "val_zay_label_leakage": 0.4}) == STOP


def test_rungs_come_from_the_fidelity_checks_faithful_ones_or_are_refused():
    def record(budget, objective, faithful):
        return {"budget": budget, "objective": objective, "faithful": faithful}

    summary = {"id": 2, "target_epochs": 60, "complete": True, "records": [
        record("e6", "task_accuracy", True), record("e6", "disentanglement_score", True),
        record("rung20", "task_accuracy", True), record("rung20", "disentanglement_score",
                                                        False),
        record("rung50", "task_accuracy", True), record("rung50", "disentanglement_score",
                                                        True)]}
    assert choose_rungs(None, summary, OBJECTIVES, 60) == [50]  # schedules are not rungs
    assert choose_rungs([40, 20], summary, OBJECTIVES, 60) == [20, 40]  # --rungs wins
    with pytest.raises(RungError, match="run 'stagetune fidelity'"):
        choose_rungs(None, None, OBJECTIVES, 60)
    with pytest.raises(RungError, match="found no rung"):
        choose_rungs(None, {**summary, "id": 3, "records": summary["records"][:4]},
                     OBJECTIVES, 60)
    with pytest.raises(RungError, match="inside the 60-epoch budget"):
        choose_rungs([60], None, OBJECTIVES, 60)
    # a check of another budget, or one not finished, says nothing about this sweep's rungs
    complete = {**summary, "target_epochs": 60, "complete": True}
    assert choose_rungs(None, complete, OBJECTIVES, 60) == [50]
    with pytest.raises(RungError, match="60-epoch target, not this sweep's 30"):
        choose_rungs(None, complete, OBJECTIVES, 30)
    with pytest.raises(RungError, match="incomplete"):
        choose_rungs(None, {**complete, "complete": False}, OBJECTIVES, 60)


def test_a_driver_resumed_mid_rung_rebuilds_the_rung_from_the_database(tmp_path):
    """Trials 0-5 reached rung 4 before the driver was killed (their rows are stored; the
    dominated ones were pruned there). The resumed driver's book, built from the database
    alone, decides trial 6 as the uninterrupted book does."""
    from search.db.study import open_storage
    from search.driver.sweep import SweepOptions, mo_asha_scheduler
    from search.objective import Objective
    from search.space import SearchSpace

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage,
                                directions=["maximize", "maximize"])
    uninterrupted = _book()
    for number, values in enumerate([*DOMINATED, (0.9, 0.9)]):
        decision = uninterrupted.on_row(number, _row(*values))
        trial = study.ask()
        for epoch in range(4):  # every row up to the rung is kept, pruned or not
            db.write_epoch(storage.engine, trial._trial_id, epoch, 3,
                           _row(*values, epoch=epoch))
        if decision == STOP:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [values[0], values[1]])
    opts = SweepOptions(storage=url, study="s", objective=Objective(
        disentanglement="disentanglement_score"), space=SearchSpace(epochs=8), asha=True,
        rungs=(4,))
    scheduler = mo_asha_scheduler(opts, study, storage.engine)
    assert set(scheduler.book.points[4]) == set(range(6))
    for values in ((0.12, 0.12), (0.95, 0.95)):
        resumed = scheduler.book.on_row(6, _row(*values))
        assert resumed == uninterrupted.on_row(6, _row(*values))
        scheduler.book.points[4].pop(6)
        uninterrupted.points[4].pop(6)


def test_a_pareto_sweep_with_asha_and_no_fidelity_check_is_refused_before_anything_is_stored(
        tmp_path):
    from search.driver.sweep import PreflightError, run_sweep
    from search.objective import Objective
    from tests.search.conftest import tiny_options

    url = f"sqlite:///{tmp_path / 'r.db'}"
    opts = tiny_options(url, "r", 4, tmp_path, asha=True)
    opts.objective = Objective()
    with pytest.raises(PreflightError, match="run 'stagetune fidelity' on this study first"):
        run_sweep(opts)
    assert not (tmp_path / "r.db").exists()

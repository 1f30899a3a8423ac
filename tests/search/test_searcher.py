"""The searcher driven with the result dicts Tune hands it (no Ray needed)."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState

from search.contract import Outcome
from search.db.storage import read_epochs
from search.db.study import count_finished, open_study, recover_orphans
from search.driver.searcher import StudySearcher
from search.objective import Objective
from search.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.ERROR)
METRICS = {"task_accuracy": 0.9, "zay_independence_score": 0.95, "zay_collapsed": 0.0,
           "epoch": 5.0, "stage": 3.0}
FINAL = Outcome(METRICS, config={}).encode()  # a trial's final result, as a worker sends it


@pytest.fixture
def searcher(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    opened = open_study(url, "s", Objective(), sampler="random", seed=0)
    events = []
    s = StudySearcher(opened.study, SearchSpace(epochs=6, stage1_epochs=(0, 6),
                                                stage2_epochs=(0, 6)),
                      Objective(), base_config={}, trial_options={}, experiment="e",
                      engine=opened.storage.engine,
                      on_event=lambda kind, info: events.append(kind))
    s.events = events
    s.url = url
    return s


def _state(searcher, number):
    return searcher.study.get_trials(deepcopy=False)[number].state


def test_complete_trial_is_told_with_values_attrs_and_curves(searcher):
    cfg = searcher.suggest("t1")
    assert cfg["optuna_number"] == 0
    for e in range(2):
        searcher.on_trial_result("t1", {"epoch": float(e), "stage": 1.0, "val_acc_y": 0.5,
                                        "training_iteration": e + 1, "final": 0.0})
    searcher.on_trial_complete("t1", FINAL)
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.COMPLETE and t.values == [0.9, 0.95]
    assert t.user_attrs["tune_trial_id"] == "t1" and t.user_attrs["feasible"] is True
    assert t.user_attrs["zay_independence_score"] == 0.95
    rows = read_epochs(searcher._engine, t._trial_id)
    assert [r["epoch"] for r in rows] == [0.0, 1.0]
    assert "training_iteration" not in rows[0]


def test_scheduler_stopped_trial_is_pruned_not_complete(searcher):
    searcher.suggest("t1")
    last = {"epoch": 3.0, "stage": 3.0, "val_acc_y": 0.4, "final": 0.0}
    searcher.on_trial_result("t1", last)
    searcher.on_trial_complete("t1", last)  # what Tune passes after ASHA stops a trial
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.PRUNED and t.values is None
    assert t.user_attrs["epochs_run"] == 4.0


def test_failed_and_collapsed_trials(searcher):
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", None, error=True)
    searcher.on_trial_complete("b", FINAL | {"zay_collapsed": 1.0})
    a, b = searcher.study.get_trials()
    assert a.state == TrialState.FAIL
    assert b.state == TrialState.COMPLETE and b.user_attrs["feasible"] is False
    assert b.constraints == {"zay_collapsed": 0.5}  # > 0: infeasible for Optuna


def test_a_trial_is_told_exactly_once(searcher):
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", FINAL)
    searcher.on_trial_complete("t1", FINAL)  # Tune may call again for a retried trial
    assert len(searcher.study.get_trials()) == 1
    assert searcher.events.count("complete") == 1


def test_pickled_searcher_holds_no_database_handle(searcher):
    url = searcher.__dict__.pop("url")  # the fixture's note, not the searcher's state
    searcher.__dict__.pop("events")
    blob = pickle.dumps(searcher)
    assert url.split("///")[1].encode() not in blob
    clone = pickle.loads(blob)
    assert clone.study is None


def test_orphans_are_failed_and_requeued(searcher):
    searcher.suggest("dies")  # asked, never told: a driver that died mid-trial
    params = dict(searcher.study.get_trials()[0].params)
    requeued = recover_orphans(searcher.study)
    assert requeued == [0]
    trials = searcher.study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.WAITING
    counts = count_finished(searcher.study)
    assert counts["orphaned"] == 1 and counts["done"] == 0
    cfg = searcher.suggest("again")
    assert cfg["optuna_number"] == 1
    assert {k: v for k, v in cfg["params"].items() if k in params} == params


def test_running_trials_of_a_live_driver_are_not_orphans(searcher):
    import time

    from search.db.storage import beat, drivers

    searcher.suggest("live")  # experiment "e", whose driver is still beating
    beat(searcher._engine, "e")
    assert recover_orphans(searcher.study, searcher._engine) == []
    assert _state(searcher, 0) == TrialState.RUNNING
    with searcher._engine.begin() as conn:  # the driver went quiet long ago
        conn.execute(drivers.update().values(heartbeat_at=time.time() - 3600))
    assert recover_orphans(searcher.study, searcher._engine) == [0]
    assert _state(searcher, 0) == TrialState.FAIL


def test_a_crashed_driver_on_this_host_is_seen_at_once(searcher):
    import subprocess
    import sys

    from search.db.storage import beat

    searcher.suggest("t")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    beat(searcher._engine, "e", pid=int(dead.stdout))  # fresh beat, but no such process
    assert recover_orphans(searcher.study, searcher._engine) == [0]


def assert_a_setting_of_trial(cfg, study, number: int) -> None:
    """``suggest`` gave a setting (not ``FINISHED``): Optuna trial ``number``'s own
    sample, within the 6-epoch budget of the searchers here."""
    assert isinstance(cfg, dict), cfg
    trial = study.get_trials(deepcopy=False)[number]
    assert cfg["optuna_number"] == trial.number == number
    assert trial.params.items() <= cfg["params"].items()
    stages = cfg["params"]["stage1_epochs"] + cfg["params"]["stage2_epochs"]
    assert 0 <= cfg["params"]["stage1_epochs"] <= stages <= 6


def test_nsga2_evolves_within_a_sweep_shorter_than_its_default_generation(tmp_path):
    """A 16-trial NSGA-II sweep breeds from generation 0 instead of sampling at random.

    Optuna's default generation (50 trials) is drawn at random, so a shorter sweep would be
    random search; sized from the study's total, 16 trials make generations of 4.
    """
    from search.db.study import nsga2_population_size

    assert nsga2_population_size(16) == 4 and nsga2_population_size(400) == 50
    url = f"sqlite:///{tmp_path / 'n.db'}"
    opened = open_study(url, "n", Objective(), sampler="nsga2", seed=0)
    s = StudySearcher(opened.study, SearchSpace(epochs=6, stage1_epochs=(0, 6),
                                                stage2_epochs=(0, 6)),
                      Objective(), base_config={}, trial_options={}, experiment="e",
                      engine=opened.storage.engine, total=16, sampler="nsga2", seed=0)
    for i in range(16):
        cfg = s.suggest(f"t{i}")
        assert_a_setting_of_trial(cfg, opened.study, i)
        # a front to evolve on: accuracy rises with stage 1, independence falls with it
        s1 = cfg["params"]["stage1_epochs"]
        s.on_trial_complete(f"t{i}", {**FINAL, "task_accuracy": 0.5 + 0.05 * s1,
                                      "zay_independence_score": 1.0 - 0.04 * s1})
    assert s.suggest("t16") == s.FINISHED  # the total holds
    generations = [t.system_attrs.get("NSGAIISampler:generation")
                   for t in opened.study.get_trials(deepcopy=False)]
    assert generations[:4] == [0, 0, 0, 0]
    assert max(g for g in generations if g is not None) >= 3


# -- --sampler gp: Optuna's GPSampler -------------------------------------------------------


def _gp_sweep(url: str, n: int, *, seed: int = 0, sampler: str = "gp", start: int = 0,
              total: int | None = None) -> list[dict]:
    """``n`` trials of a searcher with ``sampler`` on study "g" in ``url`` (made or
    reopened); every third trial has a collapsed zay (infeasible). The params it asked."""
    opened = open_study(url, "g", Objective(), sampler=sampler, seed=seed)
    space = SearchSpace(epochs=6, stage1_epochs=(0, 6), stage2_epochs=(0, 6),
                        zay_suppression=("gate", "kl_weight"))  # a categorical with 2 values
    s = StudySearcher(opened.study, space, Objective(), base_config={}, trial_options={},
                      experiment="e", engine=opened.storage.engine, total=total,
                      sampler=sampler, seed=seed)
    asked = []
    for i in range(start, start + n):
        cfg = s.suggest(f"t{i}")
        assert_a_setting_of_trial(cfg, opened.study, i)
        p = cfg["params"]
        asked.append(p)
        s1 = p["stage1_epochs"]
        s.on_trial_complete(f"t{i}", {**FINAL, "task_accuracy": 0.5 + 0.05 * s1,
                                      "zay_independence_score": 1.0 - 0.04 * s1,
                                      "zay_collapsed": float(i % 3 == 2)})
    return asked


def test_the_gp_sampler_is_optunas_seeded_and_listed():
    from search.cli import build_parser
    from search.db.study import GP_STARTUP_TRIALS, SAMPLERS, make_sampler

    sampler = make_sampler("gp", 7)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    assert sampler._n_startup_trials == GP_STARTUP_TRIALS
    run = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    choices = next(a for a in run._actions if a.dest == "sampler").choices
    assert list(choices) == list(SAMPLERS) and "gp" in SAMPLERS
    # the search extra brings greenlet, so the GP maximises its acquisition from all its
    # starting points as one batch instead of warning and running them one by one
    from optuna._gp import batched_lbfgsb

    assert batched_lbfgsb._greenlet_imports.is_successful()


def test_gp_fits_its_model_with_the_collapse_constraint_and_repeats_by_seed(tmp_path):
    n = 7  # 5 random start-up trials, then 2 from the GP's acquisition
    first = _gp_sweep(f"sqlite:///{tmp_path / 'a.db'}", n)
    again = _gp_sweep(f"sqlite:///{tmp_path / 'b.db'}", n)
    other = _gp_sweep(f"sqlite:///{tmp_path / 'c.db'}", 2, seed=1)
    assert first == again  # same seed, same suggestions, the GP's included
    assert first[:2] != other
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'a.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n
    # each trial carries the constraint the GP reads: > 0 (infeasible) where zay collapsed
    assert [t.constraints["zay_collapsed"] > 0 for t in trials] == [
        i % 3 == 2 for i in range(n)]
    # after the start-up trials the GP proposed (its relative sample is stored on the trial)
    by_gp = ["gp:relative_params:0" in t.system_attrs for t in trials]
    assert by_gp == [False] * 5 + [True] * 2


def test_a_gp_study_resumes_and_another_samplers_study_continues_with_gp(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _gp_sweep(url, 6, total=9)
    _gp_sweep(url, 3, start=6, total=9)  # reopened with the same sampler: goes on
    study = optuna.load_study(study_name="g", storage=url)
    assert [t.number for t in study.get_trials()] == list(range(9))
    assert "gp:relative_params:0" in study.trials[-1].system_attrs
    other = f"sqlite:///{tmp_path / 't.db'}"
    _gp_sweep(other, 5, sampler="tpe")
    _gp_sweep(other, 2, start=5)
    assert "gp:relative_params:0" in optuna.load_study(
        study_name="g", storage=other).trials[-1].system_attrs

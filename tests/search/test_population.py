"""Population sweeps: K Optuna trials per Ray trial, each stored as a solo trial would be."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.db.storage import read_epochs
from search.driver.sweep import run_sweep
from tests.search.conftest import tiny_options


def test_population_sweep_stores_fully_formed_trials(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    summary = run_sweep(tiny_options(url, "pop", 8, tmp_path, population=4))
    assert summary["counts"]["complete"] == 8
    study = optuna.load_study(study_name="pop", storage=url)
    assert len(study.trials) == 8
    # two Ray trials of four members each
    by_ray_trial = Counter(t.user_attrs["tune_trial_id"] for t in study.trials)
    assert sorted(by_ray_trial.values()) == [4, 4]
    engine = sa.create_engine(url)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)] == [0, 1, 2, 3]
        assert len(t.values) == 2 and "zay_independence_score" in t.user_attrs
        cfg = t.user_attrs["config"]  # the member's own settings, not a neighbour's
        assert cfg["stages"]["stage1_epochs"] == t.params.get("stage1_epochs", 1)
        assert t.user_attrs["population_size"] == 4.0
        if "use_independence_penalty" not in t.params:  # acts in no epoch: not drawn
            assert cfg["stages"]["stage2_epochs"] == 0
            continue
        on = t.params["use_independence_penalty"]
        assert cfg["stages"]["use_independence_penalty"] == on
        if on:
            assert cfg["stages"]["independence_penalty"] == t.params["independence_penalty"]
    engine.dispose()
    assert {t.user_attrs["population_member"] for t in study.trials} == {0, 1, 2, 3}
    # the total holds across drivers: asking for 10 runs one population of two
    summary = run_sweep(tiny_options(url, "pop", 10, tmp_path, population=4))
    assert summary["counts"]["complete"] == 10
    last = [t for t in optuna.load_study(study_name="pop", storage=url).trials[8:]]
    assert len({t.user_attrs["tune_trial_id"] for t in last}) == 1


def test_scalar_asha_with_population_is_refused_before_anything_is_stored(tmp_path):
    from search.objective import Objective

    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ValueError, match="--asha in a scalar study cannot be combined"):
        run_sweep(tiny_options(url, "x", 4, tmp_path, population=4, asha=True,
                               objective=Objective(mode="scalar")))
    assert not (tmp_path / "study.db").exists()


def _population_searcher(tmp_path, size: int, total: int | None = None):
    from search.db.study import open_study
    from search.driver.population import PopulationSearcher
    from search.objective import Objective
    from search.space import SearchSpace

    url = f"sqlite:///{tmp_path / 's.db'}"
    opened = open_study(url, "s", Objective(), sampler="random", seed=0)
    return PopulationSearcher(opened.study, SearchSpace(epochs=6, stage1_epochs=(0, 6),
                                                        stage2_epochs=(0, 6)),
                              Objective(), base_config={}, trial_options={}, experiment="e",
                              engine=opened.storage.engine, size=size, total=total)


FINAL = {"task_accuracy": 0.9, "zay_independence_score": 0.95, "zay_collapsed": 0.0,
         "epoch": 5.0, "stage": 3.0}


def test_each_member_is_told_on_its_own(tmp_path):
    from search.contract import Outcome, population_final
    from search.worker.solo import failure_result
    from trainer import DivergenceError

    s = _population_searcher(tmp_path, size=3, total=5)
    cfg = s.suggest("ray1")
    assert [m["optuna_number"] for m in cfg["members"]] == [0, 1, 2]
    for k in range(3):  # member k's rows go to member k's trial only
        s.on_trial_result("ray1", {"epoch": 0.0, "stage": 1.0, "member": float(k),
                                   "val_acc_y": 0.1 * k, "final": 0.0})
    members = [Outcome(FINAL | {"task_accuracy": 0.5}, config={}),
               failure_result(DivergenceError("training diverged: 3/3 batches"),
                              {"phase": "training"}),
               Outcome(FINAL, config={})]
    s.on_trial_complete("ray1", population_final(members, 3))
    t = s.study.get_trials()
    assert [x.state for x in t] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert t[0].values == [0.5, 0.95] and t[2].values == [0.9, 0.95]
    assert t[1].user_attrs["fail_reason"].startswith("DivergenceError: training diverged")
    engine = s._engine
    assert [read_epochs(engine, x._trial_id)[0]["val_acc_y"] for x in t] == [0.0, 0.1, 0.2]
    assert "member" not in read_epochs(engine, t[1]._trial_id)[0]
    # the study's total (5) leaves room for a population of two, then none
    assert len(s.suggest("ray2")["members"]) == 2
    assert s.suggest("ray3") == "FINISHED"


def test_a_lost_or_stopped_population_leaves_each_member_to_recover(tmp_path):
    s = _population_searcher(tmp_path, size=2)
    s.suggest("lost")
    s.on_trial_complete("lost", None, error=True)  # the worker died on every retry
    s.suggest("cut")
    s.request_stop()
    s.on_trial_complete("cut", {"epoch": 1.0, "stage": 1.0, "member": 0.0})
    states = [t.state for t in s.study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    assert sorted(s.left_running) == [2, 3]  # the driver re-queues them one by one


@pytest.fixture
def one_thread():
    """One torch thread, as a sweep's trial has (tests/trainer/conftest.py's fixture):
    tiny models gain nothing from two, and two oversubscribe a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_a_failing_group_fails_only_its_own_members():
    """Settings that cannot share a model train as separate groups, one after another; a
    group that raises fails its own members and leaves the others' results intact."""
    from search.contract import Failure, Request
    from search.worker.population import run_population
    from tests.search.conftest import TINY_TRIAL
    from trainer import RunConfig

    base = RunConfig().replace(**{**TINY_TRIAL, "epochs": 2}).to_dict()
    members = [{"params": {"stage1_epochs": 1, "stage2_epochs": 0}},
               {"params": {"stage1_epochs": 0, "stage2_epochs": 1, "dataset": "nosuch"}},
               {"params": {"stage1_epochs": 0, "stage2_epochs": 0}}]
    config = {"base": base, "members": members,
              "objective": {"mode": "pareto", "disentanglement": "zay_independence_score"}}
    results = run_population(Request.from_config(config), lambda row: None)
    assert [isinstance(r, Failure) for r in results] == [False, True, False]
    failure = results[1].details
    assert failure["type"] == "ConfigError" and "unknown dataset 'nosuch'" in failure["reason"]
    # intact: members 0 and 2 get what their own population, trained without member 1,
    # gives them, bit for bit (same configs, same seed, same process)
    from trainer import fit_population
    from trainer._config import apply_flat

    alone = fit_population([RunConfig.from_dict(apply_flat(base, members[k]["params"]))
                            .replace(write_plots=False) for k in (0, 2)])
    for k, own in zip((0, 2), alone, strict=True):
        assert {key: results[k].metrics[key] for key in own.final} == own.final, k
        assert results[k].metrics["task_accuracy"] == own.final["acc_y_val"]
        assert results[k].metrics["population_size"] == 2.0


@pytest.mark.usefixtures("one_thread")
def test_a_failure_in_the_population_evaluation_is_reported_as_the_evaluation(monkeypatch):
    """As a solo trial says: a population whose final evaluation raises fails each member
    with "evaluation after epoch N", not with the last training epoch and stage."""
    from search.contract import Request
    from search.worker.population import run_population
    from tests.search.conftest import TINY_TRIAL
    from trainer import RunConfig

    def broken(inputs):
        raise RuntimeError("probe solver failed")

    monkeypatch.setattr("trainer.metrics.fit_probes", broken)
    base = RunConfig().replace(**{**TINY_TRIAL, "epochs": 2}).to_dict()
    members = [{"params": {"stage1_epochs": 1, "stage2_epochs": 0}},
               {"params": {"stage1_epochs": 0, "stage2_epochs": 0}}]
    config = {"base": base, "members": members,
              "objective": {"mode": "pareto", "disentanglement": "zay_independence_score"}}
    for result in run_population(Request.from_config(config), lambda row: None):
        failure = result.details
        assert failure["reason"] == ("RuntimeError: probe solver failed "
                                     "(evaluation after epoch 1)")
        assert failure["phase"] == "evaluation"

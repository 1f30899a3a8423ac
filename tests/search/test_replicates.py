"""Replicates: every setting trained with the same R seeds, side by side, and told as the
means with their spread."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.driver import run_sweep
from search.objective import Objective
from search.population import run_population_config
from search.replicates import Replicates, combine, mean_rows, trial_option
from search.storage import read_epochs
from search.study import StudyError
from tests.search.conftest import TINY_TRIAL, tiny_options
from trainer import RunConfig

OBJECTIVE = Objective(mode="pareto", disentanglement="disentanglement_score")


def test_combine_gives_the_mean_the_spread_and_every_seed():
    finals = [{"task_accuracy": 0.5, "disentanglement_score": 0.2, "zay_collapsed": 0.0,
               "other": 1.0},
              {"task_accuracy": 0.7, "disentanglement_score": 0.4, "zay_collapsed": 1.0,
               "other": 3.0},
              {"task_accuracy": 0.6, "disentanglement_score": 0.9, "zay_collapsed": 0.0,
               "other": 5.0}]
    out = combine(finals, [(3, None), (4, None), (5, None)], OBJECTIVE)
    assert out["task_accuracy"] == pytest.approx(0.6)
    assert out["other"] == pytest.approx(3.0)
    # sd with n - 1: accuracy deviations ±0.1, 0 -> sqrt(0.02 / 2) = 0.1
    assert out["task_accuracy_sd"] == pytest.approx(0.1)
    assert out["task_accuracy_se"] == pytest.approx(0.1 / math.sqrt(3))
    # 0.2, 0.4, 0.9: mean 0.5, squared deviations 0.09 + 0.01 + 0.16 = 0.26
    assert out["disentanglement_score_sd"] == pytest.approx(math.sqrt(0.13))
    assert out["zay_collapsed"] == 1.0  # collapsed in any seed is collapsed
    assert json.loads(out["replicate_seeds_json"]) == [3, 4, 5]
    assert json.loads(out["replicate_values_json"])["disentanglement_score"] == [0.2, 0.4, 0.9]
    assert out["replicates"] == 3.0
    assert "acc_y_test_domain_se" not in out  # no test domain, no spread of it
    for f, held in zip(finals, (0.2, 0.3, 0.1), strict=True):
        f["acc_y_test_domain"] = held
    out = combine(finals, [(3, None), (4, None), (5, None)], OBJECTIVE)
    # the test domain is reported with its spread (deviations 0, ±0.1: sd 0.1)
    assert out["acc_y_test_domain"] == pytest.approx(0.2)
    assert out["acc_y_test_domain_se"] == pytest.approx(0.1 / math.sqrt(3))


def test_rows_average_per_epoch_and_the_last_one_is_held_for_the_final_result():
    cfg = RunConfig().replace(**TINY_TRIAL)  # 4 epochs
    agg = Replicates([cfg, cfg], owner=[0, 0, 1, 1], objective=OBJECTIVE)
    row = {"epoch": 2.0, "stage": 3.0, "val_acc_y": 0.5, "val_disentanglement_score": 0.1}
    out = agg.add({0: row, 1: {**row, "val_acc_y": 0.7}, 2: row, 3: row})
    assert [k for k, _ in out] == [0, 1]
    assert out[0][1]["val_acc_y"] == pytest.approx(0.6)
    assert out[0][1]["replicates"] == 2.0 and out[0][1]["epoch"] == 2.0
    # epoch 3 is the last: both settings end and their rows are held, not reported
    last = {**row, "epoch": 3.0}
    assert agg.add({0: last, 1: last, 2: last, 3: {**last, "val_acc_y": 0.9}}) == []
    assert agg.held[1]["val_acc_y"] == pytest.approx(0.7)
    assert mean_rows([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "replicates": 2.0}


def test_every_setting_gets_the_same_seeds_so_identical_settings_agree_seed_by_seed():
    base = RunConfig().replace(**TINY_TRIAL).to_dict()
    same = {"stage1_epochs": 1, "stage2_epochs": 1, "use_independence_penalty": True,
            "independence_penalty": 10.0}
    config = {"base": base, "members": [{"params": same}, {"params": dict(same)},
                                        {"params": {**same, "use_independence_penalty": False}}],
              "objective": {"mode": "pareto", "disentanglement": "disentanglement_score",
                            "weight": 0.5},
              "threads": 1, "imports": [], "replicates": trial_option(7, 7, 2)}
    rows = []
    out = run_population_config(config, rows.append)
    assert out["population"] == 6.0  # 3 settings x 2 seeds, one vectorised model
    finals = json.loads(out["members_json"])
    a, b, off = (json.loads(f["replicate_values_json"]) for f in finals)
    for f in finals:
        assert json.loads(f["replicate_seeds_json"]) == [7, 8]
        assert json.loads(f["config_json"])["data"]["split_seed"] == 7
    # the same setting on the same seed is the same model: paired differences are 0
    assert a == b
    # the seeds differ, so do their results; the penalty differs from the penalty on
    assert a["task_accuracy"][0] != a["task_accuracy"][1] or \
        a["disentanglement_score"][0] != a["disentanglement_score"][1]
    assert a != off
    for name in ("task_accuracy", "disentanglement_score"):
        assert finals[0][name] == pytest.approx(sum(a[name]) / 2)
    # every epoch row is an average of two replicates, and each setting's is reported
    assert {r["replicates"] for r in rows} == {2.0}
    assert sorted({int(r["member"]) for r in rows}) == [0, 1, 2]
    assert all("last_epoch_json" in f for f in finals)


@pytest.mark.slow  # a Ray sweep of two populations (~50 s); pairing is checked above
def test_a_sweep_with_replicates_and_a_population_stores_means_seeds_and_errors(
        tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    summary = run_sweep(tiny_options(url, "rep", 4, tmp_path, population=2, replicates=2))
    assert summary["counts"]["complete"] == 4
    study = optuna.load_study(study_name="rep", storage=url)
    # two Ray trials, each a population of 2 settings x 2 seeds
    assert sorted(set(t.user_attrs["population_size"] for t in study.trials)) == [4.0]
    engine = sa.create_engine(url)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["replicate_seeds"] == [0, 1]
        per_seed = t.user_attrs["replicate_values"]
        for name, value in zip(Objective().names, t.values, strict=True):
            assert value == pytest.approx(sum(per_seed[name]) / 2)
            spread = abs(per_seed[name][0] - per_seed[name][1])
            # two seeds: sd = |a - b| / √2, se = sd / √2 = |a - b| / 2
            assert t.user_attrs[f"{name}_se"] == pytest.approx(spread / 2)
        rows = read_epochs(engine, t._trial_id)
        assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
        assert {r["replicates"] for r in rows} == {2.0}
    engine.dispose()
    # resuming with another number of replicates would mix means of 2 and 3 seeds
    with pytest.raises(StudyError, match="--replicates 2"):
        run_sweep(tiny_options(url, "rep", 6, tmp_path, population=2, replicates=3))


@pytest.mark.slow  # a second Ray sweep (~50 s); the population sweep above runs in every suite
def test_solo_trials_train_their_replicates_side_by_side_under_asha(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "solo", 2, tmp_path, replicates=2, asha=True)
    opts.objective = Objective(mode="scalar")
    summary = run_sweep(opts)
    study = optuna.load_study(study_name="solo", storage=url)
    engine = sa.create_engine(url)
    told = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(told) == 2 and summary["counts"]["failed"] == 0
    for t in told:
        rows = read_epochs(engine, t._trial_id)
        assert rows and {r["replicates"] for r in rows} == {2.0}
        assert "member" not in rows[0]
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["replicate_seeds"] == [0, 1]
    engine.dispose()

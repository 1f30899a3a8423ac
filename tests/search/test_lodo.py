"""Leave-one-domain-out sweeps and the chosen task objective."""

from __future__ import annotations

import math

import pytest

from search.contract import Outcome, Request, Setting, read_final
from search.driver.sweep import PreflightError, run_sweep
from search.objective import Objective
from search.worker import answer
from search.worker.replicates import combine, lodo_folds, replication
from tests.search.conftest import TINY_TRIAL, tiny_options
from trainer import RunConfig

LODO = Objective(mode="pareto", disentanglement="disentanglement_score", task="lodo_accuracy")


def test_the_folds_are_every_domain_but_the_test_domain():
    assert lodo_folds(6, None, None) == [0, 1, 2, 3, 4, 5]
    assert lodo_folds(6, 2, None) == [0, 1, 3, 4, 5]
    with pytest.raises(ValueError, match="leave the base configuration's val_domain unset"):
        lodo_folds(6, None, 1)
    with pytest.raises(ValueError, match="at least two training domains"):
        lodo_folds(2, 0, None)
    assert replication(0, 0, 2, [1, 3]).runs() == [(0, 1), (1, 1), (0, 3), (1, 3)]


def test_folds_average_per_seed_and_each_domain_over_seeds():
    # seeds 0 and 1, folds 0..2; held-out accuracy = 0.5 + 0.1·fold + 0.02·seed
    runs = [(seed, fold) for fold in (0, 1, 2) for seed in (0, 1)]
    finals = [{"acc_y_val_domain": 0.5 + 0.1 * fold + 0.02 * seed, "disentanglement_score":
               0.3 + 0.01 * fold, "task_accuracy": 0.9, "zay_collapsed": 0.0}
              for seed, fold in runs]
    out, attrs = combine(finals, runs, LODO)
    # per seed: mean over folds 0.6 + 0.02·seed -> 0.60, 0.62; their mean 0.61
    assert attrs["replicate_values"]["lodo_accuracy"] == pytest.approx(
        [0.60, 0.62])
    assert out["lodo_accuracy"] == pytest.approx(0.61)
    # two seeds: se = |0.60 - 0.62| / 2
    assert out["lodo_accuracy_se"] == pytest.approx(0.01)
    for fold in (0, 1, 2):  # per domain, mean over the seeds
        assert out[f"lodo_acc_domain_{fold}"] == pytest.approx(0.51 + 0.1 * fold)
    assert out["disentanglement_score"] == pytest.approx(0.31)
    assert attrs["lodo_domains"] == [0, 1, 2] and out["lodo_folds"] == 3.0
    assert LODO.values(out) == [out["lodo_accuracy"], out["disentanglement_score"]]


@pytest.mark.parametrize("kwargs, task, message", [
    ({}, "lodo_accuracy", "--task-metric lodo_accuracy needs --lodo"),
    ({}, "acc_y_val_domain", "needs a validation domain"),
    ({"lodo": True, "asha": True}, "lodo_accuracy", "--asha cannot be combined with --lodo"),
    ({"lodo": True}, "task_accuracy", "--lodo optimises lodo_accuracy"),
])
def test_a_task_metric_the_runs_cannot_measure_is_refused_before_anything_is_stored(
        tmp_path, kwargs, task, message):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "x", 2, tmp_path, **kwargs)
    opts.objective = Objective(task=task, mode="scalar" if kwargs.get("asha") else "pareto")
    with pytest.raises(PreflightError, match=message):
        run_sweep(opts)
    assert not (tmp_path / "study.db").exists()


def test_lodo_on_camelyon17_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "x", 2, tmp_path, lodo=True)
    opts.base_config = RunConfig.from_dict(opts.base_config).replace(
        dataset="camelyon17").to_dict()
    opts.objective = LODO
    with pytest.raises(PreflightError, match="WILDS fixes its hospitals"):
        run_sweep(opts)


def test_a_lodo_trial_holds_each_training_domain_out_in_turn():
    base = RunConfig().replace(**{**TINY_TRIAL, "domains": (0.0, 30.0, 60.0),
                                  "test_domain": 2}).to_dict()
    request = Request(base=base, settings=(Setting({"stage1_epochs": 1, "stage2_epochs": 1}),),
                      objective={"mode": "pareto", "disentanglement": "disentanglement_score",
                                 "weight": 0.5, "task": "lodo_accuracy"},
                      replication=replication(0, 0, 1, [0, 1]), population=True)
    rows = []
    (outcome,) = read_final(answer(request, rows.append, {}))
    assert isinstance(outcome, Outcome), outcome
    final = outcome.metrics
    # two folds (domains 0 and 1; domain 2 is the test domain, in no fold)
    assert outcome.lodo_domains == [0, 1]
    held = [final["lodo_acc_domain_0"], final["lodo_acc_domain_1"]]
    assert final["lodo_accuracy"] == pytest.approx(sum(held) / 2)
    assert all(0.0 <= h <= 1.0 for h in held)
    assert "acc_y_test_domain" in final  # reported, never a fold
    # the epoch rows are the two folds' average, one per epoch, in order
    assert [int(r["epoch"]) for r in rows] == list(range(TINY_TRIAL["epochs"] - 1))
    assert {r["replicates"] for r in rows} == {2.0}
    assert all(math.isfinite(r["val_acc_y_val_domain"]) for r in rows)


def test_a_confirmation_of_a_lodo_study_runs_every_fold_on_each_fresh_seed():
    import optuna

    from search.checks.confirm import ConfirmSearcher, lodo_domains

    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    trial.set_user_attr("lodo_domains", [0, 1, 3])
    study.tell(trial, [0.5, 0.5])
    assert lodo_domains(study, LODO) == [0, 1, 3]
    assert lodo_domains(study, Objective()) is None  # not a LODO study: plain runs
    config = RunConfig().replace(**TINY_TRIAL).to_dict()
    confirmation = {"id": 1, "seeds": [7], "lodo_domains": [0, 1, 3],
                    "settings": [{"key": "default", "config": config},
                                 {"key": "trial_4", "config": config}]}
    searcher = ConfirmSearcher(confirmation, [[("default", 7), ("trial_4", 7)]], engine=None,
                               trial_options={})
    suggested = searcher.suggest("t1")
    assert len(suggested["members"]) == 2
    request = Request.from_config(suggested)
    assert request.runs() == [(7, 0), (7, 1), (7, 3)]  # seed 7, its own split
    assert request.replication.split_seed == 7

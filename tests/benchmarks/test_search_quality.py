"""The search-quality benchmark's bookkeeping (no training): the default trial, replicate
statistics, hypervolumes and Mann-Whitney tests from a study database, the best setting's
paired differences, and its parameters as sweep flags."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "search_quality.py"


@pytest.fixture(scope="module")
def sq():
    spec = importlib.util.spec_from_file_location("search_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_default_is_the_whole_method_default_and_in_its_space(sq):
    from search.space import build_space

    space = build_space(6, ranges=list(sq.RANGES))
    default = space.baseline()
    assert default == {"stage1_epochs": 2, "stage2_epochs": 2,
                       "use_independence_penalty": True, "independence_penalty": 10.0,
                       "beta_ay": 1.0, "beta_x": 1.0, "penalty_pairs": "zy_za"}
    assert space.admits(default)


def test_mean_se(sq):
    assert sq.mean_se([1.0, 3.0]) == (2.0, 1.0)
    m, se = sq.mean_se([0.5])
    assert m == 0.5 and math.isnan(se)


def _outcome(sq, acc, dis, feasible=True):
    return sq.Outcome(per_seed={"task_accuracy": list(acc), "disentanglement_score": list(dis)},
                      feasible=[feasible] * len(acc),
                      constraint=[-0.5 if feasible else 0.5] * len(acc))


def test_summary_hypervolumes_tests_and_best(sq, tmp_path):
    from search.space import build_space

    storage = f"sqlite:///{tmp_path / 'sq.db'}"
    space = build_space(6, ranges=list(sq.RANGES))
    default = space.baseline()
    better = {**default, "beta_x": 2.0}
    best = {**default, "beta_x": 3.0}
    collapsed = {**default, "beta_ay": 4.0}
    outcomes = [_outcome(sq, [0.70, 0.72], [0.50, 0.52]),   # default
                _outcome(sq, [0.71, 0.73], [0.51, 0.53]),   # better
                _outcome(sq, [0.72, 0.72], [0.54, 0.58]),   # best
                _outcome(sq, [0.9, 0.9], [0.9, 0.9], feasible=False)]  # collapsed
    settings = [default, better, best, collapsed]
    for sampler, order in (("tpe", [0, 1, 2, 3]), ("random", [0, 3, 3, 3])):
        for seed in (0, 1, 2):
            study = sq.open_study(storage, sampler, seed, 4)
            for i in order:
                study.enqueue_trial(settings[i],
                                    user_attrs={sq.BASELINE: True} if i == 0 else {})
                trial = study.ask()
                sampled = space.sample(trial)
                assert trial.params == settings[i]
                sq.tell(study, trial, sampled, outcomes[i], 2)
    # a trial of a run still going on: the summary must leave it RUNNING
    live = sq.open_study(storage, "tpe", 0, 4).ask()
    summary = sq.summarise(storage, ["tpe", "random"], [0, 1, 2], [2, 4])
    import optuna

    again = optuna.load_study(study_name="tpe-seed0", storage=storage)
    assert again.trials[live.number].state == optuna.trial.TrialState.RUNNING
    assert summary["studies"]["tpe-seed0"]["trials"] == 4  # the live one is not counted
    assert summary["default"]["values"] == pytest.approx([0.71, 0.51])
    tpe = summary["studies"]["tpe-seed0"]
    # the box of `better` (0.72, 0.52) beyond (0.71, 0.51), then `best` (0.72, 0.56)
    assert tpe["hv_vs_default"][2] == pytest.approx(0.01 * 0.01)
    assert tpe["hv_vs_default"][4] == pytest.approx(0.01 * 0.05)
    assert tpe["hv_vs_zero"][4] == pytest.approx(0.72 * 0.56)
    assert summary["studies"]["random-seed0"]["hv_vs_default"][4] == 0.0  # infeasible only
    assert len(tpe["dominating"]) == 2
    p = summary["mann_whitney"]["hv_vs_default"]["tpe"][4]
    assert p < 0.1  # three seeds all above random's three zeros: exact p = 1/20
    b = summary["best"]
    assert b["dominates_default"] and b["row"]["params"] == best
    diff = b["metrics"]["disentanglement_score"]
    assert diff["per_seed_difference"] == pytest.approx([0.04, 0.06])
    assert diff["paired_difference"][0] == pytest.approx(0.05)
    assert diff["paired_difference"][1] == pytest.approx(0.01)
    text = sq.table(summary, ["tpe", "random"], [0, 1, 2], [2, 4])
    assert "| tpe |" in text and "| random |" in text


def test_sweep_flags_round_trip(sq):
    from search.space import build_space

    params = {"stage1_epochs": 1, "stage2_epochs": 3, "use_independence_penalty": True,
              "independence_penalty": 0.8312, "penalty_pairs": "zy_za_zx",
              "beta_ay": 0.5, "beta_x": 2.25}
    flags = [f"{k}={v}" for k, v in sq.sweep_flags(params).items()]
    space = build_space(6, fixes=flags)
    assert space.fixed == params
    assert np.isclose(space.fixed["independence_penalty"], 0.8312)

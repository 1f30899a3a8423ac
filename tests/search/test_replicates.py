"""Replicates: every setting trained with the same R seeds, side by side, and told as the
means with their spread."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.cli import SMOKE
from search.contract import Request, Setting, read_final
from search.db.storage import read_epochs
from search.db.study import StudyError
from search.driver.sweep import run_sweep
from search.objective import Objective
from search.space import SearchSpace
from search.worker import answer
from search.worker.replicates import Replicates, combine, mean_rows, replication
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
    out, attrs = combine(finals, [(3, None), (4, None), (5, None)], OBJECTIVE)
    assert out["task_accuracy"] == pytest.approx(0.6)
    assert out["other"] == pytest.approx(3.0)
    # sd with n - 1: accuracy deviations ±0.1, 0 -> sqrt(0.02 / 2) = 0.1
    assert out["task_accuracy_sd"] == pytest.approx(0.1)
    assert out["task_accuracy_se"] == pytest.approx(0.1 / math.sqrt(3))
    # 0.2, 0.4, 0.9: mean 0.5, squared deviations 0.09 + 0.01 + 0.16 = 0.26
    assert out["disentanglement_score_sd"] == pytest.approx(math.sqrt(0.13))
    assert out["zay_collapsed"] == 1.0  # collapsed in any seed is collapsed
    assert attrs["replicate_seeds"] == [3, 4, 5]
    assert attrs["replicate_values"]["disentanglement_score"] == [0.2, 0.4, 0.9]
    assert out["replicates"] == 3.0
    assert "acc_y_test_domain_se" not in out  # no test domain, no spread of it
    for f, held in zip(finals, (0.2, 0.3, 0.1), strict=True):
        f["acc_y_test_domain"] = held
    out, _ = combine(finals, [(3, None), (4, None), (5, None)], OBJECTIVE)
    # the test domain is reported with its spread (deviations 0, ±0.1: sd 0.1)
    assert out["acc_y_test_domain"] == pytest.approx(0.2)
    assert out["acc_y_test_domain_se"] == pytest.approx(0.1 / math.sqrt(3))
    # a scalar study's score, seed by seed (0.8 acc + 0.2 dis): 0.44, 0.64, 0.66
    scalar = Objective(mode="scalar", weight=0.2, disentanglement="disentanglement_score")
    out, attrs = combine(finals, [(3, None), (4, None), (5, None)], scalar)
    assert attrs["replicate_values"]["scalar_score"] == pytest.approx(
        [0.44, 0.64, 0.66])
    assert out["scalar_score"] == pytest.approx(scalar.values(out)[0])  # linear: the same
    assert out["scalar_score_se"] == pytest.approx(np.std([0.44, 0.64, 0.66], ddof=1)
                                                   / math.sqrt(3))


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


def test_a_replicate_that_stopped_early_stays_in_every_later_epochs_mean():
    # seed 0 stops early (stage-3 patience) at epoch 1 on 0.5; seed 1 runs on. Averaging
    # only the seeds still running would report 0.9 at epoch 2, over one seed
    cfg = RunConfig().replace(**TINY_TRIAL)  # 4 epochs: 0..3
    agg = Replicates([cfg], owner=[0, 0], objective=OBJECTIVE)
    row = {"stage": 3.0, "val_disentanglement_score": 0.1, "stopped_early": 0.0}
    out = agg.add({0: {**row, "epoch": 1.0, "val_acc_y": 0.5, "stopped_early": 1.0},
                   1: {**row, "epoch": 1.0, "val_acc_y": 0.7}})
    assert out[0][1]["val_acc_y"] == pytest.approx(0.6)
    out = agg.add({1: {**row, "epoch": 2.0, "val_acc_y": 0.9}})
    assert out[0][1]["val_acc_y"] == pytest.approx((0.5 + 0.9) / 2)
    assert out[0][1]["replicates"] == 2.0 and out[0][1]["epoch"] == 2.0
    assert agg.add({1: {**row, "epoch": 3.0, "val_acc_y": 0.8}}) == []  # the last: held
    assert agg.held[0]["val_acc_y"] == pytest.approx((0.5 + 0.8) / 2)
    assert agg.last_raw(0)["epoch"] == 3.0


def test_every_setting_gets_the_same_seeds_so_identical_settings_agree_seed_by_seed():
    base = RunConfig().replace(**TINY_TRIAL).to_dict()
    same = {"stage1_epochs": 1, "stage2_epochs": 1, "use_independence_penalty": True,
            "independence_penalty": 10.0}
    request = Request(
        base=base, population=True,
        settings=(Setting(same), Setting(dict(same)),
                  Setting({**same, "use_independence_penalty": False})),
        objective={"mode": "pareto", "disentanglement": "disentanglement_score", "weight": 0.5},
        replication=replication(7, 7, 2))
    rows = []
    out = answer(request, rows.append, {})
    assert out["population"] == 6.0  # 3 settings x 2 seeds, one vectorised model
    finals = read_final(out, 3)
    a, b, off = (f.replicate_values for f in finals)
    for f in finals:
        assert f.replicate_seeds == [7, 8]
        assert f.config["data"]["split_seed"] == 7
    # the same setting on the same seed is the same model: paired differences are 0
    assert a == b
    # the seeds differ, so do their results; the penalty differs from the penalty on
    assert a["task_accuracy"][0] != a["task_accuracy"][1] or \
        a["disentanglement_score"][0] != a["disentanglement_score"][1]
    assert a != off
    for name in ("task_accuracy", "disentanglement_score"):
        assert finals[0].metrics[name] == pytest.approx(sum(a[name]) / 2)
    # every epoch row is an average of two replicates, and each setting's is reported
    assert {r["replicates"] for r in rows} == {2.0}
    assert sorted({int(r["member"]) for r in rows}) == [0, 1, 2]
    assert all(f.last_epoch is not None for f in finals)


@pytest.mark.slow  # a Ray sweep of one population of 12 members (~45 s)
def test_a_sweep_with_replicates_and_a_population_stores_means_seeds_and_errors(
        tmp_path, local_ray):
    # the issue's own shape: --replicates 3 --population 4, one population of 4 settings x
    # 3 seeds told as 4 trials, and the report's error bars read from them
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "rep", 4, tmp_path, population=4, replicates=3)
    # at the smoke test's size: the tests' tiny trials collapse zay on some seed of every
    # setting, and a study without a feasible trial has no front to draw
    opts.base_config = RunConfig().replace(**{**TINY_TRIAL, **SMOKE}).to_dict()
    opts.space = SearchSpace(epochs=SMOKE["epochs"])
    summary = run_sweep(opts)
    assert summary["counts"]["complete"] == 4
    study = optuna.load_study(study_name="rep", storage=url)
    assert [t.user_attrs["population_size"] for t in study.trials] == [12.0] * 4
    engine = sa.create_engine(url)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["replicate_seeds"] == [0, 1, 2]  # the same in every trial
        per_seed = t.user_attrs["replicate_values"]
        for name, value in zip(Objective().names, t.values, strict=True):
            seeds = per_seed[name]
            mean = sum(seeds) / 3
            assert value == pytest.approx(mean)
            sd = math.sqrt(sum((v - mean) ** 2 for v in seeds) / 2)  # n - 1
            assert t.user_attrs[f"{name}_sd"] == pytest.approx(sd)
            assert t.user_attrs[f"{name}_se"] == pytest.approx(sd / math.sqrt(3))
        rows = read_epochs(engine, t._trial_id)
        assert [int(r["epoch"]) for r in rows] == list(range(SMOKE["epochs"]))
        assert {r["replicates"] for r in rows} == {3.0}
    engine.dispose()

    # the report draws each trial's standard errors as its error bars
    from analysis._load import load_study
    from analysis._rank import rank_trials
    from analysis._report import build_figures

    assert any(t.user_attrs["feasible"] for t in study.trials), "no front to draw"
    data = load_study(url, "rep")
    fig = build_figures(data, rank_trials(data), which=("pareto",)).figures["pareto"]
    se = {(round(t.values[0], 12), round(t.values[1], 12)):
          (t.user_attrs["task_accuracy_se"], t.user_attrs["zay_independence_score_se"])
          for t in study.trials}
    # a bar longer than a third of the points' spread is drawn cut, by an arrowhead at
    # each end (analysis._figures.cut_bars): its error array holds 0 and the two ends lie
    # symmetric about the point, closer than the standard error it stands for
    from analysis._figures import CUT_BAR_NAME

    ends = [(x, y) for trace in fig.data if trace.name == CUT_BAR_NAME
            for x, y in zip(trace.x, trace.y, strict=True)]

    def cut(x: float, y: float, axis: int, real: float) -> bool:
        along = [e for e in ends if math.isclose(e[1 - axis], (x, y)[1 - axis])]
        offsets = sorted(round(e[axis] - (x, y)[axis], 12) for e in along)
        return any(0 < o < real and -o in offsets for o in offsets)

    drawn = set()
    for trace in fig.data:
        if trace.error_x is None or trace.error_x.array is None:
            continue
        for x, y, ex, ey in zip(trace.x, trace.y, trace.error_x.array, trace.error_y.array,
                                strict=True):
            want = se[(round(x, 12), round(y, 12))]
            for axis, (shown, real) in enumerate(zip((ex, ey), want, strict=True)):
                assert shown == pytest.approx(real) or (shown == 0 and cut(x, y, axis, real))
            drawn.add((round(x, 12), round(y, 12)))
    assert drawn == set(se)  # every trial, feasible or not, with its own bars
    assert "points are means over 3 paired seeds" in fig.layout.title.text

    # resuming with another number of replicates would mix means of 3 and 2 seeds
    with pytest.raises(StudyError, match="--replicates 3"):
        run_sweep(tiny_options(url, "rep", 8, tmp_path, population=4, replicates=2))


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

"""The fidelity check: budgets, the rank statistics on known inputs, the plan and its
runs, resume, and the objective-resolution warning."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest

from search.checks.fidelity import (
    TARGET,
    Budget,
    FidelityError,
    compare,
    default_rungs,
    kendall,
    plan_budgets,
    regret,
    rung_value,
    scale_stages,
    score_check,
    spearman,
    summary_lines,
    top_k_overlap,
)
from search.checks.resolution import metric_resolution, resolution_warnings, study_resolution
from search.db import storage as db
from tests.search.conftest import TINY_TRIAL
from trainer import RunConfig, params


def test_stages_scale_as_the_defaults_thirds_do():
    for epochs in (3, 5, 6, 12, 20, 24, 30):  # 5 and 20: a third does not scale by rounding
        thirds = {k: v for k, v in params.baseline(60).items() if k.endswith("_epochs")}
        assert scale_stages(thirds, 60, epochs) == {
            k: v for k, v in params.baseline(epochs).items() if k.endswith("_epochs")}
    # 33 + 20 of 60 at 6 epochs: 3.3 -> 3, 2.0 -> 2; 59 + 1: 5.9 -> 6, then stage 2 has 0 left
    assert scale_stages({"stage1_epochs": 33, "stage2_epochs": 20}, 60, 6) == {
        "stage1_epochs": 3, "stage2_epochs": 2}
    assert scale_stages({"stage1_epochs": 59, "stage2_epochs": 1}, 60, 6) == {
        "stage1_epochs": 6, "stage2_epochs": 0}
    # unstaged (no stage lengths) and a length left to the trainer (None) stay as they are
    assert scale_stages({"staged_training": False}, 60, 6) == {"staged_training": False}
    assert scale_stages({"stage1_epochs": None}, 60, 6) == {"stage1_epochs": None}


def test_the_default_rungs_end_the_defaults_stages_and_halve_stage_3():
    assert default_rungs(60) == [20, 40, 50]
    assert default_rungs(6) == [2, 4, 5]
    budgets = plan_budgets(60, epochs=(6,), rungs=(20,), schedules={"n250": {"max_samples": 250}})
    assert [b.name for b in budgets] == [TARGET, "e6", "n250", "rung20"]
    assert budgets[2] == Budget("n250", 60, overrides={"max_samples": 250})
    assert Budget.from_dict(budgets[3].to_dict()) == budgets[3]
    with pytest.raises(FidelityError, match="inside the target"):
        plan_budgets(60, rungs=(60,))
    with pytest.raises(FidelityError, match="1 to 59"):
        plan_budgets(60, epochs=(60,))


def test_rank_statistics_on_a_known_pair_of_rankings():
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 1, 4, 3, 5])
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 120; tau: 2 of 10 pairs discordant
    assert spearman(x, y) == pytest.approx(0.8)
    assert kendall(x, y) == pytest.approx(0.6)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(5)))
    # the target's two best (indices 4, 2) against the cheap budget's (4, 3): one shared
    assert top_k_overlap(np.array([0, 1, 2, 4, 5.0]), np.array([0, 1, 4, 3, 5.0]), 2, 1.0) == 0.5


def test_a_rung_inside_stage_1_reads_nothing_and_a_seed_counts_only_where_both_budgets_ran():
    history = [{"epoch": e, "stage": 1 if e < 3 else 2, "val_acc_y": 0.5} for e in range(5)]
    assert math.isnan(rung_value(history, 3, "val_acc_y"))  # epoch index 2: stage 1
    assert rung_value(history, 4, "val_acc_y") == 0.5
    # setting 0's cheap run on seed 1 failed: its target run on seed 1 is left out too, so
    # both of its means are of seed 0 (0.0 and 0.0), not 0.0 against (0.0 + 9.0) / 2
    cheap = np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    target = np.array([[0.0, 9.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    r = compare(cheap, target, "task_accuracy", bootstrap=20)
    assert r["spearman"] == pytest.approx(1.0) and r["regret"] == 0.0


def test_regret_is_what_the_cheap_pick_loses_at_the_target():
    target = np.array([0.5, 0.9, 0.7])
    assert regret(np.array([0.0, 0.1, 0.3]), target, 1.0) == pytest.approx(0.2)  # picks 2
    assert regret(np.array([0.0, 0.3, 0.1]), target, 1.0) == 0.0  # picks the best
    # minimised (leakage): the cheap budget's lowest is index 0; the target's lowest is 0.5
    leak = np.array([0.6, 0.5, 0.9])
    assert regret(np.array([0.1, 0.2, 0.3]), leak, -1.0) == pytest.approx(0.1)
    # a tie for the cheap budget's best: each tied setting picked with equal chance
    assert regret(np.array([0.3, 0.3, 0.0]), target, 1.0) == pytest.approx((0.4 + 0.0) / 2)


def test_a_faithful_budget_clears_the_bar_and_noise_does_not():
    rng = np.random.default_rng(0)
    n, seeds = 12, 3
    truth = np.linspace(0.0, 1.0, n)[:, None]
    target = truth + 0.01 * rng.normal(size=(n, seeds))
    # the cheap budget sees the same settings, shifted and shrunk, with little seed noise
    faithful = compare(0.5 * truth + 0.2 + 0.01 * rng.normal(size=(n, seeds)), target,
                       "disentanglement_score", bootstrap=400)
    assert faithful["spearman"] == pytest.approx(1.0)
    assert faithful["spearman_lo"] >= 0.9 and faithful["faithful"]
    assert faithful["regret"] == 0.0 and faithful["top_k_overlap"] == 1.0
    # a cheap budget that ranks by something unrelated: its interval covers 0
    noise = compare(rng.normal(size=(n, seeds)), target, "disentanglement_score",
                    bootstrap=400)
    assert noise["spearman_lo"] < 0.0 < noise["spearman_hi"] and not noise["faithful"]
    # a reversed ranking is found as such, for a minimised metric too
    reversed_ = compare(-truth + 0.01 * rng.normal(size=(n, seeds)), target,
                        "zay_label_leakage", bootstrap=400)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["regret"] == pytest.approx(1.0, abs=0.05)  # picks the worst leakage
    # a proxy constant at the cheap budget (zay gated out) ranks nothing and is never
    # faithful, however its resamples fall
    constant = compare(np.full((n, seeds), 0.998), target, "zay_independence_score",
                       bootstrap=100)
    assert constant["constant"] and not constant["faithful"]
    assert constant["spearman_lo"] == constant["spearman_hi"] == 0.0


def test_collapse_follows_the_sweeps_rule_at_both_budgets():
    """Four settings, independence 1.0 > 0.9 > 0.8 > 0.7 at both budgets; setting 0's zay
    collapsed (trivially "independent"). Collapsed at the target on one seed: it is left
    out, and the other three rank alike (rho 1). Collapsed only at the cheap budget: it
    ranks last there though its value is the highest, so rho is that of ranks
    (3, 2, 1, 0) against (0, 3, 2, 1)... i.e. 1 - 6 * 12 / 60 = -0.2."""
    values = np.array([[1.0] * 2, [0.9] * 2, [0.8] * 2, [0.7] * 2])
    collapsed = np.zeros((4, 2), bool)
    collapsed[0, 1] = True
    at_target = compare(values, values, "zay_independence_score", bootstrap=50,
                        target_collapsed=collapsed, cheap_collapsed=collapsed)
    assert at_target["settings"] == 3 and at_target["infeasible_at_target"] == 1
    assert at_target["spearman"] == pytest.approx(1.0)
    at_cheap = compare(values, values, "zay_independence_score", bootstrap=50,
                       cheap_collapsed=collapsed)
    assert at_cheap["infeasible_at_cheap"] == 1
    assert at_cheap["spearman"] == pytest.approx(-0.2)
    assert at_cheap["regret"] == pytest.approx(0.1)  # picks setting 1 (0.9), best is 1.0


def test_seed_noise_widens_the_interval_through_the_within_setting_resample():
    rng = np.random.default_rng(1)
    n, seeds = 12, 3
    truth = np.linspace(0.0, 1.0, n)[:, None]
    quiet = compare(truth + 0.01 * rng.normal(size=(n, seeds)), truth + 0 * truth.repeat(3, 1),
                    "task_accuracy", bootstrap=400)
    noisy = compare(truth + 0.5 * rng.normal(size=(n, seeds)), truth.repeat(3, 1),
                    "task_accuracy", bootstrap=400)
    assert noisy["spearman_hi"] - noisy["spearman_lo"] > quiet["spearman_hi"] - quiet["spearman_lo"]
    assert quiet["spearman_lo"] > noisy["spearman_lo"]


def test_rungs_read_the_target_runs_proxy_at_their_epoch():
    history = [{"epoch": e, "stage": 1 + (e >= 1), "val_disentanglement_score": e / 10}
               for e in range(5)]
    assert rung_value(history, 2, "val_disentanglement_score") == pytest.approx(0.1)
    # stopped after epoch index 2 (stage-3 patience): a later rung reads its last row
    assert rung_value(history[:3], 5, "val_disentanglement_score") == pytest.approx(0.2)
    assert math.isnan(rung_value([], 2, "val_disentanglement_score"))
    runs = {(f"s{i}", seed, TARGET): {"final": {"disentanglement_score": float(i)},
                                      "history": [{"epoch": 0, "val_disentanglement_score":
                                                   float(-i)}]}
            for i in range(4) for seed in (0, 1)}
    [record] = score_check(runs, [f"s{i}" for i in range(4)], [0, 1],
                           [Budget(TARGET, 4), Budget("rung1", 4, rung=1)],
                           ["disentanglement_score"], bootstrap=50)
    assert record["budget"] == "rung1" and record["spearman"] == pytest.approx(-1.0)
    lines = summary_lines({"id": 1, "complete": True, "settings": 4, "seeds": [0, 1],
                           "target_epochs": 4, "records": [record],
                           "runs": {"complete": 8, "failed": 0, "total": 8}})
    assert "rung1 -1.00" in lines[1] and lines[-1].endswith("none")


def test_resolution_compares_the_spread_between_trials_with_the_seed_noise():
    # sd of (0.5, 0.51, 0.49, 0.5) is sqrt(0.0002 / 3) = 0.00816; / 0.01 -> 0.82
    flat = metric_resolution([0.5, 0.51, 0.49, 0.5], [0.01] * 4)
    assert flat["ratio"] == pytest.approx(math.sqrt(0.0002 / 3) / 0.01)
    assert flat["state"] == "does not resolve"
    spread = metric_resolution([0.1, 0.5, 0.9], [0.01, 0.02, 0.03])  # sd 0.4 / median 0.02
    assert spread["ratio"] == pytest.approx(20.0) and spread["state"] == "resolves"
    assert metric_resolution([0.1, 0.2], [0.01, 0.01])["state"] == "too few trials"


def test_status_names_the_alternatives_when_the_objective_cannot_rank():
    trials = [{"task_accuracy": 0.7 + 0.1 * i, "task_accuracy_se": 0.01,
               "zay_independence_score": 0.99 + 0.001 * (i % 2),
               "zay_independence_score_se": 0.002, "disentanglement_score": 0.2 * i,
               "disentanglement_score_se": 0.01, "feasible": True} for i in range(4)]
    # a collapsed zay (infeasible) is left out, however it would spread the values
    trials.append({"task_accuracy": 0.1, "zay_independence_score": 0.0,
                   "zay_independence_score_se": 0.002, "feasible": False})
    resolution = study_resolution(trials, ["task_accuracy", "zay_independence_score"],
                                  replicated=True)
    [warning] = resolution_warnings(resolution)
    assert warning.startswith("warning: zay_independence_score does not separate")
    assert "these do: disentanglement_score" in warning
    unknown = resolution_warnings(study_resolution(trials, ["task_accuracy"],
                                                   replicated=False))
    assert unknown[0].startswith("objective resolution unknown")


# -- the plan and its runs, on a study whose default trial is stored ------------------------


def _study_with_default(url: str, name: str = "f"):
    from search.db.study import open_storage

    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=["maximize", "maximize"])
    config = RunConfig().replace(**TINY_TRIAL).to_dict()
    trial = optuna.trial.create_trial(
        params={}, distributions={}, values=[0.5, 0.9],
        user_attrs={"baseline": True, "config": config, "feasible": True})
    study.add_trial(trial)
    return storage, study


def test_a_check_is_planned_once_and_resumed_by_the_same_command(tmp_path):
    from search.checks.fidelity_run import FidelityOptions, jobs_for, open_check, run_params

    url = f"sqlite:///{tmp_path / 'f.db'}"
    _study_with_default(url)
    opts = FidelityOptions(storage=url, study="f", settings=4, seeds=2, epochs=(2,),
                           rungs=(2,), ranges=("stage1_epochs=0:4",))
    storage, check, created = open_check(opts)
    assert created
    plan = check["plan"]
    assert [s["key"] for s in plan["settings"]] == ["default", "draw_0", "draw_1", "draw_2"]
    assert plan["seeds"] == [1, 2]  # above the default trial's seed 0
    assert plan["objectives"] == ["task_accuracy", "zay_independence_score"]
    # schedules are trained (target, e2); the rung reads the target runs
    assert len(jobs_for(check, population=False)) == 4 * 2 * 2
    assert [len(j) for j in jobs_for(check, population=True)] == [4] * 4
    default = plan["settings"][0]
    at_two = run_params(default, Budget("e2", 2), 2, 4)
    assert (at_two["epochs"], at_two["seed"], at_two["split_seed"]) == (2, 2, None)
    assert RunConfig.from_dict(RunConfig().replace(**at_two).to_dict()).optim.epochs == 2
    # one run stored: the same command resumes that check and skips it
    db.write_fidelity_run(storage.engine, check["id"], "default", 1, TARGET,
                          state="complete", metrics={"task_accuracy": 0.5}, history=[])
    _, again, created_again = open_check(opts)
    assert not created_again and again["id"] == check["id"]
    assert len(jobs_for(again, population=False)) == 4 * 2 * 2 - 1
    # --new starts another check, on seeds no earlier check drew
    _, other, _ = open_check(FidelityOptions(**{**opts.__dict__, "new": True}))
    assert other["id"] != check["id"] and other["plan"]["seeds"] == [3, 4]


def test_a_bad_request_is_refused_before_anything_is_stored(tmp_path):
    from search.checks.fidelity_run import FidelityOptions, open_check

    url = f"sqlite:///{tmp_path / 'f.db'}"
    storage, _ = _study_with_default(url)
    for opts, message in (
            (FidelityOptions(storage=url, study="f", settings=2, epochs=(2,)), "at least 3"),
            (FidelityOptions(storage=url, study="f", epochs=(4,)), "1 to 3"),
            (FidelityOptions(storage=url, study="f", epochs=(2,), source="trials"),
             "needs 2"),
            (FidelityOptions(storage=url, study="f", rungs=()), "nothing cheaper")):
        with pytest.raises(FidelityError, match=message):
            open_check(opts)
    assert db.read_fidelity_checks(storage.engine, "f") == []


def test_the_searcher_stores_each_runs_final_metrics_and_epoch_rows(tmp_path):
    """A real worker result (``search.worker.answer``, no Ray): every epoch row but the
    last reaches ``on_trial_result``; the last travels in the final result."""
    from search.checks.fidelity_run import FidelityOptions, FidelitySearcher, jobs_for, open_check
    from search.contract import Request
    from search.worker import answer

    url = f"sqlite:///{tmp_path / 'f.db'}"
    _study_with_default(url)
    storage, check, _ = open_check(FidelityOptions(storage=url, study="f", settings=3,
                                                   seeds=1, epochs=(2,), rungs=(3,)))
    jobs = [j for j in jobs_for(check, population=True) if j[0][2] == TARGET]
    searcher = FidelitySearcher(check, jobs, engine=storage.engine,
                                trial_options={"objective": check["plan"]["objective"]})
    config = searcher.suggest("t0")
    assert len(config["members"]) == 3
    final = answer(Request.from_config(config),
                   lambda row: searcher.on_trial_result("t0", row), {})
    searcher.on_trial_complete("t0", final)
    runs = db.read_fidelity_checks(storage.engine, "f")[0]["runs"]
    assert len(runs) == 3 and {r["state"] for r in runs} == {"complete"}
    for run in runs:
        assert [row["epoch"] for row in run["history"]] == [0.0, 1.0, 2.0, 3.0]
        assert "val_disentanglement_score" in run["history"][-1]
        assert 0.0 <= run["final"]["task_accuracy"] <= 1.0
    assert json.loads(json.dumps(runs))  # stored as plain JSON

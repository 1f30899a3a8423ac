"""``stagetune confirm``: fresh paired seeds, statistics on known differences, resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy as sa

from search.checks.confirm import (
    ConfirmError,
    ConfirmOptions,
    fresh_seeds,
    front_order,
    jobs_for,
    run_confirm,
)
from search.checks.confirm_summary import DEFAULT, summarize
from search.cli import SMOKE
from search.db import storage as db
from search.driver.sweep import run_sweep
from search.space import SearchSpace
from tests.search.conftest import TINY_TRIAL, tiny_options
from trainer import RunConfig

ROOT = Path(__file__).resolve().parents[2]
T_975_DF4 = 2.7764451051977987  # Student's t, 97.5% quantile, 4 degrees of freedom


def _trial_with(study, seed: int, split: int | None = None, replicates=None):
    trial = study.ask()
    trial.set_user_attr("config", {"seed": seed, "data": {"split_seed": split}})
    if replicates:
        trial.set_user_attr("replicate_seeds", replicates)
    study.tell(trial, [0.5, 0.5])


def test_fresh_seeds_lie_above_every_seed_the_study_used():
    study = optuna.create_study(directions=["maximize", "maximize"])
    _trial_with(study, 0, split=0, replicates=[0, 1, 2])
    _trial_with(study, 4)  # a trial with its own --seed
    _trial_with(study, 1, split=9)  # a split drawn from seed 9
    assert fresh_seeds(study, 3) == [10, 11, 12]
    # an earlier confirmation's seeds are used too: a new one is an independent sample
    assert fresh_seeds(study, 2, also_used=[10, 11, 12]) == [13, 14]
    assert fresh_seeds(optuna.create_study(), 2) == [0, 1]


def test_a_new_confirmation_draws_seeds_no_earlier_one_used(tmp_path):
    """Confirming again (here with more seeds, after a first look) is an independent
    sample: its seeds lie above the first confirmation's too, not only the study's. The
    same plan again resumes the first."""
    from search.checks.confirm import open_confirmation
    from search.db.study import open_study
    from search.objective import Objective

    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = open_study(url, "c", Objective(), sampler="random", seed=0).study
    for seed, acc in ((0, 0.6), (1, 0.7)):
        trial = study.ask()
        trial.set_user_attr("config", RunConfig().replace(seed=seed).to_dict())
        study.tell(trial, [acc, 0.5])

    def plan(seeds: int) -> dict:
        return open_confirmation(ConfirmOptions(storage=url, study="c", top=1, seeds=seeds,
                                                quiet=True))[3]

    first = plan(3)
    assert first["seeds"] == [2, 3, 4]  # above the study's seeds 0 and 1 (and split 0)
    assert plan(3)["id"] == first["id"]  # the same plan: the same confirmation, resumed
    second = plan(5)
    assert second["id"] != first["id"] and second["seeds"] == [5, 6, 7, 8, 9]


def test_the_front_is_ordered_by_what_each_point_adds_alone():
    # reference (0, 0); A (0.2, 0.9), B (0.6, 0.6), C (0.9, 0.2) sorted by accuracy:
    # A adds 0.2 x (0.9 - 0.6) = 0.06, B (0.6 - 0.2) x (0.6 - 0.2) = 0.16,
    # C (0.9 - 0.6) x 0.2 = 0.06 -> B first, then A and C in their given order
    points = [[0.2, 0.9], [0.9, 0.2], [0.6, 0.6]]
    assert front_order(points, ["maximize", "maximize"], [0.0, 0.0]) == [2, 0, 1]
    # a minimised second objective: its values are mirrored, the order is the same
    mirrored = [[a, 1 - b] for a, b in points]
    assert front_order(mirrored, ["maximize", "minimize"], [0.0, 1.0]) == [2, 0, 1]
    assert front_order([[0.3], [0.9], [0.5]], ["maximize"], [0.0]) == [1, 2, 0]
    # two trials with the very same values are one point and add what it adds: B's twin
    # ranks with B (0.16), not last with nothing added
    assert front_order([*points, [0.6, 0.6]], ["maximize", "maximize"], [0.0, 0.0]) == [
        2, 3, 0, 1]


def test_a_scalar_study_confirms_its_top_trials_best_first(tmp_path):
    from search.checks.confirm import select_settings
    from search.objective import Objective

    study = optuna.create_study(direction="maximize")
    for number, score in enumerate((0.50, 0.80, 0.60, 0.70)):
        trial = study.ask()
        trial.set_user_attr("config", RunConfig().replace(seed=number).to_dict())
        trial.set_user_attr("baseline", number == 0)
        study.tell(trial, score)
    chosen = select_settings(study, Objective(mode="scalar"), top=2)
    assert [s["number"] for s in chosen] == [0, 1, 3]  # the default, then 0.80 and 0.70


def _confirmation(values: dict[str, list[float | None]], seeds: list[int]) -> dict:
    """A stored confirmation with one objective per setting: ``None`` marks a failed run."""
    settings = [{"key": k, "number": None if k == DEFAULT else i, "params": {},
                 "values": None} for i, k in enumerate(values)]
    runs = []
    for key, per_seed in values.items():
        for seed, v in zip(seeds, per_seed, strict=True):
            runs.append({"setting": key, "seed": seed, "finished_at": 0.0,
                         "state": "failed" if v is None else "complete",
                         "metrics": {} if v is None else {"acc": v, "dis": 0.5},
                         "reason": "DivergenceError" if v is None else None})
    return {"id": 1, "created_at": 0.0, "top": len(values) - 1, "seeds": seeds,
            "objectives": {"names": ["acc", "dis"], "directions": ["maximize", "maximize"]},
            "settings": settings, "runs": runs}


def test_a_known_shift_is_found_with_its_interval_and_holm_adjusted_p():
    n, sd = 5, 0.04
    shift = T_975_DF4 * sd / math.sqrt(n)  # stands exactly at p = 0.05 before Holm
    default = np.array([0.70, 0.66, 0.73, 0.69, 0.71])
    z = np.arange(n) - 2.0
    z = z / z.std(ddof=1)
    summary = summarize(_confirmation({
        DEFAULT: list(default), "trial_3": list(default),  # the same numbers: difference 0
        "trial_8": list(default + shift + sd * z)}, seeds=[10, 11, 12, 13, 14]))
    same, shifted = summary["settings"]
    zero = same["objectives"]["acc"]
    # the same numbers: identical on every seed, no test (no p, no zero-width interval)
    assert zero["difference"]["mean"] == 0 and math.isnan(zero["difference"]["p"])
    assert zero["sentence"] == ("identical to the default on acc on every seed (5 seeds: "
                                "nothing to test)")
    acc = shifted["objectives"]["acc"]
    assert acc["difference"]["mean"] == pytest.approx(shift)
    assert acc["difference"]["low"] == pytest.approx(0.0, abs=1e-12)
    assert acc["difference"]["p"] == pytest.approx(0.05, abs=1e-9)
    # Holm over the two settings chosen: the untested one counts as p = 1, so the
    # smaller p doubles (0.10); the untested one shows no p of its own
    assert acc["p_holm"] == pytest.approx(0.10, abs=1e-9) and math.isnan(zero["p_holm"])
    assert summary["family"]["acc"] == 2 and summary["untested"]["acc"] == 1
    # 0.10 is not below 0.05: no difference is claimed, and the p shown is Holm's, beside
    # the comparison's own interval (which touches 0)
    assert acc["sentence"].startswith("not shown to differ from the default on acc")
    assert acc["sentence"].endswith(", Holm p = 0.100)")
    assert acc["setting"]["mean"] == pytest.approx(default.mean() + shift)
    assert summary["complete"] and summary["runs_done"] == 15


def test_a_scalar_study_is_confirmed_on_the_weighted_score_each_run_gives():
    # the runs store the metrics, not the score: scalar_score = 0.7 acc + 0.3 ind per seed
    from search.objective import Objective

    objective = Objective(mode="scalar", weight=0.3)
    seeds = [20, 21, 22, 23]
    acc = {DEFAULT: [0.70, 0.72, 0.68, 0.71], "trial_5": [0.74, 0.75, 0.73, 0.76]}
    ind = {DEFAULT: [0.90, 0.91, 0.89, 0.92], "trial_5": [0.90, 0.92, 0.90, 0.91]}
    runs = [{"setting": k, "seed": s, "finished_at": 0.0, "state": "complete", "reason": None,
             "metrics": {"task_accuracy": acc[k][i], "zay_independence_score": ind[k][i]}}
            for k in acc for i, s in enumerate(seeds)]
    summary = summarize({
        "id": 1, "created_at": 0.0, "top": 1, "seeds": seeds, "runs": runs,
        "objectives": objective.describe(),
        "settings": [{"key": k, "number": n, "params": {}, "values": None}
                     for k, n in ((DEFAULT, 0), ("trial_5", 5))]})
    (row,) = summary["settings"]
    score = row["objectives"]["scalar_score"]
    d = [0.7 * (acc["trial_5"][i] - acc[DEFAULT][i]) + 0.3 * (ind["trial_5"][i] - ind[DEFAULT][i])
         for i in range(4)]
    assert score["difference"]["n"] == 4
    assert score["difference"]["mean"] == pytest.approx(np.mean(d))
    assert score["difference"]["sd"] == pytest.approx(np.std(d, ddof=1))
    assert score["setting"]["mean"] == pytest.approx(
        np.mean([0.7 * a + 0.3 * i
                 for a, i in zip(acc["trial_5"], ind["trial_5"], strict=True)]))
    assert "not enough paired seeds" not in row["sentence"]


def test_a_seed_with_a_nan_objective_leaves_that_comparison_on_both_sides():
    seeds = [10, 11, 12, 13]
    conf = _confirmation({DEFAULT: [0.70, 0.72, 0.68, 0.71], "trial_1": [0.75, 0.74, 0.73, 0.77],
                          "trial_2": [0.71, 0.73, 0.69, 0.72]}, seeds)
    for run in conf["runs"]:  # trial_1's accuracy is NaN on seed 11 (its own run only)
        if run["setting"] == "trial_1" and run["seed"] == 11:
            run["metrics"]["acc"] = math.nan
    summary = summarize(conf)
    one, two = summary["settings"]
    kept = [0, 2, 3]  # seeds 10, 12, 13
    d = [[0.75, 0.74, 0.73, 0.77][i] - [0.70, 0.72, 0.68, 0.71][i] for i in kept]
    assert one["objectives"]["acc"]["difference"]["n"] == 3
    assert one["objectives"]["acc"]["difference"]["mean"] == pytest.approx(np.mean(d))
    assert one["objectives"]["dis"]["difference"]["n"] == 4  # its other objective keeps all
    assert two["objectives"]["acc"]["difference"]["n"] == 4  # other settings keep the seed
    assert summary["family"] == {"acc": 2, "dis": 2}


def test_a_setting_whose_zay_collapsed_on_a_confirmation_seed_is_infeasible():
    # as in the sweep, collapse on any seed makes a setting infeasible: a collapsed zay is
    # trivially independent, so whatever it "beats" the default on is not a win
    conf = _confirmation({DEFAULT: [0.70, 0.72, 0.68], "trial_1": [0.80, 0.83, 0.78]},
                         [10, 11, 12])
    for run in conf["runs"]:
        if run["setting"] == "trial_1" and run["seed"] == 12:
            run["metrics"]["zay_collapsed"] = 1.0
    (row,) = summarize(conf)["settings"]
    assert row["collapsed"] == 1 and row["runs"] == 3
    assert row["sentence"].startswith("infeasible (zay collapsed on 1 of its 3 runs); beats")


def test_a_setting_that_failed_on_a_seed_wins_nothing_on_the_seeds_that_survived():
    # as in the sweep, where a setting that diverges on any seed fails: its surviving
    # seeds alone would be a survivor's record
    conf = _confirmation({DEFAULT: [0.70, 0.72, 0.68, 0.71, 0.69],
                          "trial_1": [0.80, None, 0.79, None, 0.81]}, [10, 11, 12, 13, 14])
    summary = summarize(conf)
    (row,) = summary["settings"]
    assert summary["complete"] and row["failed"] == 2 and row["runs"] == 5
    assert row["objectives"]["acc"]["difference"]["n"] == 3  # the numbers are still shown
    assert row["sentence"].startswith("failed on 2 of its 5 runs; beats")


def test_a_confirmation_whose_default_failed_everywhere_says_so_without_a_family(capsys):
    from search.checks.confirm_summary import print_confirmation

    conf = _confirmation({DEFAULT: [None, None], "trial_1": [0.8, 0.7]}, [10, 11])
    summary = summarize(conf)
    assert summary["complete"] and summary["family"] == {"acc": 0, "dis": 0}
    (row,) = summary["settings"]
    assert row["sentence"] == "no seed where it and the default both completed"
    print_confirmation(summary)
    out = capsys.readouterr().out
    assert "Holm" not in out and "2 runs failed" in out


def test_holm_states_its_family_when_a_setting_lacks_an_objective():
    from search.checks.confirm_summary import holm_family_text

    conf = _confirmation({DEFAULT: [0.70, 0.72, 0.68], "trial_1": [0.75, 0.74, 0.73],
                          "trial_2": [0.71, 0.73, 0.69]}, [10, 11, 12])
    for run in conf["runs"]:  # trial_2 never stored "dis"
        if run["setting"] == "trial_2":
            run["metrics"].pop("dis")
    summary = summarize(conf)
    assert summary["family"] == {"acc": 2, "dis": 1}
    # the same with the whole objective stored, as confirm writes it now: trial_2's
    # accuracy, which it did store, still counts though it lacks the other objective
    from search.objective import Objective

    objective = Objective(disentanglement="disentanglement_score")
    for run in conf["runs"]:
        run["metrics"] = {"task_accuracy": run["metrics"]["acc"],
                          **({"disentanglement_score": run["metrics"]["dis"]}
                             if "dis" in run["metrics"] else {})}
    stored = summarize({**conf, "objectives": objective.describe()})
    assert stored["family"] == {"task_accuracy": 2, "disentanglement_score": 1}
    assert holm_family_text(summary) == "the settings compared on each objective (acc: 2, dis: 1)"
    # trial_1's dis differences are all 0: identical on every seed, no p at all
    assert summary["settings"][0]["objectives"]["dis"]["sentence"] == (
        "identical to the default on dis on every seed (3 seeds: nothing to test)")
    assert "Holm p" in summary["settings"][0]["objectives"]["acc"]["sentence"]


def test_the_test_domain_is_compared_beside_the_objectives_but_reported_only(capsys):
    """A study with a test domain: its accuracy is compared seed by seed like an
    objective, unadjusted (nothing is selected on it), printed and shown in the report's
    table marked "reported only"; a study without one shows no such line."""
    from analysis._confirm import comparison_rows
    from search.checks.confirm_summary import print_confirmation

    c = _confirmation({DEFAULT: [0.7, 0.7, 0.7], "trial_2": [0.7, 0.7, 0.7]}, seeds=[4, 5, 6])
    held = {DEFAULT: [0.20, 0.25, 0.30], "trial_2": [0.23, 0.27, 0.34]}  # +0.03, +0.02, +0.04
    for run in c["runs"]:
        run["metrics"]["acc_y_test_domain"] = held[run["setting"]][run["seed"] - 4]
    summary = summarize(c)
    (row,) = summary["settings"]
    diff = row["reported"]["acc_y_test_domain"]["difference"]
    assert diff["mean"] == pytest.approx(0.03) and diff["n"] == 3
    # sd of (0.03, 0.02, 0.04) is 0.01: t = 0.03 / (0.01 / sqrt 3), two-sided, 2 df
    from scipy.stats import t as student

    assert diff["p"] == pytest.approx(2 * student.sf(0.03 / (0.01 / math.sqrt(3)), 2))
    assert "acc_y_test_domain" not in row["objectives"]  # never an objective
    print_confirmation(summary)
    out = capsys.readouterr().out
    assert "acc_y_test_domain (reported only, never selected on): 0.280 against the " \
           "default's 0.250, +0.030" in out
    rows = comparison_rows(summary)
    assert [r[1] for r in rows] == ["acc", "dis", "acc_y_test_domain (reported only)"]
    assert rows[-1][-1].endswith("(unadjusted)")
    plain = summarize(_confirmation({DEFAULT: [0.7, 0.8], "trial_2": [0.7, 0.9]}, [1, 2]))
    assert plain["settings"][0]["reported"] == {}


def test_comparisons_without_a_test_say_what_they_are(capsys):
    """A setting identical to the default on every seed, one a constant +0.012 from it,
    one paired on a single seed: no t test, no zero-width interval, no p; each says what
    it is, in the lines, the report's table and its header; in Holm's family each counts
    as p = 1, and the line says so."""
    from analysis._confirm import _setting_phrase, comparison_rows
    from search.checks.confirm_summary import print_confirmation
    from search.checks.paired import holm, paired_difference

    default = [0.667, 0.34, 0.136]
    tested = [0.70, 0.36, 0.18]  # +0.033, +0.02, +0.044: a spread, so a t test
    summary = summarize(_confirmation({
        DEFAULT: default, "trial_1": list(default), "trial_2": [0.679, 0.352, 0.148],
        "trial_3": [0.70, None, None], "trial_4": tested}, seeds=[10, 11, 12]))
    same, constant, single, real = summary["settings"]
    assert same["sentence"] == ("identical to the default on acc on every seed (3 seeds: "
                                "nothing to test); identical to the default on dis on "
                                "every seed (3 seeds: nothing to test)")
    assert constant["objectives"]["acc"]["sentence"] == (
        "differs from the default on acc by +0.012 on every seed (3 seeds: no spread, so no "
        "t test)")
    assert single["objectives"]["acc"]["sentence"] == (
        "differs from the default on acc by +0.033 on its one paired seed (no interval, no "
        "test)")
    assert single["sentence"].startswith("failed on 2 of its 3 runs; ")
    # Holm over the 4 settings chosen, the 3 without a test at p = 1
    p = paired_difference(tested, default).p
    assert real["objectives"]["acc"]["p_holm"] == pytest.approx(holm([p, 1, 1, 1])[0])
    assert real["objectives"]["acc"]["p_holm"] == pytest.approx(min(1.0, 4 * p))
    assert summary["family"]["acc"] == 4 and summary["untested"]["acc"] == 3
    print_confirmation(summary)
    out = capsys.readouterr().out
    assert "± 0.000" not in out and "p = 1.000" not in out and "+0.000 to +0.000" not in out
    assert "  trial_3 (1 paired seed): failed on 2 of its 3 runs; differs" in out
    assert ("a comparison without a test (one seed, or the same difference on every seed) "
            "has no p and counts in the family as p = 1") in out
    rows = {(r[0], r[1]): r for r in comparison_rows(summary)}
    assert rows[("#1", "acc")][4:] == ["identical on every seed", "no test"]
    assert rows[("#2", "acc")][4:] == ["+0.012 on every seed", "no test"]
    assert rows[("#3", "acc")][2:] == ["0.700", "0.667", "+0.033 on one seed", "no test"]
    assert _setting_phrase(same, summary) == "#1 is identical to it on every seed on acc and dis"
    assert _setting_phrase(constant, summary) == (
        "#2 differs from it by the same amount on every seed on acc and is identical to it on "
        "every seed on dis")


def test_failed_runs_leave_their_seed_out_of_the_pairs():
    summary = summarize(_confirmation({DEFAULT: [0.5, 0.6, 0.7, 0.8],
                                       "trial_1": [0.6, None, 0.8, 0.9]}, seeds=[5, 6, 7, 8]))
    (row,) = summary["settings"]
    assert row["seeds"] == [5, 7, 8] and summary["runs_failed"] == 1
    assert row["objectives"]["acc"]["difference"]["mean"] == pytest.approx(0.1)
    # every run has an outcome: complete, with the failure counted (a diverged run is a
    # result; waiting for it would keep the confirmation open for ever)
    assert summary["complete"] and summary["runs_done"] == 7


def test_the_same_settings_in_another_order_are_the_same_plan():
    from search.checks.confirm import _same_plan
    from search.objective import Objective

    pareto = Objective()
    stored = {"top": 2, "seeds": [7, 8, 9], "objectives": pareto.describe(),
              "settings": [{"key": DEFAULT}, {"key": "trial_4"}, {"key": "trial_9"}]}
    reordered = [{"key": DEFAULT}, {"key": "trial_9"}, {"key": "trial_4"}]
    assert _same_plan(stored, 2, 3, reordered, pareto)  # the front re-ranked the same two
    assert not _same_plan(stored, 2, 3, [{"key": DEFAULT}, {"key": "trial_9"},
                                         {"key": "trial_5"}], pareto)
    assert not _same_plan(stored, 2, 4, reordered, pareto)
    # a plan stored with only the names: a Pareto study resumes it; a scalar one cannot
    # compute its weighted score from it, so it starts a new confirmation
    names_only = {"names": pareto.names, "directions": pareto.directions}
    assert _same_plan({**stored, "objectives": names_only}, 2, 3, reordered, pareto)
    scalar = Objective(mode="scalar")
    old_scalar = {**stored, "objectives": {"names": scalar.names,
                                           "directions": scalar.directions}}
    assert not _same_plan(old_scalar, 2, 3, reordered, scalar)
    assert _same_plan({**stored, "objectives": scalar.describe()}, 2, 3, reordered, scalar)


def test_status_shows_the_confirmation_that_ran_last(tmp_path):
    from search.checks.confirm_summary import latest_summary

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    db.create_tables(engine)
    plan = {"objectives": {"names": ["acc"], "directions": ["maximize"]},
            "settings": [{"key": DEFAULT, "number": 0, "params": {}, "values": None},
                         {"key": "trial_1", "number": 1, "params": {}, "values": None}]}
    first = db.add_confirmation(engine, "s", top=1, seeds=[5, 6], **plan)
    second = db.add_confirmation(engine, "s", top=1, seeds=[7, 8, 9], **plan)
    assert latest_summary(engine, "s")["id"] == second  # newest, nothing run yet
    db.write_confirmation_run(engine, first, DEFAULT, 5, state="complete",
                              metrics={"acc": 0.5})  # the first one resumed afterwards
    assert latest_summary(engine, "s")["id"] == first
    engine.dispose()


def test_jobs_are_one_run_or_one_population_per_seed_and_skip_what_is_done():
    c = _confirmation({DEFAULT: [0.5, 0.6], "trial_1": [0.6, 0.7]}, seeds=[3, 4])
    c["runs"] = [r for r in c["runs"] if (r["setting"], r["seed"]) != ("trial_1", 4)]
    c["runs"][0]["state"] = "failed"  # (default, 3) failed: it runs again
    assert jobs_for(c, population=False) == [[(DEFAULT, 3)], [("trial_1", 4)]]
    assert jobs_for(c, population=True) == [[(DEFAULT, 3)], [("trial_1", 4)]]
    c["runs"] = []
    assert jobs_for(c, population=True) == [[(DEFAULT, 3), ("trial_1", 3)],
                                            [(DEFAULT, 4), ("trial_1", 4)]]


def test_a_default_outside_the_space_is_the_methods_whole_default():
    """A study whose space left the method's default out has no baseline trial: the
    confirmation's default is then the method's value of every searched parameter on a
    front trial's configuration, the choices that trial made (pairs, suppression, KL
    weights) undone."""
    from search.checks.confirm import select_settings
    from search.objective import Objective

    searched = {"stage1_epochs": 1, "stage2_epochs": 5, "use_independence_penalty": False,
                "independence_penalty": 0.5, "penalty_pairs": "zy_za_zx",
                "zay_suppression": "kl_weight", "beta_ay": 0.3, "beta_x": 2.0}
    config = RunConfig().replace(epochs=12, **searched).to_dict()
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    trial.set_user_attr("config", config)
    study.tell(trial, [0.7, 0.6])
    default, chosen = select_settings(study, Objective(), top=1)
    assert default["key"] == DEFAULT and default["number"] is None
    assert chosen["config"] == config
    # thirds, penalty on, λ 10, zy_za, gate, every β 1
    method = RunConfig().replace(epochs=12, stage1_epochs=4, stage2_epochs=4)
    assert default["config"]["stages"] == {**config["stages"],
                                           **method.to_dict()["stages"]}
    assert default["config"]["model"] == method.to_dict()["model"]


def test_a_study_without_trials_or_with_a_bad_plan_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=url, study_name="e", directions=["maximize", "maximize"])
    with pytest.raises(ConfirmError, match="no complete trial"):
        run_confirm(ConfirmOptions(storage=url, study="e", quiet=True))
    with pytest.raises(ConfirmError, match="--seeds must be at least 2"):
        run_confirm(ConfirmOptions(storage=url, study="e", seeds=1, quiet=True))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, local_ray):
    """A small study: the default and three random settings, one seed each, at the smoke
    test's size (the tests' tiny trials collapse zay, and a collapsed trial is not a
    candidate)."""
    tmp = tmp_path_factory.mktemp("confirm")
    url = f"sqlite:///{tmp / 'study.db'}"
    opts = tiny_options(url, "s", 4, tmp)
    opts.base_config = RunConfig().replace(**{**TINY_TRIAL, **SMOKE}).to_dict()
    opts.space = SearchSpace(epochs=SMOKE["epochs"])
    run_sweep(opts)
    return url, tmp


def _runs(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT setting, seed, state, finished_at FROM stagetune_confirmation_runs "
            "ORDER BY setting, seed")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


@pytest.mark.slow  # a sweep, then a confirmation driver stopped by SIGINT and resumed: ~2 min
def test_an_interrupted_confirmation_resumes_only_what_is_missing(swept, tmp_path):
    url, _ = swept
    work = tmp_path / "tune"
    command = [sys.executable, "-m", "search", "confirm", "--storage", url, "--study", "s",
               "--top", "1", "--seeds", "2", "--num-cpus", "1", "--max-concurrent", "1",
               "--work-dir", str(work)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _runs(url):
                break
        except sa.exc.OperationalError:  # the tables are being created
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    assert "run the same command again to resume" in out
    before = _runs(url)
    assert 1 <= len(before) < 4, out  # 2 settings x 2 seeds: stopped part-way

    summary = run_confirm(ConfirmOptions(storage=url, study="s", top=1, seeds=2,
                                         tune_dir=str(work), quiet=True))
    after = _runs(url)
    assert len(after) == 4 and {r[2] for r in after} == {"complete"}
    assert set(before) <= set(after)  # what was stored stays, untouched (same finished_at)
    study = optuna.load_study(study_name="s", storage=url)
    used = {t.user_attrs["config"]["seed"] for t in study.trials}
    assert not {r[1] for r in after} & used  # fresh seeds, paired across the settings
    assert len(study.trials) == 4  # the study's own trials are untouched
    assert summary["complete"] and len(summary["settings"]) == 1
    row = summary["settings"][0]
    assert row["seeds"] == summary["seeds"] and len(row["seeds"]) == 2
    assert set(row["objectives"]) == {"task_accuracy", "zay_independence_score"}

    # status says how far the study has been confirmed
    out = subprocess.run([sys.executable, "-m", "search", "status", "--storage", url,
                          "--study", "s"], env=env, capture_output=True, text=True, check=True)
    assert "confirmation against the default on 2 fresh seeds" in out.stdout
    assert row["key"] in out.stdout


def test_status_says_when_a_study_has_not_been_confirmed(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="n", directions=["maximize",
                                                                          "maximize"])
    study.tell(study.ask(), [0.5, 0.5])
    out = subprocess.run([sys.executable, "-m", "search", "status", "--storage", url,
                          "--study", "n"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True)
    assert "not confirmed" in out.stdout
    assert db.read_confirmations(sa.create_engine(url), "n") == []

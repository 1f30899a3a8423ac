"""What ``stagetune status`` prints: counts that agree with the reasons listed under them,
and values whose ± is a standard error over seeds, never a "±0" of one seed."""

from __future__ import annotations

import io

import optuna
from optuna.trial import TrialState, create_trial

from search.db.study import FAIL_REASON_ATTR, ORPHAN_ATTR
from search.driver.progress import format_value, format_values, print_summary, summarize
from search.objective import Objective

FEASIBLE = {"constraints": [-0.5]}


def _status(study: optuna.Study, objective: Objective) -> str:
    out = io.StringIO()
    print_summary(summarize(study, objective), file=out)
    return out.getvalue()


def test_failed_counts_only_failures_and_stopped_trials_are_said_apart():
    # one trial failed on its own; two were running when their sweep was stopped (stored
    # FAIL "driver stopped", re-queued, not counted) and one when its driver died
    objective = Objective()
    study = optuna.create_study(directions=objective.directions, study_name="s")
    study.add_trial(create_trial(values=[0.9, 0.8], system_attrs=FEASIBLE))
    study.add_trial(create_trial(state=TrialState.FAIL,
                                 user_attrs={FAIL_REASON_ATTR: "DivergenceError"}))
    for reason in ("driver stopped", "driver stopped", "driver lost"):
        study.add_trial(create_trial(state=TrialState.FAIL,
                                     user_attrs={FAIL_REASON_ATTR: reason, ORPHAN_ATTR: True}))
        study.enqueue_trial({})
    summary = summarize(study, objective)
    assert summary["counts"]["failed"] == 1 and summary["counts"]["orphaned"] == 3
    assert summary["fail_reasons"] == {"DivergenceError": 1}
    assert summary["requeued_reasons"] == {"driver stopped": 2, "driver lost": 1}
    lines = _status(study, objective).splitlines()
    assert lines[0] == ("study 's': 1 complete, 0 pruned, 1 failed, 0 running, 3 waiting, "
                        "3 interrupted (re-queued)")
    assert lines[1] == "  failed 1x: DivergenceError"
    assert lines[2] == ("  interrupted 1x: driver lost (their driver died while they ran; "
                        "not failures and not counted toward --n-trials: their settings "
                        "were queued to run again)")
    assert lines[3] == ("  interrupted 2x: driver stopped (the sweep was stopped (Ctrl-C or a "
                        "signal) while they ran; not failures and not counted toward "
                        "--n-trials: their settings were queued to run again)")
    assert not any(line.startswith("  failed") and "driver" in line for line in lines)


def test_a_value_has_a_standard_error_only_over_two_seeds_or_more():
    assert format_value(0.957414) == "0.95741"
    assert format_value(0.957414, 0.0031, 3) == "0.95741±0.0031"
    # one seed: its standard error is no number (a ±0 would read as certainty)
    assert format_value(0.957414, 0.0, 1) == "0.95741"
    assert format_value(0.957414, float("nan"), 1) == "0.95741"
    assert format_value(0.957414, float("nan"), None) == "0.95741"
    # several seeds that agree exactly say so, instead of "±0"
    assert format_value(0.957414, 0.0, 3) == "0.95741 (the same on all 3 seeds)"
    assert format_values(["a", "b"], [0.5, 0.25], [0.01, None], 2) == "a=0.5±0.01, b=0.25"


def test_status_prints_no_plus_minus_zero_for_a_single_replicate():
    objective = Objective(mode="scalar")
    study = optuna.create_study(directions=objective.directions)
    study.add_trial(create_trial(values=[0.957414], system_attrs=FEASIBLE,
                                 user_attrs={"scalar_score_se": 0.0, "replicates": 1.0}))
    text = _status(study, objective)
    assert "scalar_score=0.95741  " in text and "±" not in text
    replicated = optuna.create_study(directions=objective.directions)
    replicated.add_trial(create_trial(values=[0.9], system_attrs=FEASIBLE,
                                      user_attrs={"scalar_score_se": 0.0, "replicates": 3.0}))
    assert "scalar_score=0.9 (the same on all 3 seeds)" in _status(replicated, objective)


def test_status_json_is_strict_json_with_null_for_no_number(tmp_path, capsys):
    # one seed's standard error is NaN: Python's json would print NaN, which no strict
    # JSON reader (jq, JavaScript) accepts
    import json

    from search.cli import json_text, main
    from search.db.study import open_study

    assert json.loads(json_text({"p": float("nan"), "x": [float("inf"), 1.0]})) == {
        "p": None, "x": [None, 1.0]}
    url = f"sqlite:///{tmp_path / 's.db'}"
    opened = open_study(url, "s", Objective(), sampler="random", seed=0)
    opened.study.add_trial(create_trial(
        values=[0.9, 0.8], system_attrs=FEASIBLE,
        user_attrs={"task_accuracy_se": float("nan"), "replicates": 1.0}))
    opened.storage.engine.dispose()
    assert main(["status", "--storage", url, "--study", "s", "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out
    (front,) = json.loads(out)["front"]
    assert front["se"][0] is None and front["values"] == [0.9, 0.8]

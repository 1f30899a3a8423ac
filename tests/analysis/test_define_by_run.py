"""Studies shaped as real sweeps make them: per-trial bounds, text settings, no results yet."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from analysis.cli import main
from search.objective import Objective
from tests.analysis.conftest import new_study

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _study(url: str, name: str):
    return new_study(url, name, Objective())


def test_report_and_importance_take_per_trial_bounds_and_text_settings(tmp_path):
    """Stage 2's upper bound is what stage 1 leaves of the budget, so each trial stores its
    own distribution; a value outside the first trial's bound must not break analysis, and
    a searched text setting (zay_suppression) is binned as categories."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = _study(url, "dbr")
    budget = 9
    for i in range(12):
        s1 = (7, 2, 0, 5, 1, 3, 6, 2, 4, 0, 8, 1)[i]
        s2 = (budget - s1) if i % 3 else (budget - s1) // 2
        mode = ("gate", "kl_weight")[i % 2]
        study.add_trial(create_trial(
            values=[0.80 + 0.01 * s1, 0.99 - 0.002 * s2],
            params={"stage1_epochs": s1, "stage2_epochs": s2, "zay_suppression": mode},
            distributions={"stage1_epochs": IntDistribution(0, budget),
                           "stage2_epochs": IntDistribution(0, budget - s1),
                           "zay_suppression": CategoricalDistribution(["gate", "kl_weight"])},
            user_attrs={"feasible": True}))
    out = tmp_path / "rep"
    assert main(["report", "--storage", url, "--study", "dbr", "--out", str(out)]) == 0
    assert (out / "report.html").exists()
    # into the test's own folder: the default (stagetune-report/ in the working
    # directory) would leave a test study's importance beside a user's own report
    assert main(["importance", "--storage", url, "--study", "dbr",
                 "--out", str(tmp_path / "imp")]) == 0
    assert (tmp_path / "imp" / "importance.csv").exists()
    assert (tmp_path / "imp" / "importance.html").exists()
    assert main(["plot", "--figure", "effects", "--storage", url, "--study", "dbr",
                 "--out", str(tmp_path / "fig")]) == 0


def test_report_of_a_study_without_results_says_so(tmp_path):
    """Only failed and running trials: the report is written, listing what it cannot draw."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = _study(url, "failing")
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={},
                                     user_attrs={"fail_reason": "DivergenceError: nan"}))
    out = tmp_path / "rep"
    assert main(["report", "--storage", url, "--study", "failing", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "DivergenceError" in html

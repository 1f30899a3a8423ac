"""Replicates in the report: error bars and mean ± SE.

The study is built here with known means and standard errors.
"""

from __future__ import annotations

import json
import math

import pytest
from optuna.trial import create_trial

from analysis._load import load_study
from analysis._rank import rank_trials
from analysis._report import build_figures, write_report
from analysis.cli import main
from search.objective import Objective
from tests.analysis.conftest import DISTS, new_study

# (accuracy, independence, their standard errors): #0-#2 are the front, #1 the method's
# default, #3 dominated
TRIALS = [(0.90, 0.80, 0.010, 0.020), (0.85, 0.85, 0.005, 0.015),
          (0.80, 0.95, 0.012, 0.004), (0.70, 0.70, 0.030, 0.025)]


def _params(i: int) -> tuple[dict, dict]:
    params = {"stage1_epochs": i + 1, "stage2_epochs": 3, "use_independence_penalty": True,
              "independence_penalty": 10.0 ** (i - 1)}
    return params, {k: DISTS[k] for k in params}


def make_replicate_study(url: str, name: str = "rep") -> None:
    """A study swept with ``--replicates 3``: means as values, SEs as attributes."""
    study = new_study(url, name, Objective())
    study.set_user_attr("stagetune_replicates", 3)
    trials = []
    for i, (acc, ind, acc_se, ind_se) in enumerate(TRIALS):
        params, dists = _params(i)
        attrs = {"feasible": True, "baseline": i == 1, "zay_collapsed": 0.0,
                 "replicates": 3.0, "replicate_seeds": [0, 1, 2],
                 "task_accuracy_se": acc_se, "task_accuracy_sd": acc_se * math.sqrt(3),
                 "zay_independence_score_se": ind_se,
                 "zay_independence_score_sd": ind_se * math.sqrt(3)}
        trials.append(create_trial(values=[acc, ind], params=params, distributions=dists,
                                   user_attrs=attrs, system_attrs={"constraints": [-0.5]}))
    study.add_trials(trials)


@pytest.fixture
def rep_db(tmp_path):
    db = tmp_path / "rep.db"
    make_replicate_study(f"sqlite:///{db}")
    return db


def _traces(fig):
    return {t.name: t for t in fig.data}


def _report(db, out, study: str = "rep") -> str:
    data = load_study(f"sqlite:///{db}", study)
    write_report(data, out, png=False)
    return (out / "report.html").read_text()


# ------------------------------------------------------------------------- error bars


def test_pareto_points_carry_their_standard_errors_as_error_bars(rep_db):
    data = load_study(f"sqlite:///{rep_db}", "rep")
    fig = build_figures(data, rank_trials(data), which=("pareto",)).figures["pareto"]
    traces = _traces(fig)
    front = traces["Pareto front"]  # joined by accuracy: #2, #1, #0
    assert list(front.x) == [0.80, 0.85, 0.90]
    assert list(front.error_x.array) == [0.012, 0.005, 0.010]
    assert list(front.error_y.array) == [0.004, 0.015, 0.020]
    assert front.error_x.visible and front.error_y.symmetric
    rest = traces["trials"]
    assert (list(rest.error_x.array), list(rest.error_y.array)) == ([0.030], [0.025])
    default = traces["method default (thirds, λ=10)"]
    assert (list(default.error_x.array), list(default.error_y.array)) == ([0.005], [0.015])
    hover = front.hovertext[1]
    assert "task_accuracy: 0.850 ± 0.005" in hover
    assert "zay_independence_score: 0.850 ± 0.015" in hover and "R = 3 seeds" in hover
    assert "points are means over 3 paired seeds, bars ± 1 standard error" in \
        fig.layout.title.text


def test_a_study_without_replicates_draws_no_error_bars(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    fig = build_figures(data, rank_trials(data), which=("pareto",)).figures["pareto"]
    for trace in fig.data:
        assert trace.error_x.array is None and trace.error_y.array is None, trace.name
        assert not any("±" in h or "R = " in h for h in trace.hovertext or ()), trace.name
    assert "standard error" not in fig.layout.title.text


# ------------------------------------------------------------------------ ranked table


def test_the_ranked_table_shows_mean_and_standard_error(rep_db, tmp_path, capsys):
    page = _report(rep_db, tmp_path)
    assert "<th>task_accuracy ± SE</th><th>zay_independence_score ± SE</th>" in page
    assert "<td>0.850 ± 0.005</td><td>0.850 ± 0.015</td>" in page  # the default, #1
    assert "<td>0.700 ± 0.030</td><td>0.700 ± 0.025</td>" in page
    assert "Objectives are means ± standard error over 3 paired seeds" in page
    # the files keep the numbers apart, each SE in its own column beside its mean
    rows = json.loads((tmp_path / "ranked.json").read_text())
    by_number = {r["number"]: r for r in rows}
    assert by_number[1]["task_accuracy"] == 0.85 and by_number[1]["task_accuracy_se"] == 0.005
    assert by_number[3]["zay_independence_score_se"] == 0.025
    header = (tmp_path / "ranked.csv").read_text().splitlines()[0].split(",")
    assert header[4:8] == ["task_accuracy", "task_accuracy_se", "zay_independence_score",
                           "zay_independence_score_se"]
    assert main(["rank", "--storage", f"sqlite:///{rep_db}", "--study", "rep", "--out",
                 str(tmp_path / "rank")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Objectives are means ± standard error over 3 paired seeds")
    assert "0.850 ± 0.005" in out and "task_accuracy_se" not in out


def test_a_study_without_replicates_shows_plain_values(study_db, tmp_path):
    page = _report(study_db, tmp_path, "known")
    assert "± SE" not in page and "paired seeds" not in page
    assert "<td>0.950</td><td>0.800</td>" in page
    assert "task_accuracy_se" not in (tmp_path / "ranked.csv").read_text()

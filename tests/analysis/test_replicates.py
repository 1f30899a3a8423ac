"""Replicates and confirmations in the report: error bars, mean ± SE, the confirmation.

The studies are built here with known means, standard errors and confirmation runs, so
every number the report shows can be worked out by hand.
"""

from __future__ import annotations

import html
import json
import math
import re

import pytest
import sqlalchemy as sa
from optuna.trial import create_trial

from analysis._figures import SUBTITLE_WIDTH, subtitle_lines
from analysis._load import load_study, open_read_only
from analysis._rank import rank_trials
from analysis._report import build_figures, write_report
from analysis.cli import main
from search.db.storage import add_confirmation, create_tables, write_confirmation_run
from search.objective import Objective
from tests.analysis.conftest import (
    DISTS,
    assert_report_imports_no_torch_or_ray,
    checksum,
    new_study,
    subtitle,
)

OBJECTIVES = ["task_accuracy", "zay_independence_score"]
# (accuracy, independence, their standard errors): #0-#2 are the front, #1 the method's
# default, #3 dominated
TRIALS = [(0.90, 0.80, 0.010, 0.020), (0.85, 0.85, 0.005, 0.015),
          (0.80, 0.95, 0.012, 0.004), (0.70, 0.70, 0.030, 0.025)]
SEEDS = [10, 11, 12]  # the confirmation's fresh seeds
# per-seed confirmation values (accuracy, independence); trial_0 is the default exactly,
# trial_2 is 0.10 better on accuracy and 0.10 worse on independence, give or take 0.01
DEFAULT_RUNS = [(0.80, 0.90), (0.82, 0.91), (0.84, 0.92)]
BETTER_RUNS = [(a + d, i - d) for (a, i), d in zip(DEFAULT_RUNS, (0.09, 0.10, 0.11),
                                                    strict=True)]


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


def confirm(url: str, name: str = "rep", *, numbers: tuple[int, int] = (0, 2),
            skip: tuple = (), fail: tuple = (), collapsed: tuple = ()) -> None:
    """Store a confirmation of two trials (``numbers``) against the default (#1) on
    ``SEEDS``: the first as the default exactly (``DEFAULT_RUNS``), the second as
    ``BETTER_RUNS``; the (setting, seed) runs in ``skip`` are missing, those in ``fail``
    failed, those in ``collapsed`` had zay collapse."""
    engine = sa.create_engine(url)
    create_tables(engine)
    settings = [{"key": "default", "number": 1, "params": _params(1)[0],
                 "values": list(TRIALS[1][:2])}]
    settings += [{"key": f"trial_{i}", "number": i, "params": _params(i)[0],
                  "values": list(TRIALS[i][:2])} for i in numbers]
    cid = add_confirmation(engine, name, top=2, seeds=SEEDS,
                           objectives={"names": OBJECTIVES,
                                       "directions": ["maximize", "maximize"]},
                           settings=settings)
    runs = {"default": DEFAULT_RUNS, f"trial_{numbers[0]}": DEFAULT_RUNS,
            f"trial_{numbers[1]}": BETTER_RUNS}
    for key, values in runs.items():
        for seed, (acc, ind) in zip(SEEDS, values, strict=True):
            if (key, seed) in skip:
                continue
            if (key, seed) in fail:
                write_confirmation_run(engine, cid, key, seed, state="failed", metrics={},
                                       reason="CUDA out of memory")
                continue
            write_confirmation_run(engine, cid, key, seed, state="complete",
                                   metrics={"task_accuracy": acc,
                                            "zay_independence_score": ind,
                                            "zay_collapsed": float((key, seed) in collapsed)})
    engine.dispose()


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


def test_every_subtitle_line_fits_the_figure_and_keeps_every_clause(rep_db):
    # the replicates' clause and the hypervolume's made one line of over 160 characters,
    # which a static export cut at the figure's edge
    data = load_study(f"sqlite:///{rep_db}", "rep")
    fig = build_figures(data, rank_trials(data), which=("pareto",)).figures["pareto"]
    lines = re.findall(r"<sup>(.*?)</sup>", fig.layout.title.text)
    assert len(lines) >= 2 and all(len(line) <= SUBTITLE_WIDTH for line in lines), lines
    shown = subtitle(fig)
    for clause in ("front: 3 of 4 ranked trials",
                   "points are means over 3 paired seeds, bars ± 1 standard error",
                   "hypervolume ", "against the reference point (task_accuracy="):
        assert clause in shown
    assert fig.layout.margin.t >= 80 + 20 * len(lines)  # room for every line


def test_subtitle_lines_break_only_between_clauses():
    assert subtitle_lines(["a" * 50, "b" * 50, "c" * 30], width=110) == [
        "a" * 50 + "; " + "b" * 50, "c" * 30]
    assert subtitle_lines(["a" * 50, "b" * 58], width=110) == ["a" * 50 + "; " + "b" * 58]
    assert subtitle_lines(["a" * 50, "b" * 59], width=110) == ["a" * 50, "b" * 59]
    assert subtitle_lines(["x" * 200, "y"], width=110) == ["x" * 200, "y"]
    assert subtitle_lines([]) == []


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
    assert ("<th>task_<wbr>accuracy ± SE</th><th>zay_<wbr>independence_<wbr>score ± SE</th>"
            in page)
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
    assert out.splitlines()[1].startswith("Objectives are means ± standard error over 3 "
                                          "paired seeds")
    assert "0.850 ± 0.005" in out and "task_accuracy_se" not in out


def test_a_study_without_replicates_shows_plain_values(study_db, tmp_path):
    page = _report(study_db, tmp_path, "known")
    assert "± SE" not in page and "paired seeds" not in page
    assert "<td>0.950</td><td>0.800</td>" in page
    assert "task_accuracy_se" not in (tmp_path / "ranked.csv").read_text()


# ----------------------------------------------------------------------- confirmation


def _t_two_dof(t: float) -> float:
    """Two-sided p of Student's t with 2 degrees of freedom (closed form)."""
    return 1.0 - abs(t) / math.sqrt(t * t + 2.0)


def test_the_confirmation_section_states_known_comparisons(rep_db, tmp_path):
    url = f"sqlite:///{rep_db}"
    confirm(url)
    before = checksum(rep_db)
    page = _report(rep_db, tmp_path)
    assert checksum(rep_db) == before  # read only
    # trial_2: differences 0.09, 0.10, 0.11 (mean 0.10, sd 0.01) on accuracy and their
    # negatives on independence: t = ±0.1/(0.01/√3) = ±10√3 on 2 df, the 95%
    # half-width t_0.975,2 · se with t_0.975,2 = 0.95/√(2·0.975·0.025); trial_0's
    # differences are all 0 (no test: it counts in Holm's family as p = 1), so Holm
    # doubles trial_2's p
    se = 0.01 / math.sqrt(3)
    p_holm = 2 * _t_two_dof(10 * math.sqrt(3))
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * se
    assert f"{p_holm:.3f}" == "0.007" and f"{se:.3f}" == "0.006"
    better = (f"Beats the default on task_accuracy by 0.100 ± 0.006 (95% CI "
              f"{0.1 - half:+.3f} to {0.1 + half:+.3f}, Holm p = 0.007)")
    worse = (f"Is worse than the default on zay_independence_score by 0.100 ± 0.006 "
             f"(95% CI {-0.1 - half:+.3f} to {-0.1 + half:+.3f}, Holm p = 0.007)")
    same = ("Identical to the default on task_accuracy on every seed (3 seeds: nothing to "
            "test)")  # no t test, no zero-width interval, no p
    section = page.split("<section id='confirmation'>")[1].split("</section>")[0]
    text = html.unescape(section)
    assert better in text and worse in text and same in text
    assert "95% CI +0.075 to +0.125" in better  # the half-width is 0.0248
    assert text.index("<h3>Trial #0</h3>") < text.index(same) < text.index(
        "<h3>Trial #2</h3>") < text.index(better)
    assert ("stage1_epochs=3, stage2_epochs=3, use_independence_penalty=True, "
            "independence_penalty=10 · paired seeds 10, 11, 12") in text
    assert "on 3 fresh seeds (10, 11, 12)" in text and "9 of 9 runs done, 0 failed" in text
    assert "paired t test" in text and "Holm's correction across the 2 settings" in text
    assert "α = 0.05" in text and "Incomplete" not in text
    # the compact table: mean ± SE of each side, the difference with its interval, p
    assert ("<tr><td>#2</td><td>task_accuracy</td><td>0.920 ± 0.017</td>"
            "<td>0.820 ± 0.012</td><td>+0.100 (+0.075 to +0.125)</td><td>0.007</td></tr>"
            ) in section
    assert ("<tr><td>#2</td><td>zay_independence_score</td><td>0.810 ± 0.000</td>"
            "<td>0.910 ± 0.006</td><td>-0.100 (-0.125 to -0.075)</td><td>0.007</td></tr>"
            ) in section
    assert ("<tr><td>#0</td><td>task_accuracy</td><td>0.820 ± 0.012</td>"
            "<td>0.820 ± 0.012</td><td>identical on every seed</td><td>no test</td></tr>"
            ) in section
    summary = html.unescape(page.split("<div class='summary'>")[1].split("</div>")[0])
    assert ("Front confirmation against the method default on 3 fresh paired seeds "
            "(complete): #0 is identical to it on every seed on task_accuracy and "
            "zay_independence_score; #2 beats it on task_accuracy "
            "and is worse on zay_independence_score.") in summary


def test_a_setting_whose_zay_collapsed_is_reported_infeasible_not_a_win(rep_db, tmp_path):
    url = f"sqlite:///{rep_db}"
    confirm(url, collapsed=(("trial_2", 11),))  # #2 "beats" the default on accuracy
    page = html.unescape(_report(rep_db, tmp_path))
    summary = page.split("<div class='summary'>")[1].split("</div>")[0]
    assert "#2 is infeasible (zay collapsed on 1 of its 3 runs)." in summary
    assert "#2 beats" not in summary
    assert "paired seeds 10, 11, 12 · infeasible (zay collapsed on 1 of its 3 runs)" in page


def test_an_incomplete_confirmation_says_how_to_finish_it(rep_db, tmp_path):
    url = f"sqlite:///{rep_db}"
    confirm(url, numbers=(0, 3), skip=(("trial_0", 12),), fail=(("trial_3", 12),))
    page = html.unescape(_report(rep_db, tmp_path))
    assert (f"Incomplete: 7 of 9 runs done; run <code>stagetune confirm --storage {url} "
            "--study rep --top 2 --seeds 3</code> again to finish.") in page
    assert (f"Failed runs: trial_3 seed 12: CUDA out of memory; their seeds leave the "
            f"comparisons of their setting. <code>stagetune confirm --storage {url} --study "
            "rep --top 2 --seeds 3</code> retries them.") in page
    assert "7 of 9 runs done, 1 failed" in page
    assert "paired seeds 10, 11</p>" in page  # #0: seed 12 is unpaired
    # #3 is dominated: a confirmation of an earlier front
    assert ("paired seeds 10, 11 · failed on 1 of its 3 runs · no longer on the front (the "
            "sweep went on after this confirmation)") in page
    assert page.count("no longer on the front") == 1
    assert "on 3 fresh paired seeds (incomplete: 7 of 9 runs done, 1 failed)" in page


def test_an_unconfirmed_study_gives_the_command_with_the_password_hidden(rep_db, tmp_path):
    engine = open_read_only(f"sqlite:///{rep_db}")
    url = "postgresql://ana:SecretPw@db.example:5432/studies"
    data = load_study(url, "rep", engine=engine)  # as given on the command line
    write_report(data, tmp_path, png=False)
    page = html.unescape((tmp_path / "report.html").read_text())
    assert "SecretPw" not in page
    assert ("Not confirmed: the front's settings have not been re-run against the method's "
            "default on fresh seeds. To do it: <code>stagetune confirm --storage "
            "'postgresql://ana:***@db.example:5432/studies' --study rep</code>") in page
    summary = page.split("<div class='summary'>")[1].split("</div>")[0]
    assert "Not confirmed: the front has not been re-run against the method default" in summary
    engine.dispose()


def test_a_report_with_a_confirmation_imports_no_ray(rep_db, tmp_path):
    confirm(f"sqlite:///{rep_db}")
    assert_report_imports_no_torch_or_ray(rep_db, "rep", tmp_path)



def test_a_confirmed_setting_is_overtaken_only_when_confirm_would_no_longer_choose_it():
    from types import SimpleNamespace

    import pandas as pd

    from analysis._confirm import confirmable

    # ranked best first: #4, the default #0, #2, #7 (a scalar study's front is #4 alone)
    ranked = pd.DataFrame({"number": [4, 0, 2, 7], "pareto_rank": [0, 1, 2, 3],
                           "baseline": [False, True, False, False]})
    scalar, pareto = SimpleNamespace(scalar=True), SimpleNamespace(scalar=False)
    # --top 2 of a scalar study: the two best besides the default, #4 and #2
    assert confirmable(scalar, ranked, {"top": 2}) == {4, 2}
    # an infeasible trial ranked in (--include-infeasible) is not one confirm would take
    infeasible = ranked.assign(feasible=[True, True, False, True])
    assert confirmable(scalar, infeasible, {"top": 2}) == {4, 7}
    assert confirmable(pareto, ranked, {"top": 2}) == {4}
    assert confirmable(scalar, ranked, None) == set()

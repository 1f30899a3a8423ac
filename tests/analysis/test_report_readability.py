"""The report reads at a glance (issue 26, item 4): each trial labelled once, error bars
that cannot pass for reference lines, learning curves counted from epoch 1 whose shared
stretches are marked, table headers that break between words only, a crowding column that
says what infinity means, and titles clear of the axis titles in a real browser.

The study is built here, with known means, standard errors and per-epoch rows, so every
expected value can be worked out by hand.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from optuna.trial import create_trial

from analysis._figures import BAR_REACH, CUT_BAR_NAME, coinciding_runs, curve_points
from analysis._format import FRONT_END
from analysis._load import load_study
from analysis._rank import rank_trials
from analysis._report import _STYLE, build_figures, header_html, table_cells, write_report
from search.db.storage import create_tables, write_epoch
from search.objective import Objective
from tests.analysis.conftest import DISTS, new_study

OBJECTIVES = ["task_accuracy", "zay_independence_score"]
# (accuracy, independence, their standard errors) over 2 seeds. The front: #1, #0 (the
# method's default) and #2; #3 and #4 the next front. The default's accuracy SE (0.2) is
# over three times the points' whole accuracy spread (0.72 - 0.66 = 0.06).
TRIALS = [(0.70, 0.995, 0.200, 0.001), (0.72, 0.990, 0.004, 0.002),
          (0.69, 0.997, 0.006, 0.0005), (0.71, 0.985, 0.003, 0.003),
          (0.66, 0.992, 0.010, 0.001)]
DEFAULT = 0
# val_loss per stored epoch (0-5; stages 1, 1, 2, 2, 3, 3): #1 and #3 alike throughout,
# #0 with them for 4 epochs, #2 for 2 (trials that share their first stages); #4 alone
SHARED = [100.0, 80.0, 70.0, 64.0, 60.0, 58.0]
CURVES = {0: [*SHARED[:4], 61.0, 59.0], 1: SHARED, 2: [*SHARED[:2], 72.0, 66.0, 62.0, 60.0],
          3: SHARED, 4: [110.0, 90.0, 81.0, 75.0, 71.0, 69.0]}


def make_readable_study(url: str, name: str = "readable") -> None:
    """A study swept with ``--replicates 2`` whose figures showed each problem of item 4."""
    study = new_study(url, name, Objective())
    study.set_user_attr("stagetune_replicates", 2)
    trials = []
    for i, (acc, ind, acc_se, ind_se) in enumerate(TRIALS):
        params = {"stage1_epochs": 2, "stage2_epochs": 2 + i, "use_independence_penalty": True,
                  "independence_penalty": 10.0 ** (i / 2 - 1)}
        attrs = {"feasible": True, "baseline": i == DEFAULT, "zay_collapsed": 0.0,
                 "replicates": 2.0, "replicate_seeds": [0, 1],
                 "task_accuracy_se": acc_se, "task_accuracy_sd": acc_se * math.sqrt(2),
                 "zay_independence_score_se": ind_se,
                 "zay_independence_score_sd": ind_se * math.sqrt(2)}
        trials.append(create_trial(values=[acc, ind], params=params,
                                   distributions={k: DISTS[k] for k in params},
                                   user_attrs=attrs, system_attrs={"constraints": [-0.5]}))
    study.add_trials(trials)
    from optuna.storages import RDBStorage

    storage = RDBStorage(url)
    create_tables(storage.engine)
    for t in study.get_trials():
        for epoch, value in enumerate(CURVES[t.number]):
            stage = 1 + epoch // 2
            write_epoch(storage.engine, t._trial_id, epoch, stage,
                        {"epoch": float(epoch), "stage": float(stage), "val_loss": value})
    storage.engine.dispose()


@pytest.fixture
def readable(tmp_path):
    url = f"sqlite:///{tmp_path / 'readable.db'}"
    make_readable_study(url)
    data = load_study(url, "readable")
    return data, rank_trials(data)


def _traces(fig):
    return {t.name: t for t in fig.data}


# ---------------------------------------------------------------------------- Pareto


def test_the_default_on_the_front_is_labelled_once(readable):
    data, ranked = readable
    fig = build_figures(data, ranked, which=("pareto",)).figures["pareto"]
    labels = [text for t in fig.data for text in (t.text or ()) if text.startswith("#")]
    assert sorted(labels) == ["#0 default", "#1", "#2"]  # not "#0" as well
    front = _traces(fig)["Pareto front"]
    assert 0.70 in front.x  # the default is on the front, drawn there, labelled by its star


def test_an_error_bar_is_cut_at_a_third_of_the_points_spread_and_says_so(readable):
    data, ranked = readable
    fig = build_figures(data, ranked, which=("pareto",)).figures["pareto"]
    cap_x = BAR_REACH * (0.72 - 0.66)
    cap_y = BAR_REACH * (0.997 - 0.985)
    for trace in fig.data:  # no plotly bar is drawn longer than its axis' cap
        for bars, cap in ((trace.error_x, cap_x), (trace.error_y, cap_y)):
            if bars is not None and bars.array is not None:
                drawn = [*bars.array, *(bars.arrayminus or ())]
                assert max(drawn) <= cap + 1e-12, trace.name
    default = _traces(fig)["method default (thirds, λ=10)"]
    assert list(default.error_x.array) == [0.0] and list(default.error_y.array) == [0.001]
    # the default's accuracy bar is drawn cap long each side, ending in arrowheads that
    # hover with the real standard error
    lines = [t for t in fig.data if t.legendgroup == "cut" and t.mode == "lines"]
    assert len(lines) == 1
    xs = list(lines[0].x)
    assert xs[2] is None and xs[5] is None  # two segments, each from the point outwards
    assert [xs[k] for k in (0, 1, 3, 4)] == pytest.approx([0.70, 0.70 - cap_x, 0.70,
                                                           0.70 + cap_x])
    ends = _traces(fig)[CUT_BAR_NAME]
    assert list(ends.x) == pytest.approx([0.70 - cap_x, 0.70 + cap_x])
    assert list(ends.y) == [0.995, 0.995]
    assert list(ends.marker.symbol) == ["triangle-left", "triangle-right"]
    assert all("trial #0" in h and "0.200" in h for h in ends.hovertext)
    assert list(ends.text) == ["", "±0.200"]  # and beside it, for a static PNG
    # the other bars are whole, as stored (the front's #2, #0 and #1: the default cut)
    front = _traces(fig)["Pareto front"]
    assert list(front.error_x.array) == list(front.error_x.arrayminus) == [0.006, 0.0, 0.004]
    assert front.error_y.symmetric and list(front.error_y.array) == [0.0005, 0.001, 0.002]
    # the bars are light: none is drawn in opaque black
    assert all(t.error_x.color != "black" for t in fig.data
               if t.error_x is not None and t.error_x.array is not None)


# -------------------------------------------------------------------- learning curves


def test_learning_curves_count_from_epoch_1_as_the_trainer_prints(readable):
    data, ranked = readable
    fig = build_figures(data, ranked, which=("curves",)).figures["curves"]
    lines = [t for t in fig.data if t.legendgroup and t.legendgroup.startswith("trial ")]
    assert min(min(t.x) for t in lines) == 1 and max(max(t.x) for t in lines) == 6
    stage1 = next(t for t in lines if t.legendgroup == "trial 4" and t.line.dash == "dot")
    assert list(stage1.x) == [1, 2, 3]  # stage 1 is epochs 1-2, joined to stage 2's first
    assert list(stage1.y) == CURVES[4][:3]
    assert 0 < fig.layout.xaxis.range[0] < 1 and 6 < fig.layout.xaxis.range[1] < 7  # no epoch 0


def test_coinciding_curves_are_found_and_marked(readable):
    data, ranked = readable
    order = [int(n) for n in ranked["number"]]
    assert order == [1, 2, 0, 3, 4]  # the front by crowding, then the next front
    points = {n: curve_points([{"epoch": float(e), "stage": 1.0 + e // 2, "val_loss": v}
                               for e, v in enumerate(CURVES[n])], "val_loss") for n in order}
    runs = coinciding_runs(points)
    assert [(r.trials, r.first, r.last, r.value, r.count) for r in runs.itertuples()] == [
        ([1, 2, 0, 3], 1, 2, 80.0, 4), ([1, 0, 3], 1, 4, 64.0, 3), ([1, 3], 1, 6, 58.0, 2)]
    fig = build_figures(data, ranked, which=("curves",)).figures["curves"]
    counts = next(t for t in fig.data if t.mode == "text")
    assert list(counts.text) == ["×4", "×3", "×2"]
    assert list(zip(counts.x, counts.y, strict=True)) == [(2, 80.0), (4, 64.0), (6, 58.0)]
    rings = _traces(fig)["curves coincide (×N: N part here)"]
    assert (1, 100.0) in set(zip(rings.x, rings.y, strict=True))
    assert (5, 60.0) in set(zip(rings.x, rings.y, strict=True))  # #1 and #3 still together
    assert (5, 62.0) not in set(zip(rings.x, rings.y, strict=True))  # #2 alone there
    # a shared point hovers with every trial it is shared with
    stage1_of_2 = next(t for t in fig.data if t.legendgroup == "trial 2" and t.line.dash == "dot")
    assert stage1_of_2.hovertext[1].endswith("the same in #1, #0, #3")
    assert "the same in" not in stage1_of_2.hovertext[2]  # epoch 3: #2 has parted
    # one trial's view shows its curve alone, without the marks of the others
    only_4 = next(b for b in fig.layout.updatemenus[0].buttons if b.label == "trial #4")
    shown = [t for t, v in zip(fig.data, only_4.args[0]["visible"], strict=True) if v]
    assert {t.legendgroup for t in shown} == {"trial 4", "stages"}


# ------------------------------------------------------------------------ ranked table


def test_crowding_says_a_front_end_instead_of_inf(readable):
    data, ranked = readable
    cells = table_cells(data, ranked)
    # #0 is the front's middle: (0.72-0.69)/0.03 + (0.997-0.990)/0.007 = 2
    assert cells["crowding"] == [FRONT_END, FRONT_END, "2", FRONT_END, FRONT_END]
    assert "inf" not in " ".join(cells["crowding"])
    assert "∞" in FRONT_END and "end" in FRONT_END
    note = re.search(r"<th title='([^']*)'>crowding</th>", header_html("crowding"))
    assert note and "end points" in note.group(1) and "infinite" in note.group(1)


def test_headers_may_break_after_underscores_and_at_spaces_only():
    th = re.search(r"table\.sortable th\{[^}]*\}", _STYLE).group(0)
    assert "anywhere" not in th and "break-all" not in th and "overflow-wrap:normal" in th
    assert header_html("zay_independence_score ± SE") == (
        "<th>zay_<wbr>independence_<wbr>score ± SE</th>")
    assert header_html("position").endswith(">position</th>")


# -------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK_SCRIPT = Path(__file__).with_name("layout_check.js")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_in_a_browser_titles_clear_the_axes_and_headers_keep_their_words(readable, tmp_path):
    """At the width the report test uses (1300 px), Chromium lays the report out and
    layout_check.js measures it: no figure's title block overlaps another text of its
    figure (the parallel coordinates' axis titles were under its subtitle), and no ranked
    table header breaks inside a word ("posit ion")."""
    data, _ = readable
    write_report(data, tmp_path, png=False)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", f"<script>{CHECK_SCRIPT.read_text()}</script>"
                                               "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--window-size=1300,2400", "--dump-dom", f"file://{checked}"],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', dom.stdout)
    assert found, dom.stderr[-2000:]
    result = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<")
                        .replace("&gt;", ">"))
    assert result["figures"] >= 6
    assert "fig-parallel" in result["titles"]
    assert {fig: hits for fig, hits in result["titles"].items() if hits} == {}
    assert "position" in result["headers"] and "number" in result["headers"]
    assert {h: words for h, words in result["headers"].items() if words} == {}


def test_the_reports_counts_keep_interrupted_trials_apart_from_failures():
    """As status counts them: trials a stopped driver left (stored FAIL, re-queued) are
    'interrupted', not failed, and their reason is not listed among the failures."""
    from types import SimpleNamespace

    import pandas as pd

    from analysis._report import counts_sentence, state_counts

    data = SimpleNamespace(trials=pd.DataFrame({
        "state": ["COMPLETE", "FAIL", "FAIL", "FAIL"], "feasible": [True] * 4,
        "fail_reason": [None, "driver stopped", "driver stopped", "ValueError: bad"],
        "stagetune_orphaned": [None, True, True, None]}))
    counts = state_counts(data)
    assert (counts["failed"], counts["interrupted"]) == (1, 2)
    text = counts_sentence(data)
    assert "1 failed, 2 interrupted (re-queued)" in text
    assert "Failures: ValueError: bad (×1)." in text
    assert "driver stopped (×2)" in text.split("Failures:")[1].split("Interrupted")[1]

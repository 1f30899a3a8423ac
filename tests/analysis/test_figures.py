from __future__ import annotations

import numpy as np

from analysis._figures import effects_figure, learning_curves_figure, pareto_figure
from analysis._load import load_study
from analysis._rank import rank_trials
from analysis._report import build_figures
from tests.analysis.conftest import FRONT, POINTS


def _traces(fig):
    return {t.name: t for t in fig.data}


def test_pareto_figure_highlights_the_front_and_marks_the_default(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    ranked = rank_trials(data)
    fig = pareto_figure(ranked, data.objectives)
    traces = _traces(fig)
    front = traces["Pareto front"]
    assert sorted(zip(front.x, front.y, strict=True)) == sorted(POINTS[i] for i in FRONT)
    assert list(front.x) == sorted(front.x)  # drawn as a staircase left to right
    default = traces["method default (thirds, λ=10)"]
    assert (default.x[0], default.y[0]) == POINTS[1]
    assert sorted(zip(traces["trials"].x, traces["trials"].y, strict=True)) == sorted(
        [POINTS[3], POINTS[4]])
    assert "stage1_epochs" in front.hovertext[0]


def test_learning_curves_are_coloured_by_stage():
    rows = [{"epoch": float(e), "stage": float(1 if e < 2 else 2 if e < 4 else 3),
             "val_loss": 10.0 - e} for e in range(6)]
    fig = learning_curves_figure({7: rows})
    by_stage = {t.name: t for t in fig.data}
    assert list(by_stage["stage 1"].x) == [0, 1, 2]  # joined to the next stage's start
    assert list(by_stage["stage 3"].x) == [4, 5]
    assert len({t.line.color for t in fig.data}) == 3


def test_effects_figure_uses_a_log_axis_for_lambda(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    fig = effects_figure(rank_trials(data), data.objectives)
    lam_axes = [k for k, v in fig.layout.to_plotly_json().items()
                if k.startswith("xaxis") and v.get("type") == "log"]
    assert len(lam_axes) == 2  # one per objective
    boxes = [t for t in fig.data if t.type == "box"]
    assert {b.name for b in boxes} == {"on", "off"}
    # penalty on: feasible complete trials 0, 2, 4; off: 1, 3 (first row: accuracy)
    on_acc, off_acc = (next(b for b in boxes if b.name == name) for name in ("on", "off"))
    assert sorted(on_acc.y) == sorted(POINTS[i][0] for i in (0, 2, 4))
    assert sorted(off_acc.y) == sorted(POINTS[i][0] for i in (1, 3))


def test_every_figure_is_built_from_the_records(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    figures = build_figures(data, rank_trials(data))
    assert set(figures) == {"pareto", "hypervolume", "curves", "effects", "parallel", "heatmap"}
    hv = figures["hypervolume"].data[0]
    assert np.allclose(hv.y, [0.76, 0.85, 0.906, 0.906, 0.906])
    dims = {d["label"]: d["values"] for d in figures["parallel"].data[0].dimensions}
    assert set(dims) >= {"stage 1 epochs", "task_accuracy", "zay_independence_score"}
    assert figures["heatmap"].layout.title.text.startswith("Latent correlations of trial")

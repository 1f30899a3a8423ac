from __future__ import annotations

import shutil
import struct

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analysis._figures import (
    effects_figure,
    learning_curves_figure,
    parallel_coordinates_figure,
    pareto_figure,
)
from analysis._format import decimals_needed, float_formatter
from analysis._load import load_study
from analysis._rank import rank_trials
from analysis._report import build_figures
from search.pareto import pareto_ranks
from tests.analysis.conftest import FRONT, POINTS


def _traces(fig):
    return {t.name: t for t in fig.data}


def _random_ranked(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    acc = np.round(rng.uniform(0.5, 1.0, n), 3)  # rounding makes ties, as real scores have
    ind = np.round(1.5 - acc + rng.normal(0, 0.1, n), 3)
    df = pd.DataFrame({"number": np.arange(n), "task_accuracy": acc,
                       "zay_independence_score": ind, "baseline": np.arange(n) == 0})
    df["pareto_rank"] = pareto_ranks(df[["task_accuracy", "zay_independence_score"]]
                                     .to_numpy(), ["maximize", "maximize"])
    return df


@pytest.mark.parametrize("n", [7, 300, 3000])
def test_the_front_line_passes_through_attained_points_only(n):
    objectives = ["task_accuracy", "zay_independence_score"]
    ranked = _random_ranked(n, seed=n)
    fig = pareto_figure(ranked, objectives)
    front = _traces(fig)["Pareto front"]
    assert front.line.shape in (None, "linear")  # no staircase corners ("hv" adds them)
    attained = set(zip(ranked["task_accuracy"], ranked["zay_independence_score"],
                       strict=True))
    vertices = list(zip(front.x, front.y, strict=True))
    assert all(v in attained for v in vertices)  # every vertex is a trial's point
    expected = ranked[ranked["pareto_rank"] == 0]
    assert sorted(vertices) == sorted(zip(expected["task_accuracy"],
                                          expected["zay_independence_score"], strict=True))
    # joined left to right, the other objective never rises: a monotone front
    assert list(front.x) == sorted(front.x) and list(front.y) == sorted(front.y, reverse=True)
    # the default (#0) is labelled by its own trace, once
    assert list(front.text) == ["" if k == 0 else f"#{k}" for k in expected.sort_values(
        objectives)["number"]]
    density = [t for t in fig.data if t.type == "histogram2d"]
    assert bool(density) == (n > 2000)  # large studies become a density, front on top
    assert fig.data[-2].name == "Pareto front"


def test_pareto_figure_states_reference_and_hypervolume_and_labels_the_default(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    figures = build_figures(data, rank_trials(data)).figures
    fig = figures["pareto"]
    traces = _traces(fig)
    front = traces["Pareto front"]
    assert sorted(zip(front.x, front.y, strict=True)) == sorted(POINTS[i] for i in FRONT)
    default = traces["method default (thirds, λ=10)"]
    assert (default.x[0], default.y[0]) == POINTS[1] and default.text[0] == "#1 default"
    title = fig.layout.title.text
    # 0.95*0.80 + 0.90*0.10 + 0.80*0.07 = 0.906 against (0, 0)
    assert "hypervolume 0.906 " in title
    assert "reference point (task_accuracy=0, zay_independence_score=0)" in title
    assert "stage1_epochs" in front.hovertext[0]
    hv_title = figures["hypervolume"].layout.title.text
    assert "task_accuracy=0, zay_independence_score=0" in hv_title


def test_learning_curves_one_colour_per_trial_dash_by_stage_top_n_and_selector():
    def rows(offset: float):
        return [{"epoch": float(e), "stage": float(1 if e < 2 else 2 if e < 4 else 3),
                 "val_loss": 10.0 - e + offset} for e in range(6)]

    fig = learning_curves_figure({7: rows(0), 3: rows(1)}, of=40)
    curves = [t for t in fig.data if t.x[0] is not None]
    by_trial: dict[str, set] = {}
    for t in curves:
        by_trial.setdefault(t.legendgroup, set()).add(t.line.color)
    assert len(by_trial) == 2 and all(len(c) == 1 for c in by_trial.values())
    assert len({next(iter(c)) for c in by_trial.values()}) == 2  # distinct colours
    dashes = {t.line.dash for t in curves if t.legendgroup == "trial 7"}
    assert dashes == {"dot", "dash", "solid"}
    stage1 = next(t for t in curves if t.legendgroup == "trial 7" and t.line.dash == "dot")
    # joined to the next stage's start; stored epochs 0-2 read 1-3, as the trainer prints
    assert list(stage1.x) == [1, 2, 3]
    assert "top 2 of 40 ranked trials" in fig.layout.title.text
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["all top 2", "trial #7", "trial #3"]
    only_3 = buttons[2].args[0]["visible"]
    assert [v for v, t in zip(only_3, fig.data, strict=False) if t.legendgroup == "trial 3"] \
        == [True] * 3
    assert not any(v for v, t in zip(only_3, fig.data, strict=False)
                   if t.legendgroup == "trial 7")
    assert fig.layout.xaxis.dtick >= 1 and fig.layout.xaxis.tickformat == "d"


def test_effects_are_binned_boxes_whose_points_name_their_trial(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    ranked = rank_trials(data)
    fig = effects_figure(ranked, data.objectives)
    boxes = [t for t in fig.data if t.type == "box"]
    assert boxes and all(b.boxpoints == "all" for b in boxes)
    penalty = next(b for b in boxes if b.name == "task_accuracy by penalty")
    # penalty on: feasible complete trials 0, 2, 4; off: 1, 3
    on = sorted(y for x, y in zip(penalty.x, penalty.y, strict=True) if x == "on")
    off = sorted(y for x, y in zip(penalty.x, penalty.y, strict=True) if x == "off")
    assert on == sorted(POINTS[i][0] for i in (0, 2, 4))
    assert off == sorted(POINTS[i][0] for i in (1, 3))
    assert all(h.startswith("trial #") and "stage1_epochs" in h for h in penalty.hovertext)
    lam = next(b for b in boxes if b.name == "task_accuracy by λ (independence penalty)")
    assert len(lam.y) == 3  # λ only where the penalty is on
    assert not fig.layout.annotations  # no subplot titles to overlap


def test_effects_at_scale_are_summarised_boxes_with_hoverable_outliers():
    rng = np.random.default_rng(1)
    n = 5000
    s1 = rng.integers(0, 40, n)
    acc = rng.normal(0.8, 0.02, n)
    acc[:7] = [0.1, 0.2, 0.3, 0.99, 1.2, 1.3, 1.4]  # far beyond any bin's fences
    df = pd.DataFrame({"number": np.arange(n), "stage1_epochs": s1, "task_accuracy": acc})
    fig = effects_figure(df, ["task_accuracy"])
    box, points = fig.data[0], fig.data[1]
    assert box.boxpoints is False and 2 <= len(box.x) <= 8  # 40 distinct values, binned
    assert box.q1 is not None and box.median is not None
    shown = {int(h.split("#")[1].split("<")[0]) for h in points.hovertext}
    assert set(range(7)) <= shown  # every planted outlier is drawn and names its trial
    assert len(shown) < 0.05 * n  # the rest are summarised, not sent point by point
def test_parallel_coordinates_use_categorical_and_split_axes(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    ranked = rank_trials(data)
    fig = parallel_coordinates_figure(ranked, data.objectives)
    dims = {d.label: d for d in fig.data[0].dimensions}
    pen = dims["penalty"]
    assert list(pen.ticktext) == ["off", "on"] and list(pen.tickvals) == [0, 1]
    lam = dims["λ (log; off below)"]
    off_at = lam.tickvals[0]
    assert lam.ticktext[0] == "off" and off_at < min(lam.tickvals[1:])
    on = ranked["use_independence_penalty"].astype(bool).to_numpy()
    values = np.asarray(lam.values)
    assert np.all(values[~on] == off_at)
    assert np.allclose(values[on], np.log10(ranked.loc[on, "independence_penalty"]))
    assert fig.data[0].line.colorbar.title.text == data.objectives[-1]
    stage = dims["stage 1 epochs"]
    assert all(float(v).is_integer() for v in stage.tickvals)


def test_a_choice_that_did_not_apply_to_some_trials_gets_its_own_tick():
    """penalty_pairs exists only where the penalty is on: the trials without it sit on an
    "n/a" tick after the choices (the report once failed sorting 'zy_za' with NaN)."""
    ranked = _random_ranked(6).assign(
        use_independence_penalty=[True, True, False, True, False, True],
        penalty_pairs=["zy_za", "zy_za_zx", np.nan, "zy_za", np.nan, "zy_za_zx"])
    fig = parallel_coordinates_figure(ranked, ["task_accuracy", "zay_independence_score"])
    pairs = {d.label: d for d in fig.data[0].dimensions}["penalty pairs"]
    assert list(pairs.ticktext) == ["zy_za", "zy_za_zx", "n/a"]
    assert list(pairs.values) == [0, 1, 2, 0, 2, 1]


def test_the_default_legend_and_labels_come_from_the_registry(monkeypatch):
    import dataclasses

    from analysis._figures import effect_params, label, method_default_name
    from trainer import params

    objectives = ["task_accuracy", "zay_independence_score"]
    ranked = _random_ranked(9)
    assert method_default_name() == f"method default ({params.method_default_text()})"
    assert method_default_name() in _traces(pareto_figure(ranked, objectives))
    # another method default, another label, one more searched parameter: the figures follow
    lam = dataclasses.replace(params.get("independence_penalty"), default=3.0, symbol="μ",
                              label="μ (penalty weight)")
    gamma = params.Param("kl_target_gamma", float, 10.0, "gamma of the KL target",
                         search=params.Range(1.0, 100.0, log=True), label="KL γ", symbol="γ")
    monkeypatch.setattr(params, "PARAMS", (*(lam if p.name == lam.name else p
                                             for p in params.PARAMS), gamma))
    traces = _traces(pareto_figure(ranked, objectives))
    default = traces["method default (thirds, μ=3, γ=10)"]  # the new entry joins it
    assert list(default.text) == ["#0 default"]
    assert label("independence_penalty") == "μ (penalty weight)" and label("other") == "other"
    df = ranked.assign(kl_target_gamma=np.geomspace(1, 100, len(ranked)),
                       use_independence_penalty=[True, False] * 4 + [True],
                       independence_penalty=np.geomspace(0.1, 100, len(ranked)))
    assert effect_params(df) == ["use_independence_penalty", "independence_penalty",
                                 "kl_target_gamma"]
    fig = effects_figure(df, objectives[:1])
    titles = [fig.layout[k].title.text for k in ("xaxis", "xaxis2", "xaxis3")]
    assert titles == ["penalty", "μ, penalty on (log bins)", "γ (log bins)"]
    dims = [d.label for d in parallel_coordinates_figure(df, objectives).data[0].dimensions]
    assert dims[:3] == ["penalty", "μ (log; off below)", "γ (log; off below)"]


def test_values_keep_enough_digits_to_differ():
    assert decimals_needed([0.91231, 0.91234]) == 5  # both 0.9123 at 4 decimals
    fmt = float_formatter([0.99996, 0.5])
    assert fmt(0.99996) != "1.000" and fmt(0.99996).startswith("0.9999")
    assert float_formatter([1.0, 2.0, 3.0])(2.0) == "2"
    assert float_formatter([0.25, 0.5])(0.25) == "0.250"


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


HAS_BROWSER = bool(shutil.which("chromium") or shutil.which("chromium-browser")
                   or shutil.which("google-chrome"))


@pytest.mark.skipif(not HAS_BROWSER, reason="static export needs Chromium")
def test_pngs_follow_each_figures_layout_size_and_scale(tmp_path):
    from trainer.figures import export_png

    wide = go.Figure(go.Scatter(x=[0, 1], y=[1, 0])).update_layout(width=1300, height=380)
    small = go.Figure(go.Bar(x=["a"], y=[1])).update_layout(width=400, height=300)
    paths = export_png({"wide": wide, "small": small}, tmp_path, scale=2)
    assert [p.name for p in paths] == ["wide.png", "small.png"]
    assert _png_size(tmp_path / "wide.png") == (2600, 760)
    assert _png_size(tmp_path / "small.png") == (800, 600)


def test_the_export_warning_names_the_cause_and_the_fix():
    from trainer.figures import _export_failure

    msg = _export_failure(RuntimeError("Kaleido requires Google Chrome to be installed."))
    assert "Chromium" in msg and "apt-get install chromium" in msg
    msg = _export_failure(ModuleNotFoundError("No module named 'kaleido'"))
    assert "pip install 'stagetune[png]'" in msg
    assert "()" not in _export_failure(RuntimeError(""))


def test_figures_that_cannot_be_drawn_are_listed_with_the_reason(study_db, tmp_path):
    from tests.analysis.conftest import make_scalar_study

    data = load_study(f"sqlite:///{study_db}", "known")
    built = build_figures(data, rank_trials(data))
    assert set(built.figures) == {"pareto", "hypervolume", "curves", "effects", "parallel",
                                  "importance", "heatmap"}
    assert not built.skipped
    url = f"sqlite:///{tmp_path / 'scalar.db'}"
    make_scalar_study(url, epochs=False)
    scalar = load_study(url, "scalar")
    built = build_figures(scalar, rank_trials(scalar))
    assert "a scalar study has no Pareto front" in built.skipped["pareto"]
    assert "no front to measure" in built.skipped["hypervolume"]
    assert "no per-epoch rows" in built.skipped["curves"]
    assert {"effects", "parallel", "importance"} <= set(built.figures)


def test_compared_fronts_pass_through_attained_points_only():
    from analysis._figures import compare_figure

    objectives = ["task_accuracy", "zay_independence_score"]
    fronts = {}
    for k, name in enumerate(("a", "b")):
        ranked = _random_ranked(150, seed=10 + k)
        fronts[name] = (ranked, ranked[ranked["pareto_rank"] == 0])
    fig = compare_figure(fronts, objectives)
    for name, (ranked, front) in fronts.items():
        line = _traces(fig)[f"{name}: front"]
        assert line.line.shape in (None, "linear")
        attained = set(zip(ranked["task_accuracy"], ranked["zay_independence_score"],
                           strict=True))
        assert all(v in attained for v in zip(line.x, line.y, strict=True))
        assert len(line.x) == len(front)

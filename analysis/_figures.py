"""Plotly figures, drawn from computed records (DataFrames), never from a database.

Every figure sets its own width and height (PNG export uses them) and states what it
shows: the reference point and hypervolume, how many trials a "top N" is of, which
objective colours a plot.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis._format import float_formatter, mean_se_texts
from trainer import params as registry  # plain Python: no torch

if TYPE_CHECKING:
    from analysis._heldout import HeldOut

#: above this many trials, clouds of points become 2-D histograms (the front stays on top)
DENSITY_ABOVE = 2_000
#: above this many trials per panel, box plots show only their outliers as points
BOX_POINTS_UP_TO = 1_000
STAGE_DASH = {1: "dot", 2: "dash", 3: "solid"}
TRIAL_COLOURS = qualitative.Dark24
FRONT_COLOUR = "#d62728"


def label(param: str) -> str:
    """A parameter's axis label, from the registry (``trainer.params``)."""
    return registry.label(param)


def method_default_name() -> str:
    """The legend entry of the baseline trial, e.g. ``method default (thirds, λ=10)``."""
    return f"method default ({registry.method_default_text()})"


def _entry(param: str) -> registry.Param | None:
    """The registry entry of ``param``; ``None`` for a column the registry does not know."""
    try:
        return registry.get(param)
    except KeyError:
        return None


def _is_switch(param: str) -> bool:
    p = _entry(param)
    return p is not None and p.kind is bool


def _is_log(param: str) -> bool:
    p = _entry(param)
    return p is not None and isinstance(p.search, registry.Range) and p.search.log


def _log_title(param: str) -> str:
    """``λ, penalty on (log bins)``: the symbol and the switches it needs on."""
    p = registry.get(param)
    needs = [f"{registry.label(parent)} on" for parent, value in p.when if value is True]
    return ", ".join([p.symbol or p.title, *needs]) + " (log bins)"


def integer_ticks(lo: float, hi: float, *, most: int = 10) -> dict[str, Any]:
    """Axis settings that put ticks on whole numbers only (about ``most`` of them)."""
    raw = max(1.0, float(hi) - float(lo)) / most
    step = min(c for c in (b * 10 ** p for p in range(12) for b in (1, 2, 5)) if c >= raw)
    return {"tick0": 0, "dtick": step, "tickformat": "d"}


def hover_text(df: pd.DataFrame, objectives: list[str]) -> pd.Series:
    """One hover label per trial: number, objectives and settings (built column-wise).

    Floats get as many decimals as their column needs to keep distinct values distinct.
    A trial swept with replicates shows each objective as mean ± standard error and
    its number of seeds (``R = 3 seeds``).
    """
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    text = "trial #" + df["number"].astype(int).astype(str)
    for c in [*objectives, *registry.searched_names()]:
        if c not in df.columns:
            continue
        col = df[c]
        if c in objectives and f"{c}_se" in df.columns:
            shown = pd.Series(mean_se_texts(col.to_numpy(np.float64),
                                            df[f"{c}_se"].to_numpy(np.float64), most=6),
                              index=df.index)
        elif pd.api.types.is_float_dtype(col):
            fmt = float_formatter(col.to_numpy(dtype=np.float64), most=6)
            shown = col.map(lambda v, f=fmt: "" if pd.isna(v) else f(float(v)))
        else:
            shown = col.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                            else str(v))
        text = text + np.where(shown != "", "<br>" + c + ": " + shown, "")
    if "replicates" in df.columns:
        seeds = pd.to_numeric(df["replicates"], errors="coerce")
        text = text + np.where(seeds > 1, "<br>R = " + seeds.fillna(0).astype(int).astype(str)
                               + " seeds (mean ± SE)", "")
    return text


def _hover(df: pd.DataFrame, objectives: list[str]) -> list[str]:
    if "hover" in df.columns:
        return df["hover"].tolist()
    return hover_text(df, objectives).tolist()


# ---------------------------------------------------------------------------- Pareto


#: the longest error-bar side drawn, as a fraction of the points' spread on its axis: a
#: longer one is cut there and ends in an arrowhead, so that one noisy trial's bar cannot
#: span the plot and read as a reference line (a whole bar then spans at most 2/5 of it)
BAR_REACH = 1 / 3
CUT_BAR_NAME = "± 1 SE longer than drawn (its length beside it)"
#: the arrowhead of a cut bar, by axis and side
CUT_SYMBOL = {("x", -1): "triangle-left", ("x", 1): "triangle-right",
              ("y", -1): "triangle-down", ("y", 1): "triangle-up"}


def bar_cap(values: np.ndarray, *, reach: float = BAR_REACH) -> float | None:
    """The longest error-bar side drawn on an axis whose points are ``values``: ``reach``
    times their spread; ``None`` (no cap) when they do not spread."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    span = float(v.max() - v.min()) if v.size else 0.0
    return reach * span if span > 0 else None


def error_bars(df: pd.DataFrame, objective: str, colour: str,
               cap: float | None = None) -> dict[str, Any] | None:
    """Plotly ``error_x``/``error_y`` of ± 1 standard error (the ``<objective>_se``
    column of trials swept with replicates); ``None`` when no trial of ``df`` has one,
    so that such trials draw without bars. A trial without one gets no bar.

    A bar longer than ``cap`` is left out here (0) and drawn by ``cut_bar_traces``
    instead: ``cap`` long, ending in an arrowhead rather than a bar's end cap.
    """
    column = f"{objective}_se"
    if column not in df.columns or not df[column].notna().any():
        return None
    se = df[column].astype(float).to_numpy()
    bars: dict[str, Any] = {"type": "data", "visible": True, "color": colour, "thickness": 1,
                            "width": 3}
    if cap is not None and np.any(se > cap):
        shown = np.where(se > cap, 0.0, se).tolist()
        return {**bars, "symmetric": False, "array": shown, "arrayminus": shown}
    return {**bars, "symmetric": True, "array": se.tolist()}


def cut_bars(df: pd.DataFrame, objectives: list[str],
             caps: tuple[float | None, float | None], *, colour: str) -> pd.DataFrame:
    """The bars of ``df`` longer than their axis' cap: one row per side, with the point
    (``x``, ``y``), where the drawn bar ends (``end_x``, ``end_y``), its arrowhead
    ``symbol``, the standard error ``se`` it stands for, the trial ``number`` and the bar's
    ``colour``."""
    rows = []
    for axis, objective, cap in zip(("x", "y"), objectives[:2], caps, strict=True):
        column = f"{objective}_se"
        if cap is None or column not in df.columns:
            continue
        for _, row in df[df[column].astype(float) > cap].iterrows():
            x, y = float(row[objectives[0]]), float(row[objectives[1]])
            for side in (-1, 1):
                rows.append({"number": int(row["number"]), "x": x, "y": y,
                             "end_x": x + side * cap if axis == "x" else x,
                             "end_y": y + side * cap if axis == "y" else y,
                             "objective": objective, "se": float(row[column]),
                             "symbol": CUT_SYMBOL[(axis, side)], "colour": colour})
    return pd.DataFrame(rows, columns=["number", "x", "y", "end_x", "end_y", "objective",
                                       "se", "symbol", "colour"])


def cut_bar_traces(cuts: pd.DataFrame) -> list[go.Scatter]:
    """The cut bars (``cut_bars``): each side a line from its point, in the bar's colour,
    ending in an arrowhead (one legend entry for all) that hovers with the real length."""
    if cuts.empty:
        return []
    traces = []
    for colour, part in cuts.groupby("colour", sort=False):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for row in part.itertuples():
            xs += [row.x, row.end_x, None]
            ys += [row.y, row.end_y, None]
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": 1},
                                 legendgroup="cut", showlegend=False, hoverinfo="skip"))
    fmt = float_formatter(cuts["se"].to_numpy(np.float64), most=6)
    hover = [f"trial #{n}: ± 1 SE of {o} is {fmt(se)}, longer than drawn"
             for n, o, se in zip(cuts["number"], cuts["objective"], cuts["se"], strict=True)]
    # the real length beside the right (upper) arrowhead: a static PNG has no hover
    outer = cuts["symbol"].isin(["triangle-right", "triangle-up"])
    traces.append(go.Scatter(x=cuts["end_x"], y=cuts["end_y"], mode="markers+text",
                             name=CUT_BAR_NAME, legendgroup="cut",
                             marker={"symbol": cuts["symbol"].tolist(), "size": 8,
                                     "color": cuts["colour"].tolist()},
                             text=[f"±{fmt(se)}" if o else "" for o, se in
                                   zip(outer, cuts["se"], strict=True)],
                             textposition=["middle right" if s == "triangle-right"
                                           else "top center" for s in cuts["symbol"]],
                             textfont={"size": 10, "color": "#3c4043"},
                             hovertext=hover, hoverinfo="text"))
    return traces


def replicates_shown(df: pd.DataFrame) -> int:
    """The seeds per trial of the trials in ``df`` (1 when none has replicates)."""
    if "replicates" not in df.columns:
        return 1
    seeds = pd.to_numeric(df["replicates"], errors="coerce").dropna()
    return int(seeds.max()) if len(seeds) else 1


def front_points(ranked: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """The non-dominated trials, in the order the front line joins them (by x)."""
    front = ranked[ranked["pareto_rank"] == 0]
    return front.sort_values([objectives[0], objectives[1]], kind="stable")


#: error-bar colours: light, so that a bar never outweighs the points it belongs to
BAR_COLOUR = {"trials": "#9aa0a6", "infeasible": "#7f7f7f",
              "front": "rgba(214,39,40,0.55)", "default": "rgba(32,33,36,0.45)"}


def pareto_caps(frames: list[pd.DataFrame], objectives: list[str]
                ) -> tuple[float | None, float | None]:
    """The error-bar caps (``bar_cap``) of a Pareto plot of the trials in ``frames``, from
    the spread of their points on each axis."""
    shown = pd.concat([f for f in frames if len(f)]) if any(len(f) for f in frames) else None
    if shown is None:
        return None, None
    x_name, y_name = objectives[:2]
    return bar_cap(shown[x_name].to_numpy(np.float64)), bar_cap(
        shown[y_name].to_numpy(np.float64))


def _points(df: pd.DataFrame, objectives: list[str], caps: tuple[float | None, float | None],
            *, name: str, bars: str, **style: Any) -> go.Scatter:
    """One Scatter of trials with their (capped) ± 1 SE bars in ``BAR_COLOUR[bars]``."""
    x_name, y_name = objectives[:2]
    return go.Scatter(x=df[x_name], y=df[y_name], name=name,
                      error_x=error_bars(df, x_name, BAR_COLOUR[bars], caps[0]),
                      error_y=error_bars(df, y_name, BAR_COLOUR[bars], caps[1]),
                      hovertext=_hover(df, objectives), hoverinfo="text", **style)


def pareto_figure(ranked: pd.DataFrame, objectives: list[str], *, title: str = "",
                  infeasible: pd.DataFrame | None = None,
                  reference: list[float] | None = None, hypervolume: float | None = None,
                  density_above: int = DENSITY_ABOVE) -> go.Figure:
    """All ranked trials, the front highlighted and labelled, the method default marked.

    The front is drawn through trial points only: straight segments between consecutive
    non-dominated trials, never the corners of a staircase that no trial reached.
    Above ``density_above`` trials the other trials become a 2-D histogram. Trials swept
    with replicates carry ± 1 standard error bars on both objectives (the points being
    means over seeds); the histogram has none. A bar side longer than ``BAR_REACH`` of
    the points' spread is cut there and ends in an arrowhead (its length in the hover).
    Each trial is labelled once (the default as ``#n default``).
    """
    x_name, y_name = objectives[:2]
    fig = go.Figure()
    rest = ranked[ranked["pareto_rank"] != 0]
    front = front_points(ranked, objectives)
    infeasible = infeasible if infeasible is not None else ranked.iloc[:0]
    base = ranked[ranked["baseline"].astype(bool)] if "baseline" in ranked else ranked.iloc[:0]
    many = len(ranked) > density_above
    caps = pareto_caps([ranked, infeasible], objectives)
    baseline = set(base["number"].astype(int))
    # a default on the front is cut once, by its own trace
    cuts = [cut_bars(front[~front["number"].astype(int).isin(baseline)], objectives, caps,
                     colour=BAR_COLOUR["front"]),
            cut_bars(base, objectives, caps, colour=BAR_COLOUR["default"])]
    if many:
        fig.add_trace(go.Histogram2d(
            x=rest[x_name], y=rest[y_name], nbinsx=60, nbinsy=60, name="trials (density)",
            colorscale=[[0, "rgba(255,255,255,0)"], [1e-9, "#e8eaed"], [1, "#3c4043"]],
            colorbar={"title": {"text": "trials per bin"}, "len": 0.5, "y": 0.25},
            hovertemplate=f"{x_name} %{{x}}<br>{y_name} %{{y}}<br>%{{z}} trials"
                          "<extra></extra>"))
    else:
        fig.add_trace(_points(rest, objectives, caps, name="trials", bars="trials",
                              mode="markers", marker={"color": "#9aa0a6", "size": 7}))
        cuts.append(cut_bars(rest, objectives, caps, colour=BAR_COLOUR["trials"]))
    if len(infeasible):
        fig.add_trace(_points(infeasible, objectives, caps, bars="infeasible",
                              name="infeasible (zay collapsed)", mode="markers",
                              marker={"symbol": "x", "color": "#7f7f7f",
                                      "size": 5 if many else 8}))
        cuts.append(cut_bars(infeasible, objectives, caps, colour=BAR_COLOUR["infeasible"]))
    two = len(objectives) == 2
    fig.add_trace(_points(
        front, objectives, caps, bars="front", mode="lines+markers+text" if two
        else "markers+text", name="Pareto front" if two
        else f"Pareto front (over all {len(objectives)} objectives)",
        line={"color": FRONT_COLOUR, "width": 2}, marker={"size": 10, "color": FRONT_COLOUR},
        # the default's own trace labels it: once, as "#n default"
        text=["" if int(n) in baseline else f"#{int(n)}" for n in front["number"]],
        textposition="top right", textfont={"size": 11, "color": FRONT_COLOUR}))
    if len(base):
        fig.add_trace(_points(base, objectives, caps, bars="default", mode="markers+text",
                              name=method_default_name(),
                              text=[f"#{int(n)} default" for n in base["number"]],
                              textposition="bottom left",
                              marker={"symbol": "star", "size": 18, "color": "#ffbf00",
                                      "line": {"width": 1, "color": "black"}}))
    for trace in cut_bar_traces(pd.concat(cuts, ignore_index=True)):
        fig.add_trace(trace)
    lines = subtitle_lines(_pareto_clauses(ranked, objectives, len(front),
                                           reference=reference, hypervolume=hypervolume))
    fig.update_layout(
        title={"text": (title or f"Pareto front: {x_name} vs {y_name}")
               + subtitle_html(lines)},
        xaxis_title=x_name, yaxis_title=y_name, width=900, height=600 + 20 * len(lines),
        margin={"t": 80 + 20 * len(lines)},
        legend={"orientation": "h", "y": -0.15})
    return fig


def _pareto_clauses(ranked: pd.DataFrame, objectives: list[str], n_front: int, *,
                    reference: list[float] | None, hypervolume: float | None) -> list[str]:
    """The clauses of a Pareto figure's subtitle."""
    x_name, y_name = objectives[:2]
    clauses = [f"front: {n_front} of {len(ranked)} ranked trials"]
    if error_bars(ranked, x_name, FRONT_COLOUR) or error_bars(ranked, y_name, FRONT_COLOUR):
        clauses.append(f"points are means over {replicates_shown(ranked)} paired seeds, "
                       "bars ± 1 standard error")
    if hypervolume is not None and reference is not None:
        ref = ", ".join(f"{o}={r:g}" for o, r in zip(objectives, reference, strict=True))
        fmt = float_formatter([hypervolume])
        clauses.append(f"hypervolume {fmt(hypervolume)} against the reference point ({ref})")
    if len(objectives) != 2:
        clauses.append(f"showing the first two of {len(objectives)} objectives")
    return clauses


#: characters of a ``<sup>`` subtitle line that fit in a 900 px wide figure
SUBTITLE_WIDTH = 130


def subtitle_lines(clauses: list[str], width: int = SUBTITLE_WIDTH) -> list[str]:
    """Clauses joined by "; " into lines of at most ``width`` characters, breaking only
    between clauses (a clause longer than ``width`` gets a line of its own): plotly does
    not wrap a title, and a static export cuts what runs past the figure's edge."""
    lines: list[str] = []
    for clause in clauses:
        if lines and len(lines[-1]) + 2 + len(clause) <= width:
            lines[-1] += "; " + clause
        else:
            lines.append(clause)
    return lines


def subtitle_html(lines: list[str]) -> str:
    """Subtitle lines as they follow a figure's title."""
    return "".join(f"<br><sup>{line}</sup>" for line in lines)


def hypervolume_figure(hv: pd.DataFrame, *, reference: list[float] | None = None,
                       objectives: list[str] | None = None, name: str = "hypervolume",
                       fig: go.Figure | None = None) -> go.Figure:
    fig = fig or go.Figure()
    fig.add_trace(go.Scatter(x=hv["number"], y=hv["hypervolume"], mode="lines",
                             line={"shape": "hv"}, name=name))
    sub = ""
    if reference is not None and objectives is not None:
        sub = "<br><sup>reference point " + ", ".join(
            f"{o}={r:g}" for o, r in zip(objectives, reference, strict=True)) + "</sup>"
    fig.update_layout(title={"text": "Hypervolume of the feasible front over trials" + sub},
                      xaxis_title="trial number", yaxis_title="hypervolume",
                      width=900, height=450)
    if len(hv):
        fig.update_xaxes(**integer_ticks(hv["number"].min(), hv["number"].max()))
    return fig


# ---------------------------------------------------------------------- learning curves


def curve_points(rows: list[dict[str, float]], metric: str) -> pd.DataFrame:
    """One trial's stored per-epoch rows as ``epoch`` (counted from 1, as the trainer
    prints ``epoch 1/6``; the database counts from 0), ``stage`` and ``value``."""
    kept = [r for r in rows if metric in r]
    return pd.DataFrame({"epoch": [int(r["epoch"]) + 1 for r in kept],
                         "stage": [int(r["stage"]) for r in kept],
                         "value": [float(r[metric]) for r in kept]})


def coinciding_runs(points: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Where several trials' curves are the same (trials that share their first stages
    train identically until they part), as runs: ``trials`` (in ``points``' order) with the
    same value at every epoch from ``first`` to ``last``, ``value`` at ``last``, and
    ``count``. A run ends where its trials part (or end); a smaller group that stays
    together is a run of its own, from the epoch its members' curves first coincide."""
    table = pd.DataFrame({n: p.set_index("epoch")["value"] for n, p in points.items()})
    rows = []
    open_runs: dict[tuple[int, ...], int] = {}
    epochs = list(table.index)
    for k, epoch in enumerate([*epochs, None]):
        groups: set[tuple[int, ...]] = set()
        if epoch is not None:
            at = table.loc[epoch].dropna()
            for _, members in at.groupby(at.to_numpy()).groups.items():
                if len(members) > 1:
                    groups.add(tuple(n for n in points if n in set(members)))
        for trials in [g for g in open_runs if g not in groups]:
            last = epochs[k - 1]
            together = table[list(trials)].nunique(axis=1, dropna=False).loc[:last] == 1
            first = int(together[~together].index.max() + 1) if (~together).any() else int(
                together.index.min())
            rows.append({"trials": list(trials), "first": first, "last": int(last),
                         "value": float(table.loc[last, trials[0]]), "count": len(trials)})
            del open_runs[trials]
        for trials in groups - set(open_runs):
            open_runs[trials] = int(epoch)
    return pd.DataFrame(rows, columns=["trials", "first", "last", "value", "count"])


def _trial_traces(number: int, points: pd.DataFrame, colour: str, metric: str,
                  shared: dict[tuple[int, int], list[int]]) -> list[go.Scatter]:
    """A trial's curve, one line per stage in its dash, each joined to the next stage's
    first point; each point hovers with the trials whose curves pass through it too."""
    traces = []
    epochs, values, stages = (points[c].to_numpy() for c in ("epoch", "value", "stage"))
    hover = [f"trial #{number}, stage {s}<br>epoch {e}: {metric} {v:.5g}" + (
        "<br>the same in " + ", ".join(f"#{m}" for m in shared[(number, e)])
        if (number, e) in shared else "") for e, v, s in zip(epochs, values, stages,
                                                              strict=True)]
    for stage in (1, 2, 3):
        idx = np.flatnonzero(stages == stage)
        if idx.size == 0:
            continue
        # include the next point so consecutive segments join up
        idx = np.append(idx, idx[-1] + 1) if idx[-1] + 1 < len(epochs) else idx
        traces.append(go.Scatter(
            x=epochs[idx], y=values[idx], mode="lines",
            line={"color": colour, "width": 1.8, "dash": STAGE_DASH[stage]},
            name=f"#{number}", legendgroup=f"trial {number}", showlegend=not traces,
            hovertext=[hover[i] for i in idx], hoverinfo="text"))
    return traces


def _coinciding_traces(runs: pd.DataFrame, points: dict[int, pd.DataFrame]
                       ) -> list[go.Scatter]:
    """Rings where curves coincide, and ``×N`` where N coinciding curves part."""
    if runs.empty:
        return []
    xs, ys = [], []
    for run in runs.itertuples():
        p = points[run.trials[0]]
        span = p[(p["epoch"] >= run.first) & (p["epoch"] <= run.last)]
        xs += span["epoch"].tolist()
        ys += span["value"].tolist()
    hover = [f"{run.count} curves coincide, epochs {run.first}–{run.last}: "
             + ", ".join(f"#{n}" for n in run.trials) for run in runs.itertuples()]
    return [
        go.Scatter(x=xs, y=ys, mode="markers", name="curves coincide (×N: N part here)",
                   legendgroup="coincide", hoverinfo="skip",
                   marker={"symbol": "circle-open", "size": 11, "color": "#3c4043",
                           "line": {"width": 1.5}}),
        go.Scatter(x=runs["last"], y=runs["value"], mode="text", legendgroup="coincide",
                   text=[f"×{c}" for c in runs["count"]], textposition="top right",
                   textfont={"size": 12, "color": "#202124"}, showlegend=False,
                   hovertext=hover, hoverinfo="text"),
    ]


def learning_curves_figure(curves: dict[int, list[dict[str, float]]], *,
                           metric: str = "val_loss", of: int | None = None) -> go.Figure:
    """Per-epoch ``metric`` of each trial: one colour per trial, line style by stage,
    epochs counted from 1 as the trainer prints them.

    ``curves`` is ordered best first; ``of`` is how many ranked trials there were, so
    the title says "top N of M". Where curves coincide (``coinciding_runs``), rings mark
    the points and ``×N`` says how many curves part there; each point's hover names the
    trials it is shared with. A drop-down shows all curves or one trial's.
    """
    fig = go.Figure()
    points = {number: curve_points(rows, metric) for number, rows in curves.items()}
    runs = coinciding_runs(points)
    shared = {(n, e): [m for m in run.trials if m != n] for run in runs.itertuples()
              for n in run.trials for e in range(run.first, run.last + 1)}
    owners: list[int | None] = []
    for k, (number, p) in enumerate(points.items()):
        traces = _trial_traces(number, p, TRIAL_COLOURS[k % len(TRIAL_COLOURS)], metric,
                               shared)
        fig.add_traces(traces)
        owners += [number] * len(traces)
    for trace in _coinciding_traces(runs, points):
        fig.add_trace(trace)
        owners.append(None)
    for stage, dash in STAGE_DASH.items():  # a key to the line styles
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"stage {stage}",
                                 line={"color": "#5f6368", "dash": dash},
                                 legendgroup="stages", legendgrouptitle_text="line style"))
    key = [True] * 3
    buttons = [{"label": f"all top {len(curves)}", "method": "update",
                "args": [{"visible": [True] * len(owners) + key}]}]
    for number in curves:
        buttons.append({"label": f"trial #{number}", "method": "update",
                        "args": [{"visible": [o == number for o in owners] + key}]})
    shown = f"top {len(curves)}" + (f" of {of} ranked trials" if of is not None else "")
    clauses = ["one colour per trial; dotted stage 1, dashed stage 2, solid stage 3"]
    if len(runs):
        clauses.append("rings: curves that coincide (trials sharing their first stages), "
                       "×N where N of them part")
    lines = subtitle_lines(clauses)
    last = max((int(p["epoch"].max()) for p in points.values() if len(p)), default=1)
    fig.update_layout(
        title={"text": f"Learning curves ({metric}) of the {shown}" + subtitle_html(lines)},
        xaxis_title="epoch", yaxis_title=metric, width=1000, height=540 + 20 * len(lines),
        margin={"t": 80 + 20 * len(lines)},
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right",
                      "y": 1.12, "yanchor": "top", "showactive": True}])
    pad = max(0.3, 0.02 * last)  # room for the rings, not enough for a tick at epoch 0
    fig.update_xaxes(**integer_ticks(1, last), range=[1 - pad, last + pad])
    return fig


# ---------------------------------------------------------------------------- effects


def _bins(values: pd.Series, param: str, *, most: int = 8) -> tuple[pd.Series, list[str]]:
    """Each trial's bin label for ``param`` and the labels in axis order."""
    if _is_switch(param):
        lab = values.map(lambda v: "on" if bool(v) else "off")
        return lab, [c for c in ("off", "on") if c in set(lab)]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        lab = values.astype(str)
        return lab, sorted(set(lab))
    v = values.astype(float)
    distinct = np.unique(v.dropna())
    if _is_log(param):
        lo, hi = math.floor(np.log10(v.min()) * 2) / 2, math.ceil(np.log10(v.max()) * 2) / 2
        edges = np.arange(lo, hi + 0.5, 0.5) if hi > lo else np.array([lo, lo + 0.5])
        idx = np.clip(np.digitize(np.log10(v), edges) - 1, 0, len(edges) - 2)
        names = [f"{10 ** a:.3g}–{10 ** b:.3g}" for a, b in itertools.pairwise(edges)]
        lab = pd.Series([names[i] for i in idx], index=values.index)
        return lab, [n for n in names if n in set(lab)]
    integral = np.all(distinct == np.round(distinct))
    if integral and len(distinct) <= 12:
        lab = v.map(lambda x: f"{int(x)}")
        return lab, [f"{int(x)}" for x in distinct]
    if integral:
        lo, hi = int(distinct.min()), int(distinct.max())
        width = max(1, math.ceil((hi - lo + 1) / most))
        starts = np.arange(lo, hi + 1, width)
        idx = ((v - lo) // width).astype(int)
        names = [f"{s}–{min(hi, s + width - 1)}" if width > 1 else f"{s}" for s in starts]
        lab = pd.Series([names[i] for i in idx], index=values.index)
        return lab, [n for n in names if n in set(lab)]
    edges = np.quantile(v, np.linspace(0, 1, most + 1))
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, most - 1)
    fmt = float_formatter(edges)
    names = [f"{fmt(a)}–{fmt(b)}" for a, b in itertools.pairwise(edges)]
    lab = pd.Series([names[i] for i in idx], index=values.index)
    return lab, [n for n in names if n in set(lab)]


def box_statistics(bins: pd.Series, values: pd.Series, order: list[str]
                   ) -> tuple[dict[str, list], pd.Index]:
    """Tukey box statistics per bin (fences at 1.5 IQR, clipped to the data) and the
    index of the trials beyond the fences. Large studies send these, not every point."""
    stats: dict[str, list] = {k: [] for k in ("bin", "q1", "median", "q3", "lowerfence",
                                              "upperfence")}
    outliers = []
    for name in order:
        v = values[bins == name]
        if v.empty:
            continue
        q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        lo_lim, hi_lim = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        inside = v[(v >= lo_lim) & (v <= hi_lim)]
        stats["bin"].append(name)
        stats["q1"].append(float(q1))
        stats["median"].append(float(med))
        stats["q3"].append(float(q3))
        stats["lowerfence"].append(float(inside.min()))
        stats["upperfence"].append(float(inside.max()))
        outliers.append(v.index[(v < lo_lim) | (v > hi_lim)])
    index = outliers[0].append(outliers[1:]) if outliers else values.index[:0]
    return stats, index


def effect_params(df: pd.DataFrame) -> list[str]:
    """The searched settings that vary among the trials, in a fixed order."""
    return [p for p in registry.searched_names()
            if p in df.columns and df[p].dropna().astype(str).nunique() > 1]


def effects_figure(df: pd.DataFrame, objectives: list[str]) -> go.Figure:
    """Each objective against each varying setting, binned, as box plots.

    λ is binned on a log scale among penalty-on trials only (it means nothing when the
    penalty is off). Every point hovers with its trial and settings while there are at
    most ``BOX_POINTS_UP_TO`` trials; beyond that the boxes are summarised (quartiles and
    fences) and only their outliers are drawn, each hovering with its trial.
    """
    params = effect_params(df) or list(registry.searched_names()[:1])
    rows, cols = len(objectives), len(params)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.06,
                        vertical_spacing=0.14 if rows > 1 else 0.1)
    hover = pd.Series(_hover(df, objectives), index=df.index)
    points = "all" if len(df) <= BOX_POINTS_UP_TO else "outliers"
    for i, obj in enumerate(objectives, start=1):
        for j, p in enumerate(params, start=1):
            if p not in df.columns:
                continue
            sub = df[df[p].notna() & df[obj].notna()]
            if sub.empty:
                continue
            lab, order = _bins(sub[p], p)
            if points == "all":
                fig.add_trace(go.Box(
                    x=lab, y=sub[obj], name=f"{obj} by {label(p)}", boxpoints="all",
                    jitter=0.4, pointpos=0,
                    marker={"size": 4, "opacity": 0.6, "color": "#1f77b4"},
                    line={"width": 1.2, "color": "#1f77b4"},
                    fillcolor="rgba(31,119,180,0.15)",
                    hovertext=hover.loc[sub.index].tolist(), hoverinfo="text+y",
                    showlegend=False), i, j)
            else:
                box, outliers = box_statistics(lab, sub[obj], order)
                fig.add_trace(go.Box(
                    x=box["bin"], q1=box["q1"], median=box["median"], q3=box["q3"],
                    lowerfence=box["lowerfence"], upperfence=box["upperfence"],
                    name=f"{obj} by {label(p)}", boxpoints=False,
                    line={"width": 1.2, "color": "#1f77b4"},
                    fillcolor="rgba(31,119,180,0.15)", showlegend=False), i, j)
                fig.add_trace(go.Scatter(
                    x=lab.loc[outliers], y=sub.loc[outliers, obj], mode="markers",
                    name=f"{obj} by {label(p)}: outliers",
                    marker={"size": 4, "color": "rgba(31,119,180,0.7)"},
                    hovertext=hover.loc[outliers].tolist(), hoverinfo="text+y",
                    showlegend=False), i, j)
            fig.update_xaxes(type="category", categoryorder="array", categoryarray=order,
                             row=i, col=j)
            if i == rows:
                title = _log_title(p) if _is_log(p) else label(p)
                fig.update_xaxes(title_text=title, row=i, col=j)
            if j == 1:
                fig.update_yaxes(title_text=obj, row=i, col=j)
    fig.update_layout(
        title={"text": "Effects of the staged-training settings"
               f"<br><sup>{len(df)} trials; boxes per bin, "
               f"{'every trial a point' if points == 'all' else 'outliers as points'}"
               "</sup>"},
        width=max(700, 300 * cols + 120), height=340 * rows + 140)
    return fig


# ------------------------------------------------------------------- parallel coordinates


#: the tick of a categorical axis for trials the parameter did not apply to
NOT_APPLICABLE = "n/a"


def parallel_coordinates_figure(df: pd.DataFrame, objectives: list[str], *,
                                colour_by: str | None = None) -> go.Figure:
    """Settings and objectives of every trial.

    The searched parameters of the registry, by kind: integer settings get integer
    ticks; penalty on/off (and other choices) are categorical axes; λ (any log-scale
    setting) has a split axis: a log scale for penalty-on trials and a separate "off"
    tick below it. The colour bar names its objective.
    """
    dims: list[dict[str, Any]] = []
    shown_params = [p for p in registry.searched() if p.name in df.columns]
    for p in (p.name for p in shown_params if p.kind is int):
        if df[p].notna().any():
            v = df[p].astype(float)
            lo, hi = float(v.min()), float(v.max())
            step = integer_ticks(lo, hi, most=8)["dtick"]
            ticks = list(range(int(lo) - int(lo) % step, int(hi) + 1, step)) or [int(lo)]
            dims.append({"label": label(p), "values": v.fillna(lo),
                         "tickvals": ticks, "ticktext": [str(t) for t in ticks],
                         "range": [lo, hi] if hi > lo else [lo - 1, hi + 1]})
    for p in (p.name for p in shown_params if p.kind in (bool, str)):
        if df[p].dropna().astype(str).nunique() < 1:
            continue
        if _is_switch(p):
            shown = df[p].map(lambda v: "on" if bool(v) else "off")
            choices = ["off", "on"]
        else:  # a choice that did not apply to a trial (pairs, with the penalty off): n/a
            shown = df[p].map(lambda v: NOT_APPLICABLE if pd.isna(v) else str(v))
            choices = sorted(set(shown) - {NOT_APPLICABLE}) + (
                [NOT_APPLICABLE] if NOT_APPLICABLE in set(shown) else [])
            if len(choices) < 2:
                continue
        codes = shown.map({c: k for k, c in enumerate(choices)}).astype(float)
        dims.append({"label": label(p), "values": codes, "tickvals": list(range(len(choices))),
                     "ticktext": choices, "range": [-0.2, len(choices) - 0.8]})
    for param in (p for p in shown_params if p.kind is float):
        values = df[param.name].astype(float)
        if not _is_log(param.name):
            if values.notna().any():
                dims.append({"label": label(param.name), "values": values})
            continue
        on = values.where(values > 0)  # a log axis, trials without a value ("off") below
        if on.notna().any():
            log = np.log10(on)
            lo, hi = math.floor(log.min()), math.ceil(log.max())
            hi = hi if hi > lo else lo + 1
            off_at = lo - 0.6
            decades = list(range(lo, hi + 1))
            dims.append({"label": f"{param.symbol or param.title} (log; off below)",
                         "values": log.fillna(off_at),
                         "tickvals": [off_at, *decades],
                         "ticktext": ["off", *[f"{10.0 ** d:g}" for d in decades]],
                         "range": [off_at - 0.1, hi]})
    for o in objectives:
        dims.append({"label": o, "values": df[o]})
    colour_by = colour_by or objectives[-1]
    colour = df[colour_by] if len(df) else []
    fig = go.Figure(go.Parcoords(
        line={"color": colour, "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": {"text": colour_by, "side": "right"}}},
        dimensions=dims))
    # the title hangs from the figure's top edge, so that the lines state_task adds grow
    # into the margin it widens, not down onto the axis titles above the axes
    fig.update_layout(title={"text": f"Settings and objectives of {len(df)} trials"
                             f"<br><sup>colour: {colour_by}; drag along an axis to filter"
                             "</sup>", "y": 1, "yref": "container", "yanchor": "top",
                             "pad": {"t": 14}},
                      width=1200, height=540, margin={"l": 80, "r": 80, "t": 130})
    return fig


# --------------------------------------------------------------------------- importance


def importance_figure(table: pd.DataFrame, n_trials: int) -> go.Figure:
    """Horizontal bars: each parameter's importance for each target, per evaluator."""
    targets = list(dict.fromkeys(table["target"]))
    evaluators = list(dict.fromkeys(table["evaluator"]))
    fig = make_subplots(rows=1, cols=len(targets), subplot_titles=targets,
                        shared_yaxes=True, horizontal_spacing=0.04)
    colours = {"ped-anova": "#1f77b4", "fanova": "#ff7f0e"}
    params = list(dict.fromkeys(
        table[table["evaluator"] == evaluators[0]].groupby("param")["importance"].sum()
        .sort_values().index))
    for j, target in enumerate(targets, start=1):
        for ev in evaluators:
            part = table[(table["target"] == target) & (table["evaluator"] == ev)]
            if part.empty:
                continue
            part = part.set_index("param").reindex(params)
            fig.add_trace(go.Bar(x=part["importance"], y=[label(p) for p in params],
                                 orientation="h", name=ev, marker_color=colours.get(ev),
                                 legendgroup=ev, showlegend=j == 1,
                                 hovertemplate="%{y}: %{x:.3f}<extra>" + ev + "</extra>"),
                          1, j)
        fig.update_xaxes(range=[0, 1], title_text="importance", row=1, col=j)
    method = " and ".join(e.upper() if e != "ped-anova" else "PED-ANOVA" for e in evaluators)
    fig.update_layout(
        title={"text": f"Parameter importance ({method}) over {n_trials} trials"
               "<br><sup>per objective; 'Pareto front': importance for reaching it; "
               "each panel sums to 1</sup>"},
        barmode="group", width=max(700, 330 * len(targets) + 200),
        height=140 + 60 * max(1, len(params)), margin={"t": 110})
    return fig


# ---------------------------------------------------------------------------- compare


def compare_figure(fronts: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
                   objectives: list[str], *, density_above: int = DENSITY_ABOVE
                   ) -> go.Figure:
    """Several studies' trials and fronts on one plot: ``{label: (ranked, front)}``.

    Fronts are joined through their trial points only, as in ``pareto_figure``.
    """
    x_name, y_name = objectives[:2]
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for k, (name, (ranked, front)) in enumerate(fronts.items()):
        c = palette[k % len(palette)]
        cloud = ranked if len(ranked) <= density_above else ranked.sample(
            density_above, random_state=0)
        fig.add_trace(go.Scatter(x=cloud[x_name], y=cloud[y_name], mode="markers",
                                 name=f"{name}: trials" + (
                                     f" ({density_above} of {len(ranked)} shown)"
                                     if len(cloud) < len(ranked) else ""),
                                 opacity=0.35, marker={"color": c, "size": 6},
                                 legendgroup=name))
        f = front.sort_values([x_name, y_name], kind="stable")
        fig.add_trace(go.Scatter(x=f[x_name], y=f[y_name], mode="lines+markers+text",
                                 name=f"{name}: front", line={"color": c},
                                 text=[f"#{int(n)}" for n in f["number"]],
                                 textposition="top right", marker={"size": 10},
                                 legendgroup=name))
    fig.update_layout(title="Pareto fronts compared", xaxis_title=x_name, yaxis_title=y_name,
                      width=900, height=600)
    return fig


# --------------------------------------------------------------------- task objective


def state_task(fig: go.Figure, sentence: str) -> go.Figure:
    """Add which task objective the study selected on (``sentence``) to the title of a
    figure that shows the task accuracy."""
    text = fig.layout.title.text or ""
    top = fig.layout.margin.t if fig.layout.margin.t is not None else 100  # plotly's default
    lines = subtitle_lines(sentence.split("; "))
    fig.update_layout(title={"text": text + subtitle_html(lines)},
                      margin={"t": top + 25 * len(lines)})  # room for the added lines
    return fig


# ------------------------------------------------------------------- held-out domains

DEFAULT_LINE = "#000000"
DIVA_COLOUR = "#1f77b4"


def setting_name(number: int, role: str) -> str:
    """A setting's legend entry: ``#3``, ``#1 method default (...)`` or ``#7 DIVA variant
    (no zay)``."""
    if role == "default":
        return f"#{number} {method_default_name()}"
    if role == "diva":
        return f"#{number} DIVA variant (no zay)"
    return f"#{number}"


def _se(row: pd.Series, measures: list[str]) -> dict[str, Any] | None:
    """± 1 standard error bars from ``<measure>_se`` where stored; ``None`` if none is."""
    se = [row.get(f"{m}_se") for m in measures]
    if all(v is None or pd.isna(v) for v in se):
        return None
    return {"type": "data", "symmetric": True, "visible": True, "thickness": 1, "width": 3,
            "array": [float("nan") if v is None or pd.isna(v) else float(v) for v in se]}


def _style(role: str, k: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Colour, line and marker of a setting by its role (the default stands out)."""
    if role == "default":
        return DEFAULT_LINE, {"color": DEFAULT_LINE, "width": 3.5}, {
            "symbol": "star", "size": 16, "color": "#ffbf00",
            "line": {"width": 1, "color": "black"}}
    if role == "diva":
        return DIVA_COLOUR, {"color": DIVA_COLOUR, "width": 3, "dash": "dash"}, {
            "symbol": "diamond", "size": 10, "color": DIVA_COLOUR}
    colour = TRIAL_COLOURS[k % len(TRIAL_COLOURS)]
    return colour, {"color": colour, "width": 1.6}, {"size": 7, "color": colour}


def held_out_figure(held: HeldOut) -> go.Figure:
    """Held-out-domain accuracy per setting, from ``analysis._heldout.HeldOut``.

    Leave-one-domain-out (``kind == "lodo"``): x is the held-out domain, one line per
    setting through its stored per-domain accuracies, in domain order; the test domain,
    when stored, is a separate point, reported and not selected on. Otherwise
    (``"splits"``): grouped bars of in-domain validation, held-out validation domain and
    test domain accuracy per setting. The method's default is highlighted; error bars
    only where standard errors were stored.
    """
    fig = go.Figure()
    df = held.settings
    if held.kind == "lodo":
        order = list(held.labels)
        if held.test is not None:
            order.append(held.test[1])
        fronts = 0
        for _, row in df.iterrows():
            number, role = int(row["number"]), str(row["role"])
            colour, line, marker = _style(role, fronts)
            fronts += role == "front"
            name = setting_name(number, role)
            fig.add_trace(go.Scatter(
                x=held.labels, y=[float(row[m]) for m in held.measures],
                mode="lines+markers", name=name, legendgroup=name, line=line, marker=marker,
                error_y=_se(row, held.measures),
                hovertemplate=f"{name}<br>held out %{{x}}: %{{y:.4g}}<extra></extra>"))
            if held.test is not None and pd.notna(row.get(held.test[0])):
                fig.add_trace(go.Scatter(
                    x=[held.test[1]], y=[float(row[held.test[0]])], mode="markers",
                    name=f"{name}: test domain", legendgroup=name, showlegend=False,
                    marker={**marker, "symbol": "circle-open", "size": 11,
                            "line": {"width": 2, "color": colour}},
                    error_y=_se(row, [held.test[0]]),
                    hovertemplate=f"{name}<br>%{{x}}: %{{y:.4g}}<extra></extra>"))
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=order,
                         title_text="held-out domain")
        fig.update_yaxes(title_text="held-out accuracy")
        head = "Held-out-domain accuracy per setting (leave-one-domain-out folds)"
    else:
        names = [setting_name(int(n), str(r)) for n, r in zip(df["number"], df["role"],
                                                               strict=True)]
        edge = [3 if r == "default" else 0 for r in df["role"]]
        for j, (measure, text) in enumerate(zip(held.measures, held.labels, strict=True)):
            se = df[f"{measure}_se"] if f"{measure}_se" in df.columns else None
            fig.add_trace(go.Bar(
                x=names, y=df[measure].astype(float).tolist(), name=text,
                marker={"color": ("#9aa0a6", "#1f77b4", "#d62728")[j % 3],
                        "pattern": {"shape": "/" if measure.endswith("test_domain") else ""},
                        "line": {"width": edge, "color": "#ffbf00"}},
                error_y=None if se is None or not se.notna().any() else {
                    "type": "data", "array": se.astype(float).tolist(), "visible": True},
                hovertemplate="%{x}<br>" + text + ": %{y:.4g}<extra></extra>"))
        fig.update_layout(barmode="group")
        fig.update_xaxes(type="category", title_text="setting (method default outlined)")
        fig.update_yaxes(title_text="accuracy")
        head = "In-domain vs held-out-domain accuracy per setting"
    lines = subtitle_lines(held.note.split("; ")) + subtitle_lines(held.task.split("; "))
    fig.update_layout(
        title={"text": head + subtitle_html(lines)},
        width=max(900, 110 * (len(held.labels) + 2)), height=520 + 20 * len(lines),
        margin={"t": 80 + 20 * len(lines)},
        legend={"orientation": "h", "y": -0.18})
    return fig

"""Plotly figures, drawn from computed records (DataFrames), never from a database."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

STAGE_COLOURS = {1: "#1f77b4", 2: "#ff7f0e", 3: "#2ca02c"}
_PARAM_LABELS = {"stage1_epochs": "stage 1 epochs", "stage2_epochs": "stage 2 epochs",
                 "independence_penalty": "λ (independence penalty)",
                 "use_independence_penalty": "penalty on"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def hover_text(df: pd.DataFrame, objectives: list[str]) -> pd.Series:
    """One hover label per trial: number, objectives and settings (built column-wise)."""
    text = "trial #" + df["number"].astype(int).astype(str)
    for c in [*objectives, "stage1_epochs", "stage2_epochs", "use_independence_penalty",
              "independence_penalty", "zay_suppression", "penalty_measure"]:
        if c in df.columns:
            col = df[c].map(_fmt)
            text = text + np.where(col != "", "<br>" + c + ": " + col, "")
    return text


def _hover(df: pd.DataFrame, objectives: list[str]) -> list[str]:
    if "hover" in df.columns:
        return df["hover"].tolist()
    return hover_text(df, objectives).tolist()


def pareto_figure(ranked: pd.DataFrame, objectives: list[str], *, title: str = "",
                  infeasible: pd.DataFrame | None = None) -> go.Figure:
    """All ranked trials, the front highlighted and joined, the method's default marked."""
    x_name, y_name = objectives[:2]
    fig = go.Figure()
    rest = ranked[ranked["pareto_rank"] != 0]
    front = ranked[ranked["pareto_rank"] == 0].sort_values(x_name)
    fig.add_trace(go.Scatter(x=rest[x_name], y=rest[y_name], mode="markers", name="trials",
                             marker={"color": "#9aa0a6", "size": 7},
                             hovertext=_hover(rest, objectives), hoverinfo="text"))
    fig.add_trace(go.Scatter(x=front[x_name], y=front[y_name], mode="lines+markers",
                             name="Pareto front", line={"shape": "hv", "color": "#d62728"},
                             marker={"size": 10}, hovertext=_hover(front, objectives),
                             hoverinfo="text"))
    if infeasible is not None and len(infeasible):
        fig.add_trace(go.Scatter(x=infeasible[x_name], y=infeasible[y_name], mode="markers",
                                 name="infeasible (zay collapsed)",
                                 marker={"symbol": "x", "color": "#7f7f7f", "size": 8},
                                 hovertext=_hover(infeasible, objectives), hoverinfo="text"))
    base = ranked[ranked["baseline"]] if "baseline" in ranked else ranked.iloc[:0]
    if len(base):
        fig.add_trace(go.Scatter(x=base[x_name], y=base[y_name], mode="markers",
                                 name="method default (thirds, λ=10)",
                                 marker={"symbol": "star", "size": 18, "color": "#ffbf00",
                                         "line": {"width": 1, "color": "black"}},
                                 hovertext=_hover(base, objectives), hoverinfo="text"))
    fig.update_layout(title=title or f"Pareto front: {x_name} vs {y_name}",
                      xaxis_title=x_name, yaxis_title=y_name, width=900, height=600)
    return fig


def hypervolume_figure(hv: pd.DataFrame, *, name: str = "hypervolume",
                       fig: go.Figure | None = None) -> go.Figure:
    fig = fig or go.Figure()
    fig.add_trace(go.Scatter(x=hv["number"], y=hv["hypervolume"], mode="lines",
                             line={"shape": "hv"}, name=name))
    fig.update_layout(title="Hypervolume of the feasible front over trials",
                      xaxis_title="trial number", yaxis_title="hypervolume",
                      width=900, height=450)
    return fig


def learning_curves_figure(curves: dict[int, list[dict[str, float]]], *,
                           metric: str = "val_loss") -> go.Figure:
    """Per-epoch ``metric`` of each trial, each segment coloured by its stage."""
    fig = go.Figure()
    shown: set[int] = set()
    for number, rows in curves.items():
        epochs = np.array([r["epoch"] for r in rows if metric in r])
        values = np.array([r[metric] for r in rows if metric in r])
        stages = np.array([int(r["stage"]) for r in rows if metric in r])
        for stage in (1, 2, 3):
            # include the next point so consecutive segments join up
            idx = np.flatnonzero(stages == stage)
            if idx.size == 0:
                continue
            idx = np.append(idx, idx[-1] + 1) if idx[-1] + 1 < len(epochs) else idx
            fig.add_trace(go.Scatter(
                x=epochs[idx], y=values[idx], mode="lines",
                line={"color": STAGE_COLOURS[stage], "width": 1.5},
                name=f"stage {stage}", legendgroup=f"stage {stage}",
                showlegend=stage not in shown, hovertext=f"trial #{number}, stage {stage}",
                hoverinfo="text+x+y"))
            shown.add(stage)
    fig.update_layout(title=f"Learning curves ({metric}), coloured by stage",
                      xaxis_title="epoch", yaxis_title=metric, width=900, height=500)
    return fig


def effects_figure(df: pd.DataFrame, objectives: list[str]) -> go.Figure:
    """Each objective against stage 1 length, stage 2 length, λ (log axis) and penalty."""
    params = [p for p in ("stage1_epochs", "stage2_epochs", "independence_penalty",
                          "use_independence_penalty") if p in df.columns]
    fig = make_subplots(rows=len(objectives), cols=max(1, len(params)),
                        subplot_titles=[f"{o} vs {_PARAM_LABELS[p]}" for o in objectives
                                        for p in params], vertical_spacing=0.12)
    for i, obj in enumerate(objectives, start=1):
        for j, p in enumerate(params, start=1):
            sub = df[df[p].notna() & df[obj].notna()]
            if p == "use_independence_penalty":
                for on in (True, False):
                    part = sub[sub[p] == on]
                    # every point while they can be told apart, outliers beyond that
                    fig.add_trace(go.Box(y=part[obj], name="on" if on else "off",
                                         boxpoints="all" if len(part) <= 500 else "outliers",
                                         showlegend=False), i, j)
            else:
                fig.add_trace(go.Scatter(x=sub[p], y=sub[obj], mode="markers",
                                         showlegend=False, marker={"size": 6},
                                         hovertext=_hover(sub, objectives),
                                         hoverinfo="text"), i, j)
                if p == "independence_penalty":
                    fig.update_xaxes(type="log", row=i, col=j)
            fig.update_yaxes(title_text=obj if j == 1 else None, row=i, col=j)
    fig.update_layout(title="Effects of the staged-training settings", width=1300,
                      height=380 * len(objectives))
    return fig


def parallel_coordinates_figure(df: pd.DataFrame, objectives: list[str]) -> go.Figure:
    dims: list[dict[str, Any]] = []
    for p in ("stage1_epochs", "stage2_epochs", "use_independence_penalty"):
        if p in df.columns:
            dims.append({"label": _PARAM_LABELS[p], "values": df[p].astype(float).fillna(0)})
    if "independence_penalty" in df.columns:
        lam = df["independence_penalty"].astype(float)
        dims.append({"label": "log10 λ (0 when off)",
                     "values": np.log10(lam.where(lam > 0)).fillna(0.0)})
    for o in objectives:
        dims.append({"label": o, "values": df[o]})
    colour = df[objectives[-1]] if len(df) else []
    fig = go.Figure(go.Parcoords(line={"color": colour, "colorscale": "Viridis",
                                       "showscale": True}, dimensions=dims))
    fig.update_layout(title="Settings and objectives of every trial", width=1200, height=500)
    return fig


def compare_figure(fronts: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
                   objectives: list[str]) -> go.Figure:
    """Several studies' trials and fronts on one plot: ``{label: (ranked, front)}``."""
    x_name, y_name = objectives[:2]
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for k, (label, (ranked, front)) in enumerate(fronts.items()):
        c = palette[k % len(palette)]
        fig.add_trace(go.Scatter(x=ranked[x_name], y=ranked[y_name], mode="markers",
                                 name=f"{label}: trials", opacity=0.35,
                                 marker={"color": c, "size": 6}, legendgroup=label))
        f = front.sort_values(x_name)
        fig.add_trace(go.Scatter(x=f[x_name], y=f[y_name], mode="lines+markers",
                                 name=f"{label}: front", line={"color": c, "shape": "hv"},
                                 marker={"size": 10}, legendgroup=label))
    fig.update_layout(title="Pareto fronts compared", xaxis_title=x_name, yaxis_title=y_name,
                      width=900, height=600)
    return fig

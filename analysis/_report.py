"""The report: ranked table and every figure in one self-contained HTML file."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from analysis._figures import (
    effects_figure,
    hover_text,
    hypervolume_figure,
    learning_curves_figure,
    parallel_coordinates_figure,
    pareto_figure,
)
from analysis._load import StudyData
from analysis._rank import hypervolume_over_trials, rank_trials, table_columns

log = logging.getLogger("stagetune.analysis")
FIGURES = ("pareto", "hypervolume", "curves", "effects", "parallel", "heatmap")
MAIN_FIGURES = ("pareto", "hypervolume", "effects")


def build_figures(data: StudyData, ranked: pd.DataFrame, *, curves_top: int = 12,
                  heatmap_trial: int | None = None, which: tuple[str, ...] = FIGURES
                  ) -> dict[str, go.Figure]:
    """Every figure of a study, computed from the ranked trials."""
    from trainer.figures import correlation_heatmap

    figures: dict[str, go.Figure] = {}
    scored = ranked[ranked["pareto_rank"].notna()]
    if "pareto" in which and len(data.objectives) >= 2:
        infeasible = data.trials[(data.trials["state"] == "COMPLETE") & ~data.trials["feasible"]]
        figures["pareto"] = pareto_figure(scored, data.objectives, infeasible=infeasible,
                                          title=f"{data.name}: accuracy vs disentanglement")
    if "hypervolume" in which and len(data.objectives) == 2:
        figures["hypervolume"] = hypervolume_figure(hypervolume_over_trials(data))
    if "curves" in which:
        top = scored.head(curves_top)
        curves = data.epochs(top["trial_id"].astype(int).tolist())
        by_number = {int(n): curves[int(t)] for n, t in zip(top["number"], top["trial_id"],
                                                            strict=True) if int(t) in curves}
        if by_number:
            figures["curves"] = learning_curves_figure(by_number, metric="val_loss")
    if "effects" in which:
        figures["effects"] = effects_figure(scored, data.objectives)
    if "parallel" in which and len(scored):
        figures["parallel"] = parallel_coordinates_figure(scored, data.objectives)
    if "heatmap" in which and len(scored):
        row = (scored.iloc[0] if heatmap_trial is None
               else ranked[ranked["number"] == heatmap_trial].iloc[0])
        corr = data.artifact(int(row["trial_id"]), "correlations")
        if corr:
            fig = correlation_heatmap(corr)
            fig.update_layout(title=f"Latent correlations of trial #{int(row['number'])}")
            figures["heatmap"] = fig
    return figures


def ranked_records(data: StudyData, ranked: pd.DataFrame) -> pd.DataFrame:
    return ranked[table_columns(data, ranked)]


def write_tables(data: StudyData, ranked: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = ranked_records(data, ranked)
    csv_path, json_path = out / "ranked.csv", out / "ranked.json"
    table.to_csv(csv_path, index=False)
    json_path.write_text(table.to_json(orient="records", indent=1))
    return csv_path, json_path


def write_report(data: StudyData, out: Path, *, include_pruned: bool = False,
                 include_infeasible: bool = False, png: bool = True, table_rows: int = 100
                 ) -> Path:
    """Write ``report.html`` (plotly embedded once, works offline), tables and PNGs."""
    ranked = rank_trials(data, include_pruned=include_pruned,
                         include_infeasible=include_infeasible)
    ranked["hover"] = hover_text(ranked, data.objectives)
    figures = build_figures(data, ranked)
    write_tables(data, ranked, out)
    counts = data.trials["state"].value_counts().to_dict()
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(data.objectives, data.directions,
                                                          strict=True))
    table = ranked_records(data, ranked).head(table_rows)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>stagetune report: {html.escape(data.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "section{margin-bottom:2em}</style></head><body>",
        f"<h1>Study {html.escape(data.name)}</h1>",
        f"<p>Objectives: {objectives}. "
        f"Trials: {html.escape(json.dumps(counts))}. Ranked: {len(ranked)} "
        f"({'with' if include_infeasible else 'without'} infeasible, "
        f"{'with' if include_pruned else 'without'} pruned).</p>",
        f"<section id='ranked'><h2>Ranked trials (top {len(table)})</h2>",
        table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""),
        "</section>",
    ]
    for i, (name, fig) in enumerate(figures.items()):
        parts.append(f"<section id='figure-{name}'>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                 div_id=f"fig-{name}"))
        parts.append("</section>")
    parts.append("</body></html>")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    if png:
        from trainer.figures import export_png

        export_png({k: v for k, v in figures.items() if k in MAIN_FIGURES}, out)
    return path

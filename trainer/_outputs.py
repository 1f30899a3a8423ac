"""Files a run leaves in ``--out``: config, metrics, the analysis and its figures.

Figures are plotly: interactive HTML always, PNG when a browser for static export
(kaleido + Chromium) is available; when it is not, that is said once.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trainer._fit import FitResult

log = logging.getLogger("stagetune.trainer")
_static_export_warned = False


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def write_history(history: list[dict[str, float]], out: Path) -> None:
    """Per-epoch metrics as JSON lines and CSV."""
    with open(out / "metrics.jsonl", "w") as fh:
        for row in history:
            fh.write(json.dumps(row) + "\n")
    if history:
        keys = sorted({k for row in history for k in row})
        with open(out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def correlation_heatmap(correlations: dict[str, Any]) -> go.Figure:
    """Group-level and per-dimension |r| heatmaps side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65],
                        subplot_titles=("mean |r| between latent groups", "|r| per dimension"))
    g = correlations["groups"]
    fig.add_trace(go.Heatmap(z=correlations["group_matrix"], x=g, y=g, zmin=0, zmax=1,
                             colorscale="Viridis", texttemplate="%{z:.2f}",
                             showscale=False), 1, 1)
    labels = correlations["dim_labels"]
    fig.add_trace(go.Heatmap(z=correlations["dim_matrix"], x=labels, y=labels, zmin=0,
                             zmax=1, colorscale="Viridis"), 1, 2)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Latent correlations (test split, encoder means)", width=1200,
                      height=560)
    return fig


def label_prediction_figure(probe_accuracy: dict[str, dict[str, float]]) -> go.Figure:
    """Grouped bars: probe accuracy of each factor from each latent group."""
    import plotly.graph_objects as go

    groups = list(probe_accuracy)
    factors = list(next(iter(probe_accuracy.values())))
    fig = go.Figure([
        go.Bar(name=f, x=groups, y=[probe_accuracy[g][f] for g in groups],
               text=[f"{probe_accuracy[g][f]:.2f}" for g in groups])
        for f in factors
    ])
    fig.update_layout(barmode="group", yaxis_range=[0, 1], width=800, height=480,
                      title="Label prediction accuracy from each latent (probe fit on val, "
                            "scored on test)", yaxis_title="accuracy", xaxis_title="latent")
    return fig


def export_figures(figures: dict[str, go.Figure], out: Path) -> list[Path]:
    """Write ``name.html`` for every figure, and ``name.png`` when static export works."""
    global _static_export_warned
    written = []
    for name, fig in figures.items():
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True)  # works offline
        written.append(path)
    try:
        import kaleido  # noqa: F401

        for name, fig in figures.items():
            fig.write_image(out / f"{name}.png")
            written.append(out / f"{name}.png")
    except Exception as exc:  # no kaleido, or no browser for it to drive
        if not _static_export_warned:
            log.warning("static PNG export unavailable (%s); wrote HTML figures only",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            _static_export_warned = True
    return written


def write_run_outputs(result: FitResult, out: Path) -> None:
    """Everything a finished run writes into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(result.config.to_dict(), out / "config.json")
    write_history(result.history, out)
    _write_json(result.final, out / "final_metrics.json")
    _write_json(result.analysis, out / "disentanglement_analysis.json")
    if result.config.write_plots:
        export_figures(
            {
                "correlation_heatmap": correlation_heatmap(result.analysis["correlations"]),
                "label_prediction_accuracy": label_prediction_figure(
                    result.analysis["probe_accuracy"]
                ),
            },
            out,
        )

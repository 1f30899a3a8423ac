"""Plotly figures of one run (torch-free, so ``analysis`` draws them too), and their export.

Interactive HTML always; PNG when a browser for static export (kaleido + Chromium) is
available. When it is not, that is said once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger("stagetune.figures")
_static_export_warned = False


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


def export_png(figures: dict[str, go.Figure], out: Path) -> list[Path]:
    """``name.png`` for every figure when static export works; says once when it does not."""
    global _static_export_warned
    written: list[Path] = []
    try:
        import kaleido  # noqa: F401
        import plotly.io as pio

        paths = [out / f"{name}.png" for name in figures]
        # one browser session for all figures: starting Chromium per figure costs seconds
        pio.write_images(list(figures.values()), paths)
        written.extend(paths)
    except Exception as exc:  # no kaleido, or no browser for it to drive
        if not _static_export_warned:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("static PNG export unavailable (%s); wrote HTML figures only", reason)
            _static_export_warned = True
    return written


def export_figures(figures: dict[str, go.Figure], out: Path, *, png: bool = True
                   ) -> list[Path]:
    """Write ``name.html`` (plotly embedded, works offline) and, if asked and possible,
    ``name.png``."""
    written = []
    for name, fig in figures.items():
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True)
        written.append(path)
    return written + (export_png(figures, out) if png else [])

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
    """Group-level dependence (debiased linear CKA) and per-dimension |r| heatmaps."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65],
                        subplot_titles=("debiased linear CKA between latent groups",
                                        "|r| per dimension"))
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
                      title="Label prediction accuracy from each latent's posterior samples "
                            "(probe fit on val, scored on test)",
                      yaxis_title="accuracy", xaxis_title="latent")
    return fig


def figure_size(fig: go.Figure) -> tuple[int, int]:
    """The figure's own layout size in pixels (plotly's 700 x 500 where it sets none)."""
    width = fig.layout.width or 700
    height = fig.layout.height or 500
    return int(width), int(height)


def export_png(figures: dict[str, go.Figure], out: Path, *, scale: float = 1.0) -> list[Path]:
    """``name.png`` for every figure, at the figure's own layout size times ``scale``,
    when static export works; says once (with the cause and the fix) when it does not."""
    global _static_export_warned
    written: list[Path] = []
    if not figures:
        return written
    try:
        import kaleido  # noqa: F401
        import plotly.io as pio

        paths = [out / f"{name}.png" for name in figures]
        sizes = [figure_size(fig) for fig in figures.values()]
        # one browser session for all figures: starting Chromium per figure costs seconds;
        # without explicit sizes every image would come out 700 x 500
        pio.write_images(list(figures.values()), paths, width=[w for w, _ in sizes],
                         height=[h for _, h in sizes], scale=scale)
        written.extend(paths)
    except Exception as exc:  # no kaleido, or no browser for it to drive
        if not _static_export_warned:
            log.warning("%s; wrote HTML figures only", _export_failure(exc))
            _static_export_warned = True
    return written


def _export_failure(exc: Exception) -> str:
    """Why static export failed, and what to do about it, in one line."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ModuleNotFoundError) and "kaleido" in text:
        return ("PNG export needs kaleido, which is not installed: "
                "pip install 'stagetune[png]'")
    lowered = text.lower()
    if any(k in lowered for k in ("chrome", "chromium", "browser")):
        return ("PNG export needs a Chromium browser for kaleido and found none "
                f"({text[:160] or type(exc).__name__}): install one with "
                "'apt-get install chromium' (Debian/Ubuntu) or 'plotly_get_chrome'")
    return (f"PNG export failed ({type(exc).__name__}: {text[:160]}); kaleido drives a "
            "Chromium browser: 'apt-get install chromium' provides one")


def export_figures(figures: dict[str, go.Figure], out: Path, *, png: bool = True,
                   scale: float = 1.0, shared_plotlyjs: bool = False) -> list[Path]:
    """Write ``name.html`` (works offline) and, if asked and possible, ``name.png``.

    With ``shared_plotlyjs`` the HTML files load one ``plotly.min.js`` written beside
    them instead of embedding the library (about 4.8 MB) in each file.
    """
    written = []
    for name, fig in figures.items():
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs="directory" if shared_plotlyjs else True)
        written.append(path)
    if shared_plotlyjs and figures:
        written.append(out / "plotly.min.js")
    return written + (export_png(figures, out, scale=scale) if png else [])

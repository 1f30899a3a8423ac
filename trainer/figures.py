"""Plotly figures of one run (torch-free, so ``analysis`` draws them too), and their export.

Interactive HTML always; PNG through plotly's static export (kaleido + Chromium) where
a browser is available. Where it is not, a figure that has a matplotlib twin (the run's
``correlation_heatmap`` and ``label_prediction_accuracy``: ``static_drawers``) is drawn
by matplotlib instead, and the others are left as HTML; that is said once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure as MplFigure

log = logging.getLogger("stagetune.figures")
_static_export_warned = False

#: draws one figure as a PNG at the given path, ``scale`` times its layout size
StaticDrawer = Callable[[Path, float], None]
#: the longest part of a library's own error text quoted in the export warning
CAUSE_CHARS = 160


CORRELATION_TITLE = "Latent correlations (test split, posterior samples)"
LABEL_PREDICTION_TITLE = ("Label prediction accuracy from each latent's posterior samples "
                          "(probe fit on val, scored on test)")


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
    fig.update_layout(title=CORRELATION_TITLE, width=1200, height=560)
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
                      title=LABEL_PREDICTION_TITLE,
                      yaxis_title="accuracy", xaxis_title="latent")
    return fig


def figure_size(fig: go.Figure) -> tuple[int, int]:
    """The figure's own layout size in pixels (plotly's 700 x 500 where it sets none)."""
    width = fig.layout.width or 700
    height = fig.layout.height or 500
    return int(width), int(height)


def export_png(figures: dict[str, go.Figure], out: Path, *, scale: float = 1.0,
               static_drawers: Mapping[str, StaticDrawer] | None = None) -> list[Path]:
    """``name.png`` for every figure, at the figure's own layout size times ``scale``.

    Plotly's static export draws them where it works. Where it does not (no kaleido, or
    no browser for it), each figure named in ``static_drawers`` is drawn by its drawer
    (matplotlib) instead and the others are skipped; that is said once per process, with
    the cause and the fix, in one line.
    """
    global _static_export_warned
    if not figures:
        return []
    try:
        return _plotly_png(figures, out, scale)
    except Exception as exc:  # no kaleido, or no browser for it to drive
        drawers = {n: d for n, d in (static_drawers or {}).items() if n in figures}
        written, fallback = _draw_static(drawers, out, scale)
        if not _static_export_warned:
            log.warning("%s; %s", _export_failure(exc), fallback)
            _static_export_warned = True
        return written


def _plotly_png(figures: dict[str, go.Figure], out: Path, scale: float) -> list[Path]:
    import kaleido  # noqa: F401
    import plotly.io as pio

    paths = [out / f"{name}.png" for name in figures]
    sizes = [figure_size(fig) for fig in figures.values()]
    # one browser session for all figures: starting Chromium per figure costs seconds;
    # without explicit sizes every image would come out 700 x 500
    pio.write_images(list(figures.values()), paths, width=[w for w, _ in sizes],
                     height=[h for _, h in sizes], scale=scale)
    return paths


def _draw_static(drawers: Mapping[str, StaticDrawer], out: Path, scale: float
                 ) -> tuple[list[Path], str]:
    """Each drawer's PNG, and what the export warning says was done instead."""
    if not drawers:
        return [], "wrote HTML figures only"
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return [], "wrote HTML figures only (matplotlib, which would draw them, is missing: " \
                   "pip install matplotlib)"
    written = []
    for name, draw in drawers.items():
        path = out / f"{name}.png"
        draw(path, scale)
        written.append(path)
    names = ", ".join(p.name for p in written)
    return written, f"drew {names} with matplotlib instead"


def _export_failure(exc: Exception) -> str:
    """Why static export failed, and what to do about it, in one line."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ModuleNotFoundError) and "kaleido" in text:
        return ("PNG export through plotly needs kaleido, which is not installed "
                "(pip install 'stagetune[png]')")
    lowered = text.lower()
    if any(k in lowered for k in ("chrome", "chromium", "browser")):
        # the library's own text (how to download Chrome) would only compete with the fix
        where = os.environ.get("BROWSER_PATH")
        found = f"none at BROWSER_PATH={where}" if where else "none"
        return ("PNG export through plotly needs a Chromium browser for kaleido and found "
                f"{found} (install one: 'apt-get install chromium' on Debian/Ubuntu, or "
                "'plotly_get_chrome')")
    return (f"PNG export through plotly failed ({type(exc).__name__}"
            + (f": {_clip_words(text, CAUSE_CHARS)}" if text else "")
            + "; kaleido drives a Chromium browser: 'apt-get install chromium' provides one)")


def _clip_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary ("..." if cut)."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:.") + " ..."


def export_figures(figures: dict[str, go.Figure], out: Path, *, png: bool = True,
                   scale: float = 1.0, shared_plotlyjs: bool = False,
                   static_drawers: Mapping[str, StaticDrawer] | None = None) -> list[Path]:
    """Write ``name.html`` (works offline) and, if asked, ``name.png`` (``export_png``).

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
    if png:
        written += export_png(figures, out, scale=scale, static_drawers=static_drawers)
    return written


# -- the run's two figures drawn by matplotlib (no browser needed) -----------------------


def _mpl_figure(width: int, height: int, scale: float) -> MplFigure:
    """A matplotlib figure of ``width`` x ``height`` pixels times ``scale``, no pyplot
    (no global state, no display backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width / 100, height / 100), dpi=100 * scale,
                  layout="constrained")


def _group_ticks(labels: list[str]) -> tuple[list[float], list[str], list[float]]:
    """Tick positions and names at the centre of each latent group's dimensions
    (``"zy[3]"`` belongs to ``zy``), and the positions of the lines between groups."""
    groups = [label.split("[", 1)[0] for label in labels]
    starts = [i for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    ends = [*starts[1:], len(groups)]
    centres = [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)]
    return centres, [groups[i] for i in starts], [b - 0.5 for b in ends[:-1]]


def correlation_heatmap_png(correlations: dict[str, Any], path: Path, scale: float = 1.0
                            ) -> None:
    """``correlation_heatmap`` drawn by matplotlib into ``path`` (a PNG, 1200 x 560)."""
    fig = _mpl_figure(1200, 560, scale)
    left, right = fig.subplots(1, 2, width_ratios=[0.35, 0.65])
    groups, group_matrix = correlations["groups"], correlations["group_matrix"]
    left.imshow(group_matrix, vmin=0, vmax=1, cmap="viridis")
    left.set(xticks=range(len(groups)), xticklabels=groups, yticks=range(len(groups)),
             yticklabels=groups, title="debiased linear CKA between latent groups")
    for i, row in enumerate(group_matrix):
        for j, value in enumerate(row):
            # dark text on viridis' light (yellow) end, light text on its dark end
            left.text(j, i, f"{value:.2f}", ha="center", va="center",
                      color="black" if value > 0.6 else "white")
    image = right.imshow(correlations["dim_matrix"], vmin=0, vmax=1, cmap="viridis",
                         interpolation="nearest")
    centres, names, bounds = _group_ticks(correlations["dim_labels"])
    right.set(xticks=centres, xticklabels=names, yticks=centres, yticklabels=names,
              title="|r| per dimension")
    for b in bounds:
        right.axvline(b, color="white", linewidth=0.8)
        right.axhline(b, color="white", linewidth=0.8)
    fig.colorbar(image, ax=right, shrink=0.8)
    fig.suptitle(CORRELATION_TITLE)
    fig.savefig(path, format="png")


def label_prediction_png(probe_accuracy: dict[str, dict[str, float]], path: Path,
                         scale: float = 1.0) -> None:
    """``label_prediction_figure`` drawn by matplotlib into ``path`` (a PNG, 800 x 480)."""
    import numpy as np

    fig = _mpl_figure(800, 480, scale)
    ax = fig.subplots()
    groups = list(probe_accuracy)
    factors = list(next(iter(probe_accuracy.values())))
    width = 0.8 / len(factors)
    x = np.arange(len(groups))
    for k, factor in enumerate(factors):
        values = [probe_accuracy[g][factor] for g in groups]
        bars = ax.bar(x + (k - (len(factors) - 1) / 2) * width, values, width, label=factor)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    ax.set(xticks=x, xticklabels=groups, ylim=(0, 1.05), xlabel="latent", ylabel="accuracy")
    ax.legend(title="factor", loc="upper right")
    ax.set_title(LABEL_PREDICTION_TITLE, fontsize=9)
    fig.savefig(path, format="png")

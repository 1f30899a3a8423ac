"""The report's answer to "can a cheaper budget be trusted?", and whether the objectives
separate the trials at all.

Computed first (``search.checks.fidelity``'s stored summary of the latest check,
``search.checks.resolution`` on the study's trial table), drawn second: one figure per
objective, a panel per cheaper budget with every setting's mean ± SE at that budget
against its mean ± SE at the target, and a table of the rank statistics with their
bootstrap intervals.
"""

from __future__ import annotations

import html
import math
import shlex
from typing import Any

from analysis._load import StudyData
from search.checks.fidelity import RHO_BAR, interval_text
from search.checks.resolution import resolution_warnings, study_resolution
from search.db.storage import latest_fidelity_summary, redact


def latest_fidelity(data: StudyData) -> dict[str, Any] | None:
    """The scored result of the study's latest fidelity check, or ``None``."""
    return latest_fidelity_summary(data.engine, data.name)


def report_resolution(data: StudyData) -> dict[str, Any]:
    """``search.checks.resolution.study_resolution`` over the report's complete trials."""
    trials = data.trials[data.trials["state"] == "COMPLETE"]
    names = list(data.objectives)
    spec = data.objective_spec or {}
    if data.scalar and spec.get("task") and spec.get("disentanglement"):
        names = [spec["task"], spec["disentanglement"]]  # what the weighted score mixes
    return study_resolution(trials.to_dict("records"), names, replicated=data.replicates > 1)


def fidelity_command(data: StudyData) -> str:
    url = redact(data.url or str(data.engine.url))
    words = ["stagetune", "fidelity", "--storage", url, "--study", data.name]
    return " ".join(shlex.quote(w) for w in words)


def fidelity_figure(summary: dict[str, Any], objective: str):
    """One panel per cheaper budget: each setting's mean ± SE there (x) against at the
    target (y); the default drawn apart."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    records = [r for r in summary["records"] if r["objective"] == objective and "points" in r]
    cols = min(4, len(records))
    rows = math.ceil(len(records) / cols)
    titles = [f"{r['budget']}: ρ {interval_text(r, 'spearman')}" if "error" not in r
              else f"{r['budget']}: n/a" for r in records]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.06, vertical_spacing=0.16)
    for i, r in enumerate(records):
        row, col = i // cols + 1, i % cols + 1
        for is_default in (False, True):
            pts = [p for p in r["points"] if (p["setting"] == "default") == is_default]
            fig.add_trace(go.Scatter(
                x=[p["cheap"] for p in pts], y=[p["target"] for p in pts],
                error_x={"type": "data", "array": [p["cheap_se"] for p in pts],
                         "thickness": 1, "width": 0},
                error_y={"type": "data", "array": [p["target_se"] for p in pts],
                         "thickness": 1, "width": 0},
                mode="markers", text=[p["setting"] for p in pts],
                hovertemplate="%{text}<br>cheap %{x:.4f}<br>target %{y:.4f}<extra></extra>",
                marker={"size": 10 if is_default else 7, "symbol": "star" if is_default
                        else "circle", "color": "#d62728" if is_default else "#1f77b4"},
                name="method's default" if is_default else "setting",
                legendgroup="default" if is_default else "setting", showlegend=(i == 0)),
                row=row, col=col)
        fig.update_xaxes(title_text=f"at {r['budget']}", row=row, col=col)
        fig.update_yaxes(title_text="at the target" if col == 1 else None, row=row, col=col)
    fig.update_layout(
        title={"text": f"{objective}: a cheaper budget against the target "
                       f"({summary['target_epochs']} epochs), mean ± SE over "
                       f"{len(summary['seeds'])} paired seeds", "font": {"size": 14}},
        height=300 * rows + 90, width=1100, template="plotly_white",
        margin={"t": 90, "l": 60, "r": 20, "b": 50})
    return fig


def _table(summary: dict[str, Any]) -> str:
    head = ("<tr><th>objective</th><th>cheaper budget</th><th>Spearman ρ [95% CI]</th>"
            "<th>Kendall τ [95% CI]</th><th>top-k overlap</th><th>regret [95% CI]</th>"
            "<th>faithful</th></tr>")
    body = []
    for r in summary["records"]:
        if "error" in r or r.get("constant"):
            why = r.get("error") or "no spread between settings at this budget: it ranks nothing"
            body.append(f"<tr><td>{html.escape(r['objective'])}</td>"
                        f"<td>{html.escape(r['budget'])}</td>"
                        f"<td colspan='5'>{html.escape(why)}</td></tr>")
            continue
        body.append(
            f"<tr><td>{html.escape(r['objective'])}</td>"
            f"<td>{html.escape(r['budget'])} ({html.escape(r['describe'])})</td>"
            f"<td>{interval_text(r, 'spearman')}</td><td>{interval_text(r, 'kendall')}</td>"
            f"<td>{r['top_k_overlap']:.2f} (k = {r['k']})</td>"
            f"<td>{r['regret']:.4f} [{r['regret_lo']:.4f}, {r['regret_hi']:.4f}]</td>"
            f"<td>{'yes' if r['faithful'] else 'no'}</td></tr>")
    return f"<table class='confirm'>{head}{''.join(body)}</table>"


def section_html(data: StudyData, summary: dict[str, Any] | None,
                 resolution: dict[str, Any]) -> str:
    """The report's section: the resolution warnings, then the latest fidelity check (or
    the command that runs one)."""
    parts = ["<section id='fidelity'><h2>Can a cheaper budget be trusted?</h2>"]
    for line in resolution_warnings(resolution):
        parts.append(f"<p class='warning'><b>{html.escape(line)}</b></p>")
    if summary is None:
        parts.append("<p>No fidelity check yet: nothing says whether a cheaper budget (a "
                     "shorter schedule, fewer sources, or a scheduler's rung) ranks "
                     "settings as this study's budget does. Run "
                     f"<code>{html.escape(fidelity_command(data))}</code>.</p></section>")
        return "".join(parts)
    runs = summary["runs"]
    state = "complete" if summary["complete"] else "incomplete"
    parts.append(
        f"<p class='meta'>Fidelity check {summary['id']} ({state}: {runs['complete']} of "
        f"{runs['total']} runs): {summary['settings']} settings, the method's default among "
        f"them, × {len(summary['seeds'])} paired seeds, against the target of "
        f"{summary['target_epochs']} epochs. Intervals: bootstrap over settings with seeds "
        f"resampled within settings. A budget is faithful where the lower end of ρ's "
        f"interval is at least {RHO_BAR}; regret is the target value lost by taking the "
        "cheaper budget's best setting.</p>")
    parts.append(_table(summary))
    parts.append("</section>")
    return "".join(parts)


def fidelity_figures(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The section's figures by name (none without a check)."""
    if summary is None:
        return {}
    objectives = dict.fromkeys(r["objective"] for r in summary["records"] if "points" in r)
    return {f"fidelity_{o}": fidelity_figure(summary, o) for o in objectives}

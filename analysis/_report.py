"""The report: a readable header, a sortable ranked table, the confirmation against the
method's default and every figure in one self-contained HTML file (plotly embedded once,
works offline)."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis._confirm import (
    confirmable,
    header_sentence,
    latest_confirmation,
    section_html,
)
from analysis._fidelity import fidelity_figures, latest_fidelity, report_resolution
from analysis._fidelity import section_html as fidelity_section
from analysis._figures import (
    effects_figure,
    held_out_figure,
    hover_text,
    hypervolume_figure,
    importance_figure,
    learning_curves_figure,
    parallel_coordinates_figure,
    pareto_figure,
    state_task,
)
from analysis._format import FRONT_END, crowding_texts, float_formatter, mean_se_texts
from analysis._heldout import held_out_records, task_sentence
from analysis._load import AnalysisError, StudyData
from analysis._rank import (
    COLUMN_NOTES,
    default_reference,
    hypervolume_over_trials,
    rank_trials,
    study_notes,
    table_columns,
)
from search.db.study import FAIL_REASON_ATTR, ORPHAN_ATTR
from search.pareto import hypervolume_2d

log = logging.getLogger("stagetune.analysis")
FIGURES = ("pareto", "domains", "hypervolume", "curves", "effects", "parallel", "importance",
           "heatmap")
MAIN_FIGURES = ("pareto", "domains", "hypervolume", "effects", "importance")
#: the figures that show the task accuracy: their titles say which task objective it is
TASK_FIGURES = ("pareto", "hypervolume", "effects", "parallel", "importance")


@dataclass
class FigureSet:
    """The figures drawn, and for each one that could not be drawn, why."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def heatmap_trial_row(data: StudyData, ranked: pd.DataFrame, number: int) -> pd.Series:
    """The ranked row of trial ``number``; a clear error when it cannot have a heatmap."""
    rows = data.trials[data.trials["number"] == number]
    if rows.empty:
        last = int(data.trials["number"].max())
        raise AnalysisError(f"no trial {number} in study {data.name!r} (trials 0-{last})")
    row = rows.iloc[0]
    state = str(row["state"])
    if state != "COMPLETE":
        raise AnalysisError(f"trial {number} is {state.lower()}: it has no final latent "
                            "correlations; choose a complete trial (see 'analyze rank')")
    hit = ranked[ranked["number"] == number]
    if hit.empty:
        raise AnalysisError(f"trial {number} is infeasible (zay collapsed) and not ranked; "
                            "pass --include-infeasible to draw it")
    return hit.iloc[0]


@dataclass(frozen=True)
class _FigureInputs:
    """What the figure builders draw from: the study, its ranked trials and the scored
    ones (those with a Pareto rank, with hover texts), and the options of the call."""

    data: StudyData
    ranked: pd.DataFrame
    scored: pd.DataFrame
    curves_top: int
    heatmap_trial: int | None
    which: tuple[str, ...]

    @property
    def n_obj(self) -> int:
        return len(self.data.objectives)


#: a builder's answer: the figure, why it is not drawn, or None (no such figure, silently)
_Built = go.Figure | str | None

_NO_TRIAL = "no complete feasible trial yet"


def _pareto(f: _FigureInputs) -> _Built:
    data, scored = f.data, f.scored
    if f.n_obj < 2:
        return ("a scalar study has no Pareto front: the ranked table "
                "and the effects show the best trials")
    if scored.empty:
        return _NO_TRIAL
    complete = data.trials[data.trials["state"] == "COMPLETE"]
    infeasible = complete[~complete["feasible"]]
    if "feasible" in scored and not scored["feasible"].all():
        infeasible = infeasible.iloc[:0]  # ranked (--include-infeasible): shown as trials
    reference = default_reference(data)
    hv = None
    if f.n_obj == 2:
        front = scored[scored["pareto_rank"] == 0]
        hv = hypervolume_2d(front[data.objectives].to_numpy(np.float64),
                            data.directions, reference)
    return pareto_figure(scored, data.objectives, infeasible=infeasible, reference=reference,
                         hypervolume=hv, title=f"{data.name}: {data.objectives[0]} vs "
                                               f"{data.objectives[1]}")


def _domains(f: _FigureInputs) -> _Built:
    held = held_out_records(f.data, f.ranked)
    if held is not None:
        return held_out_figure(held)
    if f.which != FIGURES:  # asked for by name; otherwise a study without held-out
        # domains simply has no such figure
        return ("the study stored no held-out-domain accuracy "
                "(no --lodo folds, no --val-domain or --test-domain)")
    return None


def _hypervolume(f: _FigureInputs) -> _Built:
    if f.n_obj != 2:
        return ("a scalar study has no front to measure" if f.n_obj == 1 else
                "the hypervolume history is drawn for two objectives; this study has "
                f"{f.n_obj}")
    hv = hypervolume_over_trials(f.data)
    if hv.empty:
        return _NO_TRIAL
    return hypervolume_figure(hv, reference=default_reference(f.data),
                              objectives=f.data.objectives)


def _curves(f: _FigureInputs) -> _Built:
    top = f.scored.head(f.curves_top)
    curves = f.data.epochs(top["trial_id"].astype(int).tolist())
    by_number = {int(n): curves[int(t)] for n, t in zip(top["number"], top["trial_id"],
                                                        strict=True) if int(t) in curves}
    if not by_number:
        return ("the study holds no per-epoch rows for its best trials "
                "(stagetune_epoch_metrics is empty or missing)")
    return learning_curves_figure(by_number, metric="val_loss", of=len(f.scored))


def _effects(f: _FigureInputs) -> _Built:
    if f.scored.empty:
        return _NO_TRIAL
    return effects_figure(f.scored, f.data.objectives)


def _parallel(f: _FigureInputs) -> _Built:
    if f.scored.empty:
        return _NO_TRIAL
    return parallel_coordinates_figure(f.scored, f.data.objectives)


def _importance(f: _FigureInputs) -> _Built:
    from analysis._importance import param_importances

    try:
        table = param_importances(f.data, f.scored)
        return importance_figure(table, len(f.scored))
    except AnalysisError as exc:
        return str(exc)


def _heatmap(f: _FigureInputs) -> _Built:
    """The latent correlations of --heatmap-trial (an error where it has none) or of the
    best trial."""
    from trainer.figures import correlation_heatmap

    if f.heatmap_trial is not None:
        row = heatmap_trial_row(f.data, f.ranked, f.heatmap_trial)
    elif f.scored.empty:
        return _NO_TRIAL
    else:
        row = f.scored.iloc[0]
    corr = f.data.artifact(int(row["trial_id"]), "correlations")
    if corr:
        fig = correlation_heatmap(corr)
        fig.update_layout(title=f"Latent correlations of trial #{int(row['number'])}")
        return fig
    if f.heatmap_trial is not None:
        raise AnalysisError(f"trial {f.heatmap_trial} stored no latent correlations")
    return f"the best trial #{int(row['number'])} stored no latent correlations"


#: each figure's builder, in the order FIGURES lists them (and the report shows them)
_BUILDERS = {"pareto": _pareto, "domains": _domains, "hypervolume": _hypervolume,
             "curves": _curves, "effects": _effects, "parallel": _parallel,
             "importance": _importance, "heatmap": _heatmap}
assert tuple(_BUILDERS) == FIGURES


def build_figures(data: StudyData, ranked: pd.DataFrame, *, curves_top: int = 12,
                  heatmap_trial: int | None = None, which: tuple[str, ...] = FIGURES
                  ) -> FigureSet:
    """Every figure of a study, computed from the ranked trials; what cannot be drawn is
    listed with the reason."""
    scored = ranked[ranked["pareto_rank"].notna()]
    if "hover" not in scored.columns and len(scored):
        scored = scored.assign(hover=hover_text(scored, data.objectives))
    inputs = _FigureInputs(data, ranked, scored, curves_top, heatmap_trial, which)
    out = FigureSet()
    for name, builder in _BUILDERS.items():
        if name not in which:
            continue
        built = builder(inputs)
        if isinstance(built, str):
            out.skipped[name] = built
        elif built is not None:
            out.figures[name] = built
    sentence = task_sentence(data.objective_spec)
    for name in TASK_FIGURES:
        if name in out.figures:
            state_task(out.figures[name], sentence)
    return out


def ranked_records(data: StudyData, ranked: pd.DataFrame) -> pd.DataFrame:
    return ranked[table_columns(data, ranked)]


def write_tables(data: StudyData, ranked: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = ranked_records(data, ranked)
    csv_path, json_path = out / "ranked.csv", out / "ranked.json"
    table.to_csv(csv_path, index=False)
    json_path.write_text(table.to_json(orient="records", indent=1))
    return csv_path, json_path


# ------------------------------------------------------------------------------ header


def state_counts(data: StudyData) -> dict[str, int]:
    """Trials by state, with infeasible (complete, zay collapsed) counted on their own."""
    t = data.trials
    complete = t["state"] == "COMPLETE"
    counts = {"trials": len(t), "complete": int(complete.sum()),
              "infeasible": int((complete & ~t["feasible"]).sum())}
    for state, name in (("PRUNED", "pruned"), ("FAIL", "failed"), ("RUNNING", "running"),
                        ("WAITING", "waiting")):
        counts[name] = int((t["state"] == state).sum())
    # trials a stopped or lost driver left are stored FAIL but re-queued: not failures
    counts["interrupted"] = int(_interrupted(t).sum())
    counts["failed"] -= counts["interrupted"]
    return counts


def _interrupted(t: pd.DataFrame) -> pd.Series:
    """FAIL trials that a stopped or lost driver left (re-queued, as status counts them)."""
    if ORPHAN_ATTR not in t.columns:
        return pd.Series(False, index=t.index)
    return (t["state"] == "FAIL") & t[ORPHAN_ATTR].map(lambda v: v is True or v == 1)


def fail_reasons(data: StudyData, *, interrupted: bool = False) -> dict[str, int]:
    """The reasons of the failed trials (``interrupted``: of those a driver left)."""
    t = data.trials
    if FAIL_REASON_ATTR not in t.columns:
        return {}
    mine = (t["state"] == "FAIL") & (_interrupted(t) == interrupted)
    reasons = t.loc[mine, FAIL_REASON_ATTR].dropna().astype(str)
    return reasons.value_counts().to_dict()


def counts_sentence(data: StudyData) -> str:
    c = state_counts(data)
    parts = [f"{c['complete']} complete"
             + (f" ({c['infeasible']} of them infeasible: zay collapsed)" if c["infeasible"]
                else "")]
    parts += [f"{c[k]} {k}" for k in ("pruned", "failed", "running", "waiting") if c[k]
              or k in ("pruned", "failed")]
    if c["interrupted"]:
        parts.append(f"{c['interrupted']} interrupted (re-queued)")
    text = f"{c['trials']} trials: " + ", ".join(parts) + "."
    reasons = fail_reasons(data)
    if reasons:
        text += " Failures: " + "; ".join(f"{r} (×{n})" for r, n in reasons.items()) + "."
    elif c["failed"]:
        text += " No failure reason was recorded."
    left = fail_reasons(data, interrupted=True)
    if left:
        text += (" Interrupted, not failures and not counted toward --n-trials (their "
                 "settings were queued to run again): "
                 + "; ".join(f"{r} (×{n})" for r, n in left.items()) + ".")
    return text


def _values(data: StudyData, row: pd.Series, fmts: dict) -> str:
    return ", ".join(f"{o} {fmts[o](float(row[o]))}" for o in data.objectives)


def best_sentence(data: StudyData, ranked: pd.DataFrame) -> str:
    """The best trade-offs (or the best trial) in one sentence."""
    scored = ranked[ranked["pareto_rank"].notna()]
    if scored.empty:
        return "No complete feasible trial yet."
    base = scored[scored["baseline"].astype(bool)] if "baseline" in scored else scored.iloc[:0]
    # digits enough to tell apart the trials this sentence names (not all 10,000)
    named = pd.concat([scored.head(1), scored[scored["pareto_rank"] == 0], base])
    fmts = {o: float_formatter(named[o].to_numpy(np.float64)) for o in data.objectives}
    if data.scalar:
        best = scored.iloc[0]
        text = f"Best: trial #{int(best['number'])} with {_values(data, best, fmts)}"
        if len(base) and int(base.iloc[0]["number"]) != int(best["number"]):
            b = base.iloc[0]
            text += (f"; the method default #{int(b['number'])} ranks "
                     f"{int(b['position'])} of {len(scored)} ({_values(data, b, fmts)})")
        return text + "."
    front = scored[scored["pareto_rank"] == 0]
    ends = []
    for o, d in zip(data.objectives, data.directions, strict=True):
        pick = front[o].idxmax() if d == "maximize" else front[o].idxmin()
        row = front.loc[pick]
        others = ", ".join(f"{p} {fmts[p](float(row[p]))}" for p in data.objectives if p != o)
        ends.append(f"#{int(row['number'])} is best on {o} ({fmts[o](float(row[o]))}, "
                    f"with {others})")
    text = (f"Best trade-offs: the Pareto front holds {len(front)} of {len(scored)} ranked "
            f"trials; " + "; ".join(ends))
    if len(base):
        b = base.iloc[0]
        where = ("is on the front" if b["pareto_rank"] == 0
                 else f"is in front {int(b['pareto_rank']) + 1}")
        text += f"; the method default #{int(b['number'])} {where} ({_values(data, b, fmts)})"
    return text + "."


# ------------------------------------------------------------------------------- table

_SORT_SCRIPT = """
<script>
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.title = (th.title ? th.title + ' (click to sort)' : 'click to sort');
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var up = th.dataset.dir !== 'up';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { h.dataset.dir = ''; });
    th.dataset.dir = up ? 'up' : 'down';
    function key(r) {
      var cell = r.cells[col], t = (cell.dataset.key || cell.textContent).trim();
      var v = parseFloat(t);
      return t === '' ? null : (isNaN(v) ? t : v);
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null) return 1;
      if (y === null) return -1;
      var c = (typeof x === 'number' && typeof y === 'number') ? x - y
              : String(x).localeCompare(String(y));
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>
"""

_STYLE = """
<style>
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em 2em;color:#202124;
     max-width:1400px}
h1{margin-bottom:.2em} .meta{color:#5f6368;margin-top:0}
.summary p{margin:.35em 0;line-height:1.45}
.table-wrap{max-height:32em;overflow:auto;border:1px solid #dadce0;max-width:100%}
table.sortable{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}
table.sortable th{position:sticky;top:0;background:#f1f3f4;cursor:pointer;
  white-space:normal;overflow-wrap:normal;word-break:normal;hyphens:manual;max-width:9em;
  padding:4px 6px;border:1px solid #dadce0;font-weight:600}
table.sortable th[data-dir=up]::after{content:' ▲'}
table.sortable th[data-dir=down]::after{content:' ▼'}
table.sortable td{border:1px solid #e8eaed;padding:2px 6px;text-align:right;
  white-space:nowrap}
table.sortable tr.front td{background:#fdecea}
section{margin-bottom:2em} .skipped li{color:#5f6368}
table.confirm{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
table.confirm th,table.confirm td{border:1px solid #dadce0;padding:3px 8px;text-align:right}
table.confirm th{background:#f1f3f4} code{background:#f1f3f4;padding:0 .25em}
p.warning{color:#b3261e}
</style>
"""


def table_cells(data: StudyData, table: pd.DataFrame) -> dict[str, list[str]]:
    """The ranked rows as text, column by column (header -> cells).

    Each float column gets the digits it needs to tell trials apart. An objective with a
    standard error column (a study swept with replicates) is one column, ``<name> ± SE``,
    reading ``0.912 ± 0.004``; the tables written to files keep the two numbers apart.
    """
    cells: dict[str, list[str]] = {}
    folded = {f"{o}_se" for o in data.objectives if f"{o}_se" in table.columns}
    for c in table.columns:
        col = table[c]
        if c in folded:
            continue
        if f"{c}_se" in folded:
            cells[f"{c} ± SE"] = mean_se_texts(col.to_numpy(np.float64),
                                               table[f"{c}_se"].to_numpy(np.float64))
        elif c == "crowding":
            cells[c] = crowding_texts(col.to_numpy(np.float64))
        elif pd.api.types.is_float_dtype(col):
            fmt = float_formatter(col.to_numpy(np.float64))
            cells[c] = [fmt(float(v)) for v in col]
        else:
            cells[c] = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                        for v in col]
    return cells


def replicates_note(data: StudyData) -> str:
    """What the objectives of a study swept with replicates are, in a sentence ("" for
    a study swept with one seed per setting)."""
    if data.replicates <= 1:
        return ""
    return (f"Objectives are means ± standard error over {data.replicates} paired seeds "
            "(--replicates), and trials are ranked by the means.")


def header_html(column: str) -> str:
    """A ranked-table header: it may break after an underscore or at a space, never inside
    a word ("posit ion"), and says what a less obvious column holds when hovered."""
    text = html.escape(column).replace("_", "_<wbr>")
    note = COLUMN_NOTES.get(column)
    return f"<th title='{html.escape(note, quote=True)}'>{text}</th>" if note else (
        f"<th>{text}</th>")


def cell_html(text: str) -> str:
    """A ranked-table cell; a front's end point sorts as the infinity it stands for."""
    if text == FRONT_END:
        return f"<td data-key='Infinity'>{html.escape(text)}</td>"
    return f"<td>{html.escape(text)}</td>"


def table_html(data: StudyData, table: pd.DataFrame) -> str:
    """The ranked rows as a sortable HTML table (``table_cells``)."""
    cells = table_cells(data, table)
    head = "".join(header_html(c) for c in cells)
    body = []
    front = (table["pareto_rank"] == 0).tolist() if "pareto_rank" in table else [False] * len(
        table)
    for i in range(len(table)):
        tds = "".join(cell_html(column[i]) for column in cells.values())
        body.append(f"<tr class='front'>{tds}</tr>" if front[i] and not data.scalar
                    else f"<tr>{tds}</tr>")
    return (f"<div class='table-wrap'><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


# ------------------------------------------------------------------------------ report


def write_report(data: StudyData, out: Path, *, include_pruned: bool = False,
                 include_infeasible: bool = False, png: bool = True, table_rows: int = 100,
                 scale: float = 1.0) -> Path:
    """Write ``report.html`` (plotly embedded once, works offline), tables and PNGs.

    The report says whether the front was confirmed against the method's default
    (``stagetune confirm``): the comparisons of the confirmation that ran last, or the
    command to run.
    """
    ranked = rank_trials(data, include_pruned=include_pruned,
                         include_infeasible=include_infeasible)
    ranked["hover"] = hover_text(ranked, data.objectives)
    built = build_figures(data, ranked)
    write_tables(data, ranked, out)
    confirmation = latest_confirmation(data)
    fidelity = latest_fidelity(data)
    parts = [
        *_head_html(data, ranked, confirmation, include_pruned=include_pruned,
                    include_infeasible=include_infeasible),
        *_skipped_html(built.skipped),
        *_ranked_section(data, ranked, table_rows),
        section_html(data, confirmation, confirmable(data, ranked, confirmation)),
        fidelity_section(data, fidelity, report_resolution(data)),
        *_figure_sections({**built.figures, **fidelity_figures(fidelity)}),
        _SORT_SCRIPT,
        "</body></html>",
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    if png:
        from trainer.figures import export_png

        export_png({k: v for k, v in built.figures.items() if k in MAIN_FIGURES}, out,
                   scale=scale)
    return path


def _head_html(data: StudyData, ranked: pd.DataFrame, confirmation: dict | None, *,
               include_pruned: bool, include_infeasible: bool) -> list[str]:
    """The document's head and the study's summary: where it is stored, its objectives,
    its trial counts and notes, its best trials, what was ranked and the confirmation."""
    from analysis._load import redact

    objectives = ", ".join(f"{o} ({d})" for o, d in zip(data.objectives, data.directions,
                                                          strict=True))
    ranked_note = (f"{len(ranked)} trials ranked ({'with' if include_infeasible else 'without'}"
                   f" infeasible, {'with' if include_pruned else 'without'} pruned)")
    return [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>stagetune report: {html.escape(data.name)}</title>", _STYLE,
        "</head><body>",
        f"<h1>Study {html.escape(data.name)}</h1>",
        f"<p class='meta'>{html.escape(redact(data.url or str(data.engine.url)))} · objectives: "
        f"{html.escape(objectives)}</p>",
        f"<p class='meta'>{html.escape(task_sentence(data.objective_spec))}</p>",
        "<div class='summary'>",
        f"<p>{html.escape(counts_sentence(data))}</p>",
        *(f"<p><b>{html.escape(note)}</b></p>" for note in study_notes(data, ranked)),
        f"<p><b>{html.escape(best_sentence(data, ranked))}</b></p>",
        f"<p>{html.escape(ranked_note)}.</p>",
        f"<p>{html.escape(header_sentence(data, confirmation))}</p>",
        "</div>",
    ]


def _skipped_html(skipped: dict[str, str]) -> list[str]:
    """The figures not drawn, each with why (nothing where every figure was drawn)."""
    if not skipped:
        return []
    return ["<div class='skipped'><p>Figures not drawn:</p><ul>",
            *(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in skipped.items()),
            "</ul></div>"]


def _ranked_section(data: StudyData, ranked: pd.DataFrame, table_rows: int) -> list[str]:
    """The sortable table of the best ``table_rows`` ranked trials, with its order said."""
    table = ranked_records(data, ranked).head(table_rows)
    shown = (f"all {len(table)}" if len(table) == len(ranked)
             else f"top {len(table)} of {len(ranked)}; all of them in ranked.csv")
    order = ("Pareto rank, then crowding distance, largest first, where a front's end "
             f"points read {FRONT_END}: theirs is infinite by definition" if not data.scalar
             else f"{data.objectives[0]}")
    seeds = replicates_note(data)
    return [
        f"<section id='ranked'><h2>Ranked trials ({shown})</h2>",
        f"<p class='meta'>Ordered by {order}; click a column to sort"
        + ("; front rows shaded" if not data.scalar else "") + "."
        + (f" {html.escape(seeds)}" if seeds else "") + "</p>",
        table_html(data, table), "</section>",
    ]


def _figure_sections(figures: dict[str, go.Figure]) -> list[str]:
    """One section per figure, in order; plotly's script embedded in the first only."""
    parts = []
    for i, (name, fig) in enumerate(figures.items()):
        parts.append(f"<section id='figure-{name}'>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                 div_id=f"fig-{name}"))
        parts.append("</section>")
    return parts

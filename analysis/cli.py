"""``stagetune analyze rank|plot|report|importance|compare|dashboard``: read a study
database (never write it)."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from search.db.storage import DEFAULT_STORAGE  # sqlalchemy only: no torch, no ray

HELP_FORMAT = argparse.ArgumentDefaultsHelpFormatter


def _common(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="SQLAlchemy URL of the study database (opened read only)")
    if study:
        p.add_argument("--study", default="stagetune", help="name of the study to read")
    p.add_argument("--include-pruned", action="store_true",
                   help="also list pruned trials (ranked last: they have no values)")
    p.add_argument("--include-infeasible", action="store_true",
                   help="also rank trials whose zay collapsed")
    p.add_argument("--out", default="stagetune-report", help="output folder")


def _scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-png", action="store_true", help="write no PNG files")
    p.add_argument("--scale", type=float, default=1.0,
                   help="PNG pixels per layout pixel (2 for high-resolution slides)")


def build_parser() -> argparse.ArgumentParser:
    from analysis._importance import EVALUATORS
    from analysis._report import FIGURES

    parser = argparse.ArgumentParser(prog="stagetune analyze", formatter_class=HELP_FORMAT,
                                     description="Rank trials, draw Pareto fronts and write "
                                                 "reports from a study database (read only).")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                              prog=f"stagetune analyze {name}", formatter_class=HELP_FORMAT)

    r = add("rank", "print the ranked trials; write ranked.csv and ranked.json")
    _common(r)
    r.add_argument("--top", type=int, default=20, help="rows to print")
    p = add("plot", "write figures as HTML (and PNG when possible)")
    _common(p)
    p.add_argument("--figure", choices=[*FIGURES, "all"], default="all",
                   help="which figure; 'all' shares one plotly.min.js among the HTML files")
    p.add_argument("--trial", type=int, default=None,
                   help="trial number for the heatmap (None: the best ranked trial)")
    _scale(p)
    rep = add("report", "one self-contained HTML report with every figure")
    _common(rep)
    rep.add_argument("--table-rows", type=int, default=100,
                     help="ranked rows shown in the report (all are in ranked.csv)")
    _scale(rep)
    imp = add("importance", "parameter importance per objective (PED-ANOVA, fANOVA)")
    _common(imp)
    imp.add_argument("--evaluator", choices=[*EVALUATORS, "both"], default="both",
                     help="PED-ANOVA (fast at any size) and/or fANOVA (random forest; "
                          "skipped above 500 trials)")
    c = add("compare", "two studies' fronts on one plot, with hypervolumes")
    _common(c, study=False)
    c.add_argument("--study", action="append", required=True,
                   help="give twice: --study A --study B")
    c.add_argument("--storage-b", default=None,
                   help="database of the second study (None: the same --storage)")
    d = add("dashboard", "serve optuna-dashboard on the database until stopped (unlike the "
            "other commands it can write: notes and trial states set in its page "
            "are stored in the study)")
    d.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL of the database")
    d.add_argument("--port", type=int, default=8080, help="port to serve on")
    d.add_argument("--host", default="127.0.0.1", help="address to serve on")
    return parser


def _print_table(data, df, top: int) -> None:
    import pandas as pd

    from analysis._report import table_cells

    shown = pd.DataFrame(table_cells(data, df.head(top)))  # digits apart where shown
    with pd.option_context("display.max_columns", 30, "display.width", 200):
        print(shown.to_string(index=False))


def cmd_rank(args) -> int:
    from analysis._heldout import task_sentence
    from analysis._load import load_study
    from analysis._rank import rank_trials, study_notes
    from analysis._report import ranked_records, replicates_note, write_tables

    data = load_study(args.storage, args.study)
    ranked = rank_trials(data, include_pruned=args.include_pruned,
                         include_infeasible=args.include_infeasible)
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(data.objectives, data.directions,
                                                          strict=True))
    print(f"Study {data.name}: objectives {objectives}; {task_sentence(data.objective_spec)}")
    if data.replicates > 1:
        print(replicates_note(data))
    for note in study_notes(data, ranked):
        print(note)
    _print_table(data, ranked_records(data, ranked), args.top)
    csv_path, json_path = write_tables(data, ranked, Path(args.out))
    print(f"{len(ranked)} trials ranked; wrote {csv_path} and {json_path}")
    return 0


def cmd_plot(args) -> int:
    from analysis._load import load_study
    from analysis._rank import rank_trials
    from analysis._report import FIGURES, build_figures
    from trainer.figures import export_figures

    data = load_study(args.storage, args.study)
    ranked = rank_trials(data, include_pruned=args.include_pruned,
                         include_infeasible=args.include_infeasible)
    which = FIGURES if args.figure == "all" else (args.figure,)
    built = build_figures(data, ranked, which=which, heatmap_trial=args.trial)
    for name, reason in built.skipped.items():
        print(f"not drawn: {name}: {reason}")
    if not built.figures:
        from analysis._load import AnalysisError

        raise AnalysisError(f"no figure could be drawn: {'; '.join(built.skipped.values())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_figures(built.figures, out, png=not args.no_png, scale=args.scale,
                   shared_plotlyjs=len(built.figures) > 1)
    print(f"wrote {', '.join(sorted(built.figures))} to {out}")
    return 0


def cmd_report(args) -> int:
    from analysis._load import load_study
    from analysis._report import write_report

    data = load_study(args.storage, args.study)
    path = write_report(data, Path(args.out), include_pruned=args.include_pruned,
                        include_infeasible=args.include_infeasible, png=not args.no_png,
                        table_rows=args.table_rows, scale=args.scale)
    print(f"wrote {path}")
    return 0


def cmd_importance(args) -> int:
    from analysis._figures import importance_figure
    from analysis._importance import EVALUATORS, FANOVA_MAX_TRIALS, param_importances
    from analysis._load import load_study
    from analysis._rank import rank_trials

    data = load_study(args.storage, args.study)
    ranked = rank_trials(data, include_infeasible=args.include_infeasible)
    scored = ranked[ranked["pareto_rank"].notna()]
    evaluators = EVALUATORS if args.evaluator == "both" else (args.evaluator,)
    table = param_importances(data, scored, evaluators=evaluators)
    if "fanova" in evaluators and len(scored) > FANOVA_MAX_TRIALS:
        print(f"fANOVA skipped: {len(scored)} trials > {FANOVA_MAX_TRIALS} (a random forest "
              "per objective); PED-ANOVA shown")
    for (ev, target), part in table.groupby(["evaluator", "target"], sort=False):
        print(f"{ev} importance for {target}:")
        for _, row in part.iterrows():
            print(f"  {row['param']:<28s} {row['importance']:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "importance.csv", index=False)
    importance_figure(table, len(scored)).write_html(out / "importance.html",
                                                     include_plotlyjs=True)
    print(f"wrote {out / 'importance.csv'} and {out / 'importance.html'}")
    return 0


def cmd_compare(args) -> int:
    from analysis._figures import compare_figure
    from analysis._format import float_formatter
    from analysis._load import AnalysisError, load_study
    from analysis._rank import default_reference, rank_trials
    from search.pareto import hypervolume_2d

    if len(args.study) != 2:
        raise AnalysisError("compare needs exactly two studies: --study A --study B")
    a = load_study(args.storage, args.study[0])
    b = load_study(args.storage_b or args.storage, args.study[1])
    if a.objectives != b.objectives:
        raise AnalysisError(f"studies optimise different objectives ({a.objectives} vs "
                            f"{b.objectives}); compare studies of one objective")
    if len(a.objectives) < 2:
        raise AnalysisError("compare draws Pareto fronts: these studies have one objective; "
                            "use 'analyze rank' on each")
    fronts, hvs = {}, {}
    for data in (a, b):
        ranked = rank_trials(data, include_pruned=args.include_pruned,
                             include_infeasible=args.include_infeasible)
        ranked = ranked[ranked["pareto_rank"].notna()]
        front = ranked[ranked["pareto_rank"] == 0]
        hvs[data.name] = hypervolume_2d(
            front[data.objectives].to_numpy(float), data.directions,
            default_reference(data)) if len(data.objectives) == 2 else float("nan")
        fronts[data.name] = (ranked, front)
    fmt = float_formatter(list(hvs.values()))
    ref = ", ".join(f"{o}={r:g}" for o, r in zip(a.objectives, default_reference(a),
                                                   strict=True))
    labelled = {}
    for name, (ranked, front) in fronts.items():
        print(f"{name}: {len(ranked)} trials, front of {len(front)}, hypervolume "
              f"{fmt(hvs[name])} (reference {ref})")
        labelled[f"{name} (HV {fmt(hvs[name])})"] = (ranked, front)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compare.html"
    fig = compare_figure(labelled, a.objectives)
    fig.update_layout(title={"text": f"Pareto fronts compared<br><sup>hypervolume against "
                                     f"the reference point ({ref})</sup>"})
    fig.write_html(path, include_plotlyjs=True)
    print(f"wrote {path}")
    return 0


def cmd_dashboard(args) -> int:
    from analysis._load import AnalysisError, open_read_only

    open_read_only(args.storage)  # refuse what is not a reachable study database
    exe = shutil.which("optuna-dashboard")
    if exe is None:
        raise AnalysisError("optuna-dashboard is not installed: "
                            "pip install 'stagetune[dashboard]'")
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)",
          flush=True)
    return run_child([exe, args.storage, "--host", args.host, "--port", str(args.port)])


def run_child(cmd: list[str]) -> int:
    """Run ``cmd`` until it ends; SIGTERM or SIGINT to us stops it too, so killing this
    process by its PID never leaves the server behind."""
    child = subprocess.Popen(cmd)
    stopping = {"signal": 0}

    def stop(signum, _frame) -> None:
        stopping["signal"] = signum
        if child.poll() is None:
            child.terminate()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            code = child.wait()
        except KeyboardInterrupt:
            child.terminate()
            code = child.wait()
        if stopping["signal"] and child.poll() is None:
            try:
                code = child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0 if stopping["signal"] else code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from analysis._load import AnalysisError, redact

    commands = {"rank": cmd_rank, "plot": cmd_plot, "report": cmd_report,
                "importance": cmd_importance, "compare": cmd_compare,
                "dashboard": cmd_dashboard}
    try:
        return commands[args.command](args)
    except AnalysisError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

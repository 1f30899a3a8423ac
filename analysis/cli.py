"""``python -m analysis rank|plot|report|compare|dashboard``: read a study database."""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from search.storage import DEFAULT_STORAGE  # sqlalchemy only: no torch, no ray


def _common(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL (read only)")
    if study:
        p.add_argument("--study", default="stagetune")
    p.add_argument("--include-pruned", action="store_true")
    p.add_argument("--include-infeasible", action="store_true",
                   help="also rank trials whose zay collapsed")
    p.add_argument("--out", default="stagetune-report", help="output folder")


def build_parser() -> argparse.ArgumentParser:
    from analysis._report import FIGURES

    parser = argparse.ArgumentParser(prog="python -m analysis",
                                     description="Rank trials, draw Pareto fronts and write "
                                                 "reports from a study database (read only).")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rank", help="print the ranked trials; write ranked.csv and .json")
    _common(r)
    r.add_argument("--top", type=int, default=20, help="rows to print")
    p = sub.add_parser("plot", help="write figures as HTML (and PNG when possible)")
    _common(p)
    p.add_argument("--figure", choices=[*FIGURES, "all"], default="all")
    p.add_argument("--trial", type=int, default=None, help="trial number for the heatmap")
    p.add_argument("--no-png", action="store_true")
    rep = sub.add_parser("report", help="one self-contained HTML report with every figure")
    _common(rep)
    rep.add_argument("--no-png", action="store_true")
    c = sub.add_parser("compare", help="two studies' fronts on one plot, with hypervolumes")
    _common(c, study=False)
    c.add_argument("--study", action="append", required=True,
                   help="give twice: --study A --study B")
    c.add_argument("--storage-b", default=None, help="database of the second study, if "
                                                     "another one")
    d = sub.add_parser("dashboard", help="open optuna-dashboard on the database")
    d.add_argument("--storage", default=DEFAULT_STORAGE)
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--host", default="127.0.0.1")
    return parser


def _print_table(df, top: int) -> None:
    import pandas as pd

    with pd.option_context("display.max_columns", 30, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(df.head(top).to_string(index=False))


def cmd_rank(args) -> int:
    from analysis._load import load_study
    from analysis._rank import rank_trials
    from analysis._report import ranked_records, write_tables

    data = load_study(args.storage, args.study)
    ranked = rank_trials(data, include_pruned=args.include_pruned,
                         include_infeasible=args.include_infeasible)
    _print_table(ranked_records(data, ranked), args.top)
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
    figures = build_figures(data, ranked, which=which, heatmap_trial=args.trial)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_figures(figures, out, png=not args.no_png)
    print(f"wrote {', '.join(sorted(figures))} to {out}")
    return 0


def cmd_report(args) -> int:
    from analysis._load import load_study
    from analysis._report import write_report

    data = load_study(args.storage, args.study)
    path = write_report(data, Path(args.out), include_pruned=args.include_pruned,
                        include_infeasible=args.include_infeasible, png=not args.no_png)
    print(f"wrote {path}")
    return 0


def cmd_compare(args) -> int:
    from analysis._figures import compare_figure
    from analysis._load import AnalysisError, load_study
    from analysis._pareto import hypervolume_2d
    from analysis._rank import default_reference, rank_trials

    if len(args.study) != 2:
        raise AnalysisError("compare needs exactly two studies: --study A --study B")
    a = load_study(args.storage, args.study[0])
    b = load_study(args.storage_b or args.storage, args.study[1])
    if a.objectives != b.objectives:
        raise AnalysisError(f"studies optimise different objectives ({a.objectives} vs "
                            f"{b.objectives}); compare studies of one objective")
    fronts = {}
    for data in (a, b):
        ranked = rank_trials(data, include_pruned=args.include_pruned,
                             include_infeasible=args.include_infeasible)
        ranked = ranked[ranked["pareto_rank"].notna()]
        front = ranked[ranked["pareto_rank"] == 0]
        hv = hypervolume_2d(front[data.objectives].to_numpy(float), data.directions,
                            default_reference(data)) if len(data.objectives) == 2 else float("nan")
        print(f"{data.name}: {len(ranked)} trials, front of {len(front)}, hypervolume {hv:.4f}")
        fronts[f"{data.name} (HV {hv:.3f})"] = (ranked, front)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compare.html"
    compare_figure(fronts, a.objectives).write_html(path, include_plotlyjs=True)
    print(f"wrote {path}")
    return 0


def cmd_dashboard(args) -> int:
    from analysis._load import AnalysisError, open_read_only

    open_read_only(args.storage)  # refuse what is not a reachable study database
    exe = shutil.which("optuna-dashboard")
    if exe is None:
        raise AnalysisError("optuna-dashboard is not installed: "
                            "pip install 'stagetune[dashboard]'")
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    return subprocess.call([exe, args.storage, "--host", args.host, "--port", str(args.port)])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from analysis._load import AnalysisError, redact

    commands = {"rank": cmd_rank, "plot": cmd_plot, "report": cmd_report,
                "compare": cmd_compare, "dashboard": cmd_dashboard}
    try:
        return commands[args.command](args)
    except AnalysisError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

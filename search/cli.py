"""``python -m search sweep|status|confirm``: run, continue, inspect or confirm a sweep
(``stagetune sweep|status|confirm``; ``run`` is still accepted for ``sweep``)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from search.db.storage import DEFAULT_STORAGE, StorageError, check_url, redact
from search.objective import Objective, ObjectiveError
from search.space import SpaceError, build_space, parameter_help
from trainer.objectives import DEFAULT_DISENTANGLEMENT_OBJECTIVE, DISENTANGLEMENT_OBJECTIVES

# small enough for seconds per trial on one CPU, big enough that zy learns the class
SMOKE = {"epochs": 6, "max_samples": 200, "hidden_dim": 64, "eval_max_samples": 1000,
         "batch_size": 64, "lr": 2e-3}


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter):
    """Options with their defaults; a text of several lines (the search parameters) is
    kept as written, any other is wrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


HELP_FORMAT = HelpFormat

#: the sweep command's name as ``stagetune`` lists it, and the name ``python -m search``
#: has always taken (still accepted)
SWEEP, RUN_ALIAS = "sweep", "run"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command and where its
    options are listed, exit 2 (argparse's own prints the whole usage first)."""

    def error(self, message: str):  # argparse's signature: it never returns
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def json_text(summary: Any) -> str:
    """``summary`` as strict JSON: a float that is no number (the p of a comparison
    without a test, the standard error of one seed) is ``null``, never ``NaN``."""
    def strict(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: strict(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [strict(item) for item in value]
        return value

    return json.dumps(strict(summary), indent=2, allow_nan=False)


def _subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` (or of its alias)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="SQLAlchemy URL of the study database")
    p.add_argument("--study", default="stagetune", help="study name")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="stagetune", formatter_class=HELP_FORMAT,
                           description="Sweeps of staged training with Ray Tune "
                                       "and Optuna, stored in a SQL study database.")
    sub = parser.add_subparsers(dest="command", required=True)
    _sweep_parser(sub)
    _status_parser(sub)
    _confirm_parser(sub)
    _fidelity_parser(sub)
    # the usage line names the commands as 'stagetune --help' lists them, not the alias
    sub.metavar = "{" + ",".join(name for name in sub.choices if name != RUN_ALIAS) + "}"
    return parser


def _sweep_parser(sub) -> None:
    """``stagetune sweep`` (alias ``run``): its options in the order ``--help`` lists them."""
    run = sub.add_parser(SWEEP, aliases=[RUN_ALIAS], prog="stagetune sweep",
                         formatter_class=HELP_FORMAT,
                         help="run a sweep, or continue it to --n-trials",
                         description="Run a sweep, or continue a stored one until the "
                                     "study holds --n-trials finished trials.",
                         epilog=parameter_help())
    run.set_defaults(command=RUN_ALIAS)  # one name for the command, whichever was typed
    _common(run)
    _sweep_study_options(run)
    _sweep_training_options(run.add_argument_group("trainer settings shared by all trials"))
    _sweep_space_options(run.add_argument_group("search space"))
    _sweep_objective_options(run.add_argument_group("objective"))
    scheduling = run.add_argument_group("scheduling")
    _sweep_sampler_options(scheduling)
    _sweep_resource_options(scheduling)
    _sweep_stopping_options(scheduling)
    _sweep_trial_run_options(scheduling)
    _sweep_output_options(run)


def _sweep_study_options(run: argparse.ArgumentParser) -> None:
    """How many trials the study holds, and the smoke test's tiny study."""
    run.add_argument("--n-trials", type=int, default=20,
                     help="the study's total: a resumed sweep runs only what is missing "
                          "(--smoke-test alone: 4)")
    run.add_argument("--smoke-test", action="store_true",
                     help="tiny trainer configs and 4 trials (CI runs this)")


def _sweep_training_options(g: argparse._ArgumentGroup) -> None:
    """The trainer settings every trial of the sweep shares."""
    g.add_argument("--epochs", type=int, default=None,
                   help="epoch budget of every trial (None: 30, or the smoke test's 6)")
    g.add_argument("--change-budget", action="store_true",
                   help="move a stored study to this --epochs (recorded with the first trial "
                        "it applies to; status and the report then show which trials ran at "
                        "which budget); without it a resumed study refuses another budget, "
                        "as it refuses any other change to what its trials share")
    g.add_argument("--dataset", default=None,
                   help="data set name (None: the trainer's default)")
    g.add_argument("--data-root", default=None, help="folder of downloaded data sets")
    g.add_argument("--max-samples", type=int, default=None,
                   help="cap on training samples (None: all)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="batch size (None: the trainer's default)")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate (None: the trainer's default)")
    g.add_argument("--test-domain", type=int, default=None, metavar="K",
                   help="domain held out entirely: reported (acc_y_test_domain), never "
                        "selected on")
    g.add_argument("--val-domain", type=int, default=None, metavar="K",
                   help="domain held out of training as an out-of-domain validation split "
                        "(acc_y_val_domain; --task-metric acc_y_val_domain selects on it)")
    g.add_argument("--base-config", default=None, help="JSON file of a trainer RunConfig")


def _sweep_space_options(s: argparse._ArgumentGroup) -> None:
    """Narrowing or fixing the search space's parameters."""
    s.add_argument("--space", default=None, help="YAML or JSON file narrowing or fixing "
                                                 "parameters")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a parameter, e.g. --set lambda=10 --set penalty=on (the search "
                        "parameters are listed below)")
    s.add_argument("--range", action="append", default=[], metavar="NAME=LO:HI",
                   help="narrow a range or list choices, e.g. --range stage1_epochs=5:15 "
                        "--range zay_suppression=gate,kl_weight")


def _sweep_objective_options(o: argparse._ArgumentGroup) -> None:
    """What the sweep optimises: the objectives and how the task accuracy is measured."""
    o.add_argument("--objective", choices=["pareto", "scalar"], default="pareto",
                   help="pareto: accuracy and disentanglement as two objectives; scalar: "
                        "one weighted score")
    o.add_argument("--disentanglement-metric", default=DEFAULT_DISENTANGLEMENT_OBJECTIVE,
                   choices=DISENTANGLEMENT_OBJECTIVES,
                   help="the disentanglement objective next to task accuracy")
    o.add_argument("--task-metric", default=None,
                   choices=["task_accuracy", "acc_y_val_domain", "lodo_accuracy"],
                   help="the accuracy objective: in-domain validation accuracy (the "
                        "method's), the held-out validation domain's (needs --val-domain) "
                        "or the leave-one-domain-out mean (--lodo); the test domain never "
                        "selects (default: lodo_accuracy with --lodo, else task_accuracy)")
    o.add_argument("--lodo", action="store_true",
                   help="leave-one-domain-out: train every setting once per training domain "
                        "held out as its validation domain; the task objective is the mean "
                        "held-out accuracy, per-domain accuracies are stored")
    o.add_argument("--weight", type=float, default=0.5,
                   help="scalar mode: weight of disentanglement against accuracy")


def _sweep_sampler_options(r: argparse._ArgumentGroup) -> None:
    """The Optuna sampler that proposes the settings."""
    r.add_argument("--sampler", choices=["tpe", "nsga2", "random", "gp"], default="tpe",
                   help="Optuna sampler that proposes the settings (gp: Gaussian-process "
                        "Bayesian optimisation)")
    r.add_argument("--seed", type=int, default=0, help="sampler seed")


def _sweep_resource_options(r: argparse._ArgumentGroup) -> None:
    """What Ray reserves for each trial, how many run at once, and which Ray."""
    r.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs Ray reserves for each trial")
    r.add_argument("--gpus-per-trial", type=float, default=None,
                   help="fractions share a GPU (0.5: two trials per GPU); default 1 when "
                        "the cluster has GPUs, else 0")
    r.add_argument("--max-concurrent", type=int, default=None,
                   help="trials running at once (None: as many as the resources allow)")
    r.add_argument("--address", default=None, help="join a running Ray cluster (ray://... "
                                                   "or auto)")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")


def _sweep_stopping_options(r: argparse._ArgumentGroup) -> None:
    """Early stopping: (MO-)ASHA and its rungs."""
    r.add_argument("--asha", action="store_true",
                   help="stop trials early: in a pareto study MO-ASHA (non-dominated sorting "
                        "of the objectives' per-epoch proxies at each rung; rungs from the "
                        "study's fidelity check or --rungs); in a scalar study ASHA on the "
                        "validation score, rungs counted from stage 3")
    r.add_argument("--rungs", type=int, nargs="+", default=None, metavar="EPOCH",
                   help="MO-ASHA's rungs, as epochs completed (default: those the study's "
                        "latest 'stagetune fidelity' check found to rank like the end)")
    r.add_argument("--reduction-factor", type=float, default=3.0,
                   help="MO-ASHA keeps the best 1/this of each rung's trials")


def _sweep_trial_run_options(r: argparse._ArgumentGroup) -> None:
    """How each trial runs: retries, seeds, populations, imports and Ray's files."""
    from search.driver.progress import default_work_dir

    r.add_argument("--retries", type=int, default=2, help="retries after a worker failure")
    r.add_argument("--replicates", "--seeds", dest="replicates", type=int, default=1,
                   metavar="R",
                   help="seeds per suggested setting (paired: replicate r has the same seed "
                        "in every trial); the trial's objectives are the means, with "
                        "standard errors and per-seed values stored; with --population K, "
                        "K·R members train as one model")
    r.add_argument("--population", type=int, default=1, metavar="K",
                   help="train K trials as one vectorised model in one Ray trial "
                        "(resources per trial are the whole population's); a member that "
                        "stops (patience, a MO-ASHA rung) frees its slot for the next trial")
    r.add_argument("--no-refill", dest="refill", action="store_false",
                   help="--population: leave a stopped member's slot empty (the population "
                        "shrinks as its members stop)")
    r.add_argument("--import", dest="imports", action="append", default=[],
                   help="module to import in every trial (custom data sets or metrics)")
    r.add_argument("--work-dir", "--tune-dir", dest="tune_dir", default=str(default_work_dir()),
                   help="folder for Ray Tune's experiment files (the results live in the "
                        "study database); $XDG_CACHE_HOME is honoured")


def _sweep_output_options(run: argparse.ArgumentParser) -> None:
    """How much the sweep prints."""
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--verbose", action="store_true",
                     help="also show Ray's own warnings (hidden by default)")


def _status_parser(sub) -> None:
    """``stagetune status``."""
    st = sub.add_parser("status", prog="stagetune status", formatter_class=HELP_FORMAT,
                        help="trial counts and the Pareto front of a study",
                        description="Trial counts by state (infeasible and failed with "
                                    "their reasons) and the Pareto front, or the best trial "
                                    "of a scalar study.")
    _common(st)
    st.add_argument("--json", action="store_true", help="print the summary as JSON")


def _confirm_parser(sub) -> None:
    """``stagetune confirm``."""
    cf = sub.add_parser("confirm", prog="stagetune confirm", formatter_class=HELP_FORMAT,
                        help="re-run the front and the default on fresh paired seeds",
                        description="Re-run the best --top settings of a study's front "
                                    "(of a scalar study: its best trials) "
                                    "and the method's default on --seeds fresh seeds "
                                    "(seeds no trial used; each draws its own data split), "
                                    "paired by seed, and compare each setting with the "
                                    "default: mean difference, 95% interval, paired t test "
                                    "with Holm's correction across settings. The runs are "
                                    "stored beside the study (not as trials, so the sampler "
                                    "never sees them); the same command resumes an "
                                    "interrupted confirmation.")
    _common(cf)
    cf.add_argument("--top", type=int, default=3,
                    help="settings to confirm: the front's, by the hypervolume each "
                         "adds (a scalar study: its best trials)")
    cf.add_argument("--seeds", type=int, default=5, help="fresh seeds, paired across settings")
    _planned_run_options(cf, population="train every setting of one seed as one vectorised "
                                         "population")


def _planned_run_options(p: argparse.ArgumentParser, *, population: str) -> None:
    """How the runs of a plan (a confirmation, a fidelity check) are scheduled on Ray."""
    from search.driver.progress import default_work_dir

    p.add_argument("--population", action="store_true", help=population)
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs Ray reserves for each run (a population: for all of it)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="default 1 when the cluster has GPUs, else 0")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="runs at once (None: as many as the resources allow)")
    p.add_argument("--address", default=None, help="join a running Ray cluster")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    p.add_argument("--retries", type=int, default=2, help="retries after a worker failure")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   help="module to import in every run")
    p.add_argument("--work-dir", dest="tune_dir", default=str(default_work_dir()),
                   help="folder for Ray Tune's experiment files")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own warnings")


def _fidelity_parser(sub) -> None:
    fd = sub.add_parser(
        "fidelity", prog="stagetune fidelity", formatter_class=HELP_FORMAT,
        help="check whether a cheaper budget ranks settings like the study's own",
        description="Train the method's default and --settings - 1 other settings on "
                    "--seeds fresh paired seeds at the study's budget (the target) and at "
                    "each cheaper one: shorter schedules (--epochs, stages scaled), fewer "
                    "sources (--max-samples) and prefix rungs of the target runs (--rungs, "
                    "read from their epoch rows by each objective's per-epoch proxy). For "
                    "each cheaper budget and objective: Spearman's rho and Kendall's tau "
                    "against the target with bootstrap intervals over settings (seeds "
                    "resampled within settings), the overlap of the top quarter and the "
                    "regret of picking the cheap budget's best. Stored beside the study; "
                    "the same command resumes an interrupted check.")
    _common(fd)
    fd.add_argument("--settings", type=int, default=16,
                    help="settings, the method's default among them")
    fd.add_argument("--seeds", type=int, default=3,
                    help="fresh seeds, paired across settings and budgets")
    fd.add_argument("--epochs", type=int, nargs="*", default=[],
                    help="cheaper schedules' epoch budgets, e.g. --epochs 6 12 24")
    fd.add_argument("--max-samples", type=int, nargs="*", default=[],
                    help="cheaper schedules at the target's epochs on fewer sources")
    fd.add_argument("--rungs", type=int, nargs="*", default=None,
                    help="epochs of the target runs read as rungs (default: the ends of the "
                         "default's stages 1 and 2 and the middle of stage 3); none: "
                         "--rungs with no value")
    fd.add_argument("--source", choices=["space", "trials"], default="space",
                    help="space: settings drawn at random from the space (--set, --range, "
                         "--space as for a sweep); trials: the study's complete trials")
    fd.add_argument("--space", default=None, help="YAML or JSON file narrowing or fixing "
                                                  "parameters (--source space)")
    fd.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="fix a parameter of the space (--source space)")
    fd.add_argument("--range", action="append", default=[], metavar="NAME=LO:HI",
                    help="narrow a range or list choices (--source space)")
    fd.add_argument("--objective", dest="extra_objectives", action="append", default=[],
                    metavar="METRIC", help="score this metric too, beside the study's "
                                           "objectives (e.g. disentanglement_score)")
    fd.add_argument("--sample-seed", type=int, default=0,
                    help="seed of the settings' draw")
    fd.add_argument("--new", action="store_true",
                    help="start a new check even where one with these options exists")
    _planned_run_options(fd, population="train every setting of one seed and budget as one "
                                         "vectorised population")


def cmd_confirm(args: argparse.Namespace) -> int:
    from search.checks.confirm import ConfirmOptions, run_confirm
    from search.checks.confirm_summary import print_confirmation

    summary = run_confirm(ConfirmOptions(top=args.top, seeds=args.seeds,
                                         **ConfirmOptions.from_args(args)))
    if args.json:
        print(json_text(summary))
    elif not args.quiet:
        print_confirmation(summary)
    # compared: on two seeds at least (one seed alone is shown, but settles nothing)
    compared = any((c := r["objectives"].get(n)) and c["difference"]["n"] >= 2
                   for r in summary["settings"] for n in summary["objectives"])
    return 0 if summary["complete"] and compared else 1


def cmd_fidelity(args: argparse.Namespace) -> int:
    from search.checks.fidelity import summary_lines
    from search.checks.fidelity_run import FidelityOptions, run_fidelity

    summary = run_fidelity(FidelityOptions(
        settings=args.settings, seeds=args.seeds, epochs=tuple(args.epochs),
        max_samples=tuple(args.max_samples),
        rungs=None if args.rungs is None else tuple(args.rungs), source=args.source,
        space_file=args.space, fixes=tuple(args.set), ranges=tuple(args.range),
        objectives=tuple(args.extra_objectives), sample_seed=args.sample_seed, new=args.new,
        **FidelityOptions.from_args(args)))
    if args.json:
        print(json_text(summary))
    elif not args.quiet:
        print("\n".join(summary_lines(summary)))
    return 0 if summary["complete"] else 1


def _base_config(args: argparse.Namespace) -> dict:
    from trainer import RunConfig, params

    base = (RunConfig.from_dict(json.loads(Path(args.base_config).read_text()))
            if args.base_config else RunConfig(write_plots=False))
    # the registry's unsearched parameters at the method's default (staged training on)
    flat: dict = {**params.pinned(), "write_plots": False, "device": "auto"}
    if args.smoke_test:
        flat.update(SMOKE)
    for name in ("epochs", "dataset", "data_root", "max_samples", "batch_size", "lr",
                 "test_domain", "val_domain"):
        value = getattr(args, name)
        if value is not None:
            flat[name] = value
    if args.epochs is None and not args.smoke_test and not args.base_config:
        flat["epochs"] = 30
    return base.replace(**flat).to_dict()


def cmd_run(args: argparse.Namespace) -> int:
    from search.driver.sweep import SweepOptions, run_sweep
    from trainer import RunConfig

    if args.n_trials < 1:  # before anything is created: 0 would leave a study of nothing
        raise SpaceError(f"--n-trials must be at least 1 (got {args.n_trials}): it is the "
                         "study's total of finished trials")
    given = getattr(args, "argv", sys.argv[1:])
    if args.smoke_test and not any(a == "--n-trials" or a.startswith("--n-trials=")
                                   for a in given):
        args.n_trials = 4
    base = _base_config(args)
    epochs = RunConfig.from_dict(base).optim.epochs
    space = build_space(epochs, file=args.space, fixes=args.set, ranges=args.range)
    task = args.task_metric or ("lodo_accuracy" if args.lodo else "task_accuracy")
    objective = Objective(mode=args.objective, disentanglement=args.disentanglement_metric,
                          weight=args.weight, task=task)
    opts = SweepOptions(
        storage=args.storage, study=args.study, n_trials=args.n_trials, base_config=base,
        space=space, objective=objective, sampler=args.sampler, seed=args.seed,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, address=args.address, num_cpus=args.num_cpus,
        asha=args.asha, rungs=tuple(args.rungs) if args.rungs else None,
        reduction_factor=args.reduction_factor, retries=args.retries,
        replicates=args.replicates,
        population=args.population, refill=args.refill, lodo=args.lodo,
        imports=tuple(args.imports),
        tune_dir=args.tune_dir, quiet=args.quiet, verbose=args.verbose,
        resume_command=resume_command(getattr(args, "argv", None)),
        change_budget=args.change_budget,
    )
    summary = run_sweep(opts)
    ran = summary.get("this_run", {})
    if ran.get("fail") and not ran.get("complete") and not ran.get("prune"):
        print(f"error: all {ran['fail']} trials of this run failed; the reasons are "
              "stored with them (stagetune status)", file=sys.stderr)
        return 1
    return 0


def resume_command(argv: list[str] | None) -> str | None:
    """The ``stagetune sweep`` command that continues this sweep, passwords hidden."""
    import shlex

    if not argv or argv[0] not in (SWEEP, RUN_ALIAS):
        return None
    return "stagetune sweep " + shlex.join(redact(a) for a in argv[1:])


def cmd_status(args: argparse.Namespace) -> int:
    import io

    from optuna.trial import TrialState

    from search.db.study import load_named_study, open_storage_read_only, summary_objective
    from search.driver.sweep import print_summary, summarize

    # read only: status never creates, migrates or writes a database
    storage = open_storage_read_only(args.storage)
    study = load_named_study(storage, args.storage, args.study)
    objective = summary_objective(study)  # refuses a study it cannot summarise
    summary = summarize(study, objective)
    from search.checks.confirm_summary import latest_summary

    summary["confirmation"] = latest_summary(storage.engine, args.study)
    from search.checks.resolution import resolution_warnings, study_resolution
    from search.db.storage import latest_fidelity_summary as latest_fidelity
    from search.db.study import study_replicates

    summary["fidelity"] = latest_fidelity(storage.engine, args.study)
    summary["resolution"] = study_resolution(
        [t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))],
        objective.names if objective.mode == "pareto" else [objective.task,
                                                            objective.disentanglement],
        replicated=study_replicates(study) > 1)
    # the whole summary is rendered first: an error leaves no half of it printed
    text = io.StringIO()
    if args.json:
        print(json_text(summary), file=text)
    else:
        print_summary(summary, file=text)
        if summary["confirmation"] is None:
            print("not confirmed: 'stagetune confirm' re-runs the front against the "
                  "default on fresh seeds", file=text)
        else:
            from search.checks.confirm_summary import print_confirmation

            print_confirmation(summary["confirmation"], file=text)
        for line in resolution_warnings(summary["resolution"]):
            print(line, file=text)
        if summary["fidelity"] is None:
            print("no fidelity check: 'stagetune fidelity' measures whether a cheaper "
                  "budget ranks settings as this study's budget does", file=text)
        else:
            from search.checks.fidelity import summary_lines

            print("\n".join(summary_lines(summary["fidelity"])), file=text)
    sys.stdout.write(text.getvalue())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, which names the command typed
        _subcommand_parser(parser, args.command).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from search.checks.confirm import ConfirmError
    from search.checks.fidelity import FidelityError
    from search.db.study import StudyError
    from search.driver.sweep import SweepInterrupted
    from trainer import ConfigError

    try:
        check_url(args.storage)  # a malformed URL: one line, before anything else happens
        commands = {"run": cmd_run, "status": cmd_status, "confirm": cmd_confirm,
                    "fidelity": cmd_fidelity}
        return commands[args.command](args)
    except SweepInterrupted as stop:
        if args.command in ("confirm", "fidelity"):
            what = "confirmation" if args.command == "confirm" else "fidelity check"
            print(f"{what} {stop}: the runs that finished are stored; run the same "
                  "command again to resume", file=sys.stderr)
            return stop.exit_code
        requeued = (f"trial{'s' if len(stop.stopped) != 1 else ''} "
                    f"{', '.join(map(str, stop.stopped))} marked failed (driver stopped) and "
                    "re-queued" if stop.stopped else "no trial was running")
        print(f"sweep {stop}: {requeued}", file=sys.stderr)
        command = resume_command(argv)
        if command:
            print(f"resume with: {command}"
                  + (" (put the password back)" if "***" in command else ""),
                  file=sys.stderr)
        return stop.exit_code
    except (SpaceError, ObjectiveError, StorageError, StudyError, ConfigError, ConfirmError,
            FidelityError,
            ValueError, FileNotFoundError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""What a sweep prints: a line per trial event, a live status line, the closing summary.

On a terminal a tqdm bar shows done/total, running, failed, pruned, the front's size and
the ETA, and the per-trial lines scroll above it. Redirected to a file or a pipe, every
event is one plain line with the same counts, so logs stay readable.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from search.objective import Objective
from search.pareto import non_dominated

#: Ray's loggers whose warnings (token authentication, deprecations) a sweep hides
_RAY_LOGGERS = ("ray", "ray._private", "ray.tune", "ray.train", "ray.air", "ray.util",
                "ray.data", "ray._common")


def default_work_dir() -> Path:
    """Where Tune keeps its experiment folders: ``$XDG_CACHE_HOME/stagetune/runs``
    (``~/.cache/stagetune/runs`` when unset), never the working directory."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stagetune" / "runs"


def quiet_ray_logs(verbose: bool) -> None:
    """Hide Ray's own warnings (e.g. about token authentication) unless ``verbose``.

    Levels are set on Ray's sub-loggers, which ``ray.init`` leaves alone (it resets only
    the top ``ray`` logger).
    """
    level = logging.INFO if verbose else logging.ERROR
    for name in _RAY_LOGGERS[1:]:
        logging.getLogger(name).setLevel(level)
    logging.getLogger("ray._private.authentication").setLevel(level)


def format_value(value: float, se: float | None = None, seeds: int | None = None) -> str:
    """An objective value with enough digits to tell close trials apart (0.99996 stays),
    with its standard error over ``seeds`` replicates where it has one: "0.95741±0.0031";
    "0.95741 (the same on all 3 seeds)" where they agree exactly. One seed has no
    standard error (its ± would read as a certain value), nor has a missing or NaN one."""
    text = f"{value:.5g}"
    if se is None or not math.isfinite(se) or (seeds is not None and seeds < 2):
        return text
    if se == 0.0:
        return text + (f" (the same on all {seeds} seeds)" if seeds else "")
    return f"{text}±{se:.2g}"


def format_values(names: list[str], values: list[float],
                  errors: list[float | None] | None = None, seeds: int | None = None) -> str:
    """``name=value`` pairs, each with its standard error where ``errors`` gives one."""
    errors = errors or [None] * len(names)
    return ", ".join(f"{n}={format_value(v, e, seeds)}"
                     for n, v, e in zip(names, values, errors, strict=True))


def format_params(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, float):
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={v:.3g}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def front_trials(study) -> list:
    """The feasible non-dominated complete trials (scalar studies: the best), by the one
    definition of the front (``search.pareto``).

    Infeasible is a collapsed zay: the searcher flags it in the trial's attributes and
    records it as a violated Optuna constraint (either leaves the trial out).
    """
    from optuna.trial import TrialState

    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values is not None and t.user_attrs.get("feasible", True)
                and all(c <= 0 for c in t.system_attrs.get("constraints", ()))]
    return non_dominated(feasible, [d.name.lower() for d in study.directions])


class Progress:
    """Trial events of a sweep, shown as lines plus (on a terminal) a live status bar.

    Called by the searcher as ``progress(kind, info)`` with kind ``start`` (info:
    number, params), ``complete`` (number, values, feasible), ``prune`` or ``fail``
    (number, optionally reason).
    """

    def __init__(self, total: int, done: int, objective: Objective, study=None, *,
                 quiet: bool = False, stream: IO[str] | None = None,
                 live: bool | None = None) -> None:
        self.total, self.done = total, done
        self.start_done = done
        self.running = self.failed = self.pruned = self.infeasible = 0
        self.objective = objective
        self.study = study
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.live = (not quiet and _isatty(self.stream)) if live is None else live
        self.t0 = time.perf_counter()
        self.started: dict[int, float] = {}
        self._front = len(front_trials(study)) if study is not None else 0
        self._bar = None
        if self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, file=self.stream, unit="trial",
                             dynamic_ncols=True, leave=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}] {postfix}")
            self._bar.set_postfix_str(self._counts(), refresh=True)

    @property
    def scalar(self) -> bool:
        return len(self.objective.names) == 1

    def _front_label(self) -> str:
        if self.scalar:
            return "best" if self._front else "best none yet"
        return f"front {self._front}"

    def _counts(self) -> str:
        return (f"running {self.running}, failed {self.failed}, pruned {self.pruned}, "
                f"{self._front_label()}")

    def eta_s(self) -> float | None:
        """Seconds left, from the mean time per trial finished by this driver."""
        finished = self.done - self.start_done
        if finished <= 0:
            return None
        rate = (time.perf_counter() - self.t0) / finished
        return max(0, self.total - self.done) * rate

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        number = info.get("number")
        if kind == "start":
            self.running += 1
            self.started[number] = time.perf_counter()
            if not self.quiet:
                params = format_params(info.get("params", {}))
                self._say(f"trial {number} started: {params}" if params
                          else f"trial {number} started")
                self._refresh()
            return
        self.running = max(0, self.running - 1)
        self.done += 1
        took = time.perf_counter() - self.started.pop(number, self.t0)
        if kind == "fail":
            self.failed += 1
            what = "FAILED" + (f" ({info['reason']})" if info.get("reason") else "")
        elif kind == "prune":
            self.pruned += 1
            what = "pruned"
        else:
            what = "complete"
            if not info.get("feasible", True):
                self.infeasible += 1
            elif self.study is not None:
                self._front = len(front_trials(self.study))
        if self.quiet:
            return
        vals = ""
        if "values" in info:
            vals = ": " + format_values(self.objective.names, list(info["values"]))
            if not info.get("feasible", True):
                vals += " (infeasible: zay collapsed)"
        line = f"trial {number} {what} after {_duration(took)}{vals}"
        if self._bar is not None:
            self._say(line)
            self._bar.update(1)
            self._refresh()
        else:
            eta = self.eta_s()
            self._say(f"[{self.done}/{self.total}] {line} | {self._counts()} | "
                      f"elapsed {_duration(time.perf_counter() - self.t0)}"
                      + (f", ETA {_duration(eta)}" if eta is not None else ""))

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def summarize(study, objective: Objective) -> dict[str, Any]:
    """Counts by state (with infeasible trials and failure reasons) and the front."""
    from optuna.trial import TrialState

    from search.db.study import FAIL_REASON_ATTR, ORPHAN_ATTR, budget_summary, count_finished
    from search.settings import one_per_setting

    counts = dict(count_finished(study))
    budget = budget_summary(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts["infeasible"] = sum(1 for t in complete if not t.user_attrs.get("feasible", True))
    # the reasons of the failures counted, apart from those of the trials a stopped or
    # lost driver left (stored FAIL too, but re-queued and not counted: "orphaned")
    reasons: dict[str, int] = {}
    requeued: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        reason = t.user_attrs.get(FAIL_REASON_ATTR)
        if reason:
            into = requeued if t.user_attrs.get(ORPHAN_ATTR) else reasons
            into[str(reason)] = into.get(str(reason), 0) + 1
    front = [
        {"number": t.number, "values": list(t.values),
         # what acts in its run; trials that train alike are one entry (its twins)
         "params": _shown_params(t, budget["line"] is not None), "same_as": twins,
         "baseline": bool(t.user_attrs.get("baseline", False)),
         # standard errors over the trial's replicates (--replicates), else None
         "se": [t.user_attrs.get(f"{name}_se") for name in objective.names],
         "seeds": _seeds(t.user_attrs.get("replicates"))}
        for t, twins in one_per_setting(front_trials(study))
    ]
    front.sort(key=lambda f: (-f["values"][0] if objective.directions[0] == "maximize"
                              else f["values"][0], f["number"]))
    return {"study": study.study_name, "counts": counts, "fail_reasons": reasons,
            "requeued_reasons": requeued, "objectives": objective.names,
            "mode": objective.mode, "front": front, "budget": budget,
            "replicates": int(study.user_attrs.get("stagetune_replicates", 1))}


def _shown_params(trial, with_epochs: bool) -> dict[str, Any]:
    """A front trial's parameters that act in its run, with its epochs where the study
    ran at several budgets."""
    from search.settings import acting_params
    from trainer.params import flat_config

    config = trial.user_attrs.get("config")
    shown = acting_params(trial.params, config)
    if with_epochs and isinstance(config, dict):
        shown["epochs"] = flat_config(config).get("epochs")
    return shown


def _seeds(replicates: Any) -> int | None:
    """A trial's stored number of replicates as an int (``None`` when it has none)."""
    try:
        return int(replicates) if replicates is not None else None
    except (TypeError, ValueError):
        return None


#: what the trials a driver left behind are, by their stored reason
REQUEUED_MEANING = {
    "driver stopped": "the sweep was stopped (Ctrl-C or a signal) while they ran",
    "driver lost": "their driver died while they ran",
}


def print_summary(summary: dict[str, Any], file: IO[str] | None = None) -> None:
    file = file or sys.stdout  # looked up at call time, so redirection works
    c = summary["counts"]
    infeasible = c.get("infeasible", 0)
    print(f"study {summary['study']!r}: {c['complete']} complete"
          + (f" ({infeasible} infeasible: zay collapsed)" if infeasible else "")
          + f", {c['pruned']} pruned, {c['failed']} failed, {c['running']} running, "
          f"{c['waiting']} waiting"
          + (f", {c['orphaned']} interrupted (re-queued)" if c.get("orphaned") else ""),
          file=file)
    for reason, n in sorted(summary.get("fail_reasons", {}).items()):
        print(f"  failed {n}x: {reason}", file=file)
    for reason, n in sorted(summary.get("requeued_reasons", {}).items()):
        meaning = REQUEUED_MEANING.get(reason, "their driver left them running")
        print(f"  interrupted {n}x: {reason} ({meaning}; not failures and not counted "
              "toward --n-trials: their settings were queued to run again)", file=file)
    budget_line = (summary.get("budget") or {}).get("line")
    if budget_line:
        print(budget_line, file=file)
    names = summary["objectives"]
    front = summary["front"]
    if len(names) == 1:
        if not front:
            print(f"best {names[0]}: no feasible complete trial yet", file=file)
        header = f"best {names[0]}" + (f" (tied by {len(front)} trials)"
                                       if len(front) > 1 else "") + ":"
    else:
        if not front:
            print(f"Pareto front over {', '.join(names)}: no feasible complete trial yet",
                  file=file)
        header = (f"Pareto front ({len(front)} trial{'s' if len(front) != 1 else ''}) "
                  f"over {', '.join(names)}"
                  + (f" (means ± SE over {summary['replicates']} paired seeds)"
                     if summary.get("replicates", 1) > 1 else "") + ":")
    if front:
        print(header, file=file)
    for f in front:
        errors = f.get("se") or [None] * len(names)
        vals = "  ".join(f"{n}={format_value(v, e, f.get('seeds'))}"
                         for n, v, e in zip(names, f["values"], errors, strict=True))
        params = format_params(dict(sorted(f["params"].items())))
        print(f"  #{f['number']:<4d} {vals}  {params}"
              + ("  (method default)" if f["baseline"] else "")
              + (f"  (= {', '.join(f'#{n}' for n in f['same_as'])}: trained alike)"
                 if f.get("same_as") else ""), file=file)

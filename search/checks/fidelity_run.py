"""``stagetune fidelity``: train a study's fidelity check and store it beside the study.

The plan (``search.checks.fidelity`` scores it): the method's default and ``--settings`` - 1
other settings, drawn at random from the space (``--source space``: the sweep's
``--set``/``--range``/``--space`` options at the study's epochs) or taken from the
study's complete feasible trials (``--source trials``); ``--seeds`` fresh seeds (above
every seed the study, its confirmations and earlier checks used), paired across settings
and budgets (seed s trains every setting at every budget on one split); the target
budget (the study's own trial configuration) and each cheaper schedule; the rungs, read
from the target runs' epoch rows.

- **The same driver.** Runs go through Ray Tune and ``search.worker`` like a sweep's
  trials (``search.driver.planned``): solo, or with ``--population`` one vectorised population
  per (seed, schedule) holding every setting.
- **Stored beside, not inside, the study** (``stagetune_fidelity_checks``,
  ``stagetune_fidelity_runs``): the sampler never reads a check's runs as trials.
- **Resumable.** The plan is frozen when a check starts and every run is written as it
  ends; the same command again runs only what is missing (and retries failed runs),
  then scores the check. ``--new`` starts another check with the same options (after
  the study grew, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search.checks.confirm import flat_fields, fresh_seeds
from search.checks.fidelity import (
    TARGET,
    Budget,
    FidelityError,
    budget_params,
    default_rungs,
    plan_budgets,
    score_check,
)
from search.db import storage as db
from search.driver.planned import PlanRunOptions, PlanSearcher, run_jobs
from search.objective import EPOCH_PROXIES, LODO_METRIC, Objective, proxy_of

DEFAULT_KEY = "default"
SOURCES = ("space", "trials")


@dataclass
class FidelityOptions(PlanRunOptions):
    settings: int = 16
    seeds: int = 3
    epochs: tuple[int, ...] = ()  # cheaper schedules: epoch budgets
    max_samples: tuple[int, ...] = ()  # cheaper schedules: fewer sources, target epochs
    rungs: tuple[int, ...] | None = None  # None: search.checks.fidelity.default_rungs
    source: str = "space"
    space_file: str | None = None
    fixes: tuple[str, ...] = ()
    ranges: tuple[str, ...] = ()
    objectives: tuple[str, ...] = ()  # beside the study's own
    sample_seed: int = 0
    new: bool = False
    bootstrap: int = 2000


# -- the plan -------------------------------------------------------------------------------


def check_objectives(objective: Objective, extra: tuple[str, ...]) -> list[str]:
    """What a check scores: the study's objectives (a scalar study's two components) and
    ``extra``; each needs a per-epoch proxy for the rungs."""
    if objective.task == LODO_METRIC:
        raise FidelityError(f"a leave-one-domain-out study ({LODO_METRIC}) cannot be "
                            "checked yet: a check's runs are single runs, not folds")
    names = [objective.task, objective.disentanglement, *extra]
    unknown = [n for n in names if proxy_of(n) is None]
    if unknown:
        raise FidelityError(f"no per-epoch proxy for {', '.join(unknown)}; a check scores "
                            f"{', '.join(EPOCH_PROXIES)} or a task metric")
    return list(dict.fromkeys(names))


def default_setting(study) -> dict[str, Any]:
    """The study's default (its baseline trial): what every check includes."""
    from optuna.trial import TrialState

    # the newest: a study moved to another budget (--change-budget) queued its default
    # again as that budget's reference
    for t in reversed(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        if t.user_attrs.get("baseline") and isinstance(t.user_attrs.get("config"), dict):
            return {"key": DEFAULT_KEY, "params": dict(t.params),
                    "config": t.user_attrs["config"]}
    raise FidelityError(f"study {study.study_name!r} has no complete run of the method's "
                        "default to take its trial configuration from; run a sweep first "
                        "(its first trial is the default)")


def drawn_settings(default: dict[str, Any], opts: FidelityOptions, epochs: int
                   ) -> list[dict[str, Any]]:
    """``--settings`` - 1 settings drawn at random from the space (seeded)."""
    import optuna

    from search.space import build_space
    from trainer import apply_flat

    # where a parameter acts depends on what every run keeps fixed, as in a sweep
    space = build_space(epochs, file=opts.space_file, fixes=list(opts.fixes),
                        ranges=list(opts.ranges)).with_base(default["config"])
    sampler = optuna.samplers.RandomSampler(seed=opts.sample_seed)
    draws = optuna.create_study(sampler=sampler)
    out = []
    for i in range(opts.settings - 1):
        params = space.sample(draws.ask())
        out.append({"key": f"draw_{i}", "params": params,
                    "config": apply_flat(default["config"], params)})
    return out


def trial_settings(study, opts: FidelityOptions, epochs: int) -> list[dict[str, Any]]:
    """``--settings`` - 1 of the study's complete feasible trials at its current budget
    (``epochs``; not the default), chosen at random (seeded) so that they span its range
    rather than its best."""
    import numpy as np
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not t.user_attrs.get("baseline") and t.user_attrs.get("feasible", True)
              and isinstance(t.user_attrs.get("config"), dict)
              and int(t.user_attrs["config"]["optim"]["epochs"]) == epochs]
    if len(trials) < 2:
        raise FidelityError(f"study {study.study_name!r} has {len(trials)} complete "
                            "feasible trials besides the default; --source trials needs 2")
    n = min(opts.settings - 1, len(trials))
    pick = np.random.default_rng(opts.sample_seed).choice(len(trials), n, replace=False)
    chosen = sorted((trials[i] for i in pick), key=lambda t: t.number)
    return [{"key": f"trial_{t.number}", "params": dict(t.params),
             "config": t.user_attrs["config"]} for t in chosen]


def _options_key(opts: FidelityOptions, budgets: list[Budget], objectives: list[str]
                 ) -> dict[str, Any]:
    """What makes two commands the same check (resumed rather than started anew)."""
    return {"source": opts.source, "settings": opts.settings, "seeds": opts.seeds,
            "sample_seed": opts.sample_seed, "space_file": opts.space_file,
            "fixes": list(opts.fixes), "ranges": list(opts.ranges),
            "budgets": [b.to_dict() for b in budgets], "objectives": objectives}


def open_check(opts: FidelityOptions) -> tuple[Any, dict[str, Any], bool]:
    """The storage and the check to run (the latest with these options, else a new one);
    the last item says whether it was made now. Nothing is stored when it refuses."""
    from search.db.study import load_named_study, open_storage, summary_objective

    if opts.settings < 3:
        raise FidelityError(f"--settings must be at least 3 for a rank correlation "
                            f"(got {opts.settings})")
    if opts.seeds < 1:
        raise FidelityError(f"--seeds must be at least 1 (got {opts.seeds})")
    if opts.source not in SOURCES:
        raise FidelityError(f"--source must be one of {', '.join(SOURCES)} "
                            f"(got {opts.source!r})")
    storage = open_storage(opts.storage)
    study = load_named_study(storage, opts.storage, opts.study)
    objective = summary_objective(study)
    objectives = check_objectives(objective, opts.objectives)
    default = default_setting(study)
    target = int(default["config"]["optim"]["epochs"])
    rungs = default_rungs(target) if opts.rungs is None else list(opts.rungs)
    schedules = {f"n{n}": {"max_samples": int(n)} for n in opts.max_samples}
    budgets = plan_budgets(target, epochs=opts.epochs, rungs=rungs, schedules=schedules)
    if len(budgets) < 2:
        raise FidelityError("nothing cheaper to check: give --epochs, --max-samples or rungs")
    key = _options_key(opts, budgets, objectives)
    engine = storage.engine
    earlier = db.read_fidelity_checks(engine, opts.study, runs=False)
    if not opts.new:
        for check in reversed(earlier):
            if check["plan"]["options"] == key:
                return storage, _with_runs(engine, opts.study, check["id"]), False
    others = (drawn_settings(default, opts, target) if opts.source == "space"
              else trial_settings(study, opts, target))
    used = [s for c in earlier for s in c["plan"]["seeds"]]
    used += [s for c in db.read_confirmations(engine, opts.study) for s in c["seeds"]]
    spec = objective.describe()
    plan = {"options": key, "target_epochs": target, "objectives": objectives,
            "objective": {k: spec[k] for k in ("mode", "disentanglement", "weight", "task")},
            "seeds": fresh_seeds(study, opts.seeds, used),
            "budgets": [b.to_dict() for b in budgets], "settings": [default, *others]}
    check_id = db.add_fidelity_check(engine, opts.study, plan)
    return storage, _with_runs(engine, opts.study, check_id), True


def _with_runs(engine, study_name: str, check_id: int) -> dict[str, Any]:
    return next(c for c in db.read_fidelity_checks(engine, study_name) if c["id"] == check_id)


# -- running ----------------------------------------------------------------------------------


def budgets_of(check: dict[str, Any]) -> list[Budget]:
    return [Budget.from_dict(b) for b in check["plan"]["budgets"]]


def pending_runs(check: dict[str, Any]) -> list[tuple[str, int, str]]:
    """The (setting, seed, schedule) runs not yet stored complete, seed-major (a check
    cut short has every budget of its first seeds)."""
    done = {(r["setting"], r["seed"], r["budget"]) for r in check["runs"]
            if r["state"] == "complete"}
    plan = check["plan"]
    return [(s["key"], seed, b.name) for seed in plan["seeds"] for b in budgets_of(check)
            if not b.is_rung for s in plan["settings"]
            if (s["key"], seed, b.name) not in done]


def jobs_for(check: dict[str, Any], *, population: bool) -> list[list[tuple[str, int, str]]]:
    """The pending runs as Ray trials: one per run, or one per (seed, schedule)."""
    pending = pending_runs(check)
    if not population:
        return [[run] for run in pending]
    grouped: dict[tuple[int, str], list[tuple[str, int, str]]] = {}
    for run in pending:
        grouped.setdefault((run[1], run[2]), []).append(run)
    return list(grouped.values())


def run_params(setting: dict[str, Any], budget: Budget, seed: int, target_epochs: int
               ) -> dict[str, Any]:
    """A setting's flat trainer fields at a schedule and seed (the seed draws the split)."""
    flat = budget_params(flat_fields(setting["config"]), budget, target_epochs)
    return {**flat, "seed": int(seed), "split_seed": None, "write_plots": False}


class FidelitySearcher(PlanSearcher):
    """Hands Tune the pending runs of a check and stores each, with its epoch rows."""

    keeps_history = True

    def __init__(self, check: dict[str, Any], jobs, *, engine, trial_options: dict[str, Any],
                 on_event=None) -> None:
        super().__init__(jobs, engine=engine, trial_options=trial_options, on_event=on_event)
        self.check_id = check["id"]
        self.target_epochs = int(check["plan"]["target_epochs"])
        self.settings = {s["key"]: s for s in check["plan"]["settings"]}
        self.budgets = {b.name: b for b in budgets_of(check)}

    def job_request(self, job: list[tuple[str, int, str]]):
        params = [run_params(self.settings[key], self.budgets[budget], seed, self.target_epochs)
                  for key, seed, budget in job]
        return self.settings[job[0][0]]["config"], params, None

    def store(self, run: tuple[str, int, str], *, state: str, metrics: dict[str, float],
              history: list[dict[str, float]], reason: str | None) -> None:
        key, seed, budget = run
        db.write_fidelity_run(self.engine, self.check_id, key, seed, budget, state=state,
                              metrics=metrics, history=history, reason=reason)


def score(check: dict[str, Any], *, bootstrap: int = 2000) -> dict[str, Any]:
    """A check's scored result: ``score_check``'s records, and how many runs it had."""
    plan = check["plan"]
    runs = {(r["setting"], r["seed"], r["budget"]): r for r in check["runs"]}
    total = len(pending_runs({**check, "runs": []}))
    complete = sum(1 for r in check["runs"] if r["state"] == "complete")
    failed = sum(1 for r in check["runs"] if r["state"] == "failed")
    records = score_check(runs, [s["key"] for s in plan["settings"]], plan["seeds"],
                          budgets_of(check), plan["objectives"], bootstrap=bootstrap)
    return {"id": check["id"], "target_epochs": plan["target_epochs"],
            "settings": len(plan["settings"]), "seeds": plan["seeds"],
            "runs": {"complete": complete, "failed": failed, "total": total},
            "complete": complete + failed >= total, "records": records}


def run_fidelity(opts: FidelityOptions) -> dict[str, Any]:
    """Run (or resume) a fidelity check; returns its scored summary (also stored)."""
    from search.driver.sweep import SweepInterrupted

    storage, check, created = open_check(opts)
    engine = storage.engine
    jobs = jobs_for(check, population=opts.population)
    runs = sum(len(j) for j in jobs)
    total = len(pending_runs({**check, "runs": []}))
    if not opts.quiet:
        plan = check["plan"]
        print(f"fidelity check {check['id']} of study {opts.study!r} "
              f"({'new' if created else 'resumed'}): {len(plan['settings'])} settings x "
              f"{len(plan['seeds'])} seeds (seeds {', '.join(map(str, plan['seeds']))}); "
              f"target {plan['target_epochs']} epochs; cheaper: "
              + ", ".join(b.name for b in budgets_of(check) if b.name != TARGET)
              + f"; {total - runs} of {total} runs done, {runs} to run", flush=True)
    if jobs:
        signum = run_jobs(
            opts, jobs, lambda jobs, on_event, trial_options: FidelitySearcher(
                check, jobs, engine=engine, on_event=on_event, trial_options=trial_options),
            name=f"{opts.study}-fidelity", error=FidelityError,
            objective=check["plan"]["objective"],
            describe=lambda run: f"{run[0]} seed {run[1]} at {run[2]}")
        if signum is not None:
            _score_and_store(engine, opts, check["id"])  # what finished, marked incomplete
            raise SweepInterrupted(signum, [])
    return _score_and_store(engine, opts, check["id"])


def _score_and_store(engine, opts: FidelityOptions, check_id: int) -> dict[str, Any]:
    summary = score(_with_runs(engine, opts.study, check_id), bootstrap=opts.bootstrap)
    db.write_fidelity_summary(engine, check_id, summary)
    return summary

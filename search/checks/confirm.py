"""``stagetune confirm``: does the front beat the method's default on seeds it never saw?

The search ranks settings by a few seeds each, so a setting at the top of the front may
be lucky. A confirmation re-runs the front's best ``--top`` settings and the method's
default on ``--seeds`` fresh seeds, paired (seed s trains every setting), and compares
each setting with the default seed by seed (``search.checks.paired``: mean difference, 95%
interval, paired t test, Holm's correction across settings).

- **Fresh seeds.** The seeds are the next integers above every seed the study's trials
  used (their ``seed``, ``split_seed`` and replicate seeds). Each confirmation seed also
  draws its own data split, so a setting that only fits the search's split does not
  confirm.
- **The same driver.** Runs go through Ray Tune and ``search.worker`` like a sweep's
  trials: solo (one run per setting and seed) or, with ``--population``, one vectorised
  population per seed holding every setting.
- **Stored beside, not inside, the study.** Optuna's trials are the sampler's history:
  a confirmation run added there would be read by TPE or the GP as a new observation
  of a setting it already has, and counted toward ``--n-trials``. The runs go to
  ``stagetune_confirmations`` and ``stagetune_confirmation_runs`` in the same database
  (``search.db.storage``), keyed by setting and seed, which is what the paired analysis
  needs and what a resume checks.
- **The study's protocol.** In a leave-one-domain-out study each confirmation run is a
  run of every fold (the study's held-out domains), so it measures ``lodo_accuracy``.
- **Resumable.** The settings and seeds are frozen when a confirmation starts; every run
  is written as it finishes; running the same command again runs only what is missing
  and retries failed runs. A confirmation is complete when every run has an outcome (a
  run that diverged on its seed, after the driver's retries, is one). Other settings
  (the sweep went on and the front changed, not merely its order) or another
  ``--top``/``--seeds`` start a new one; ``status`` and the report show the one that
  ran last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from search.checks.confirm_summary import DEFAULT, summarize
from search.db import storage as db
from search.driver.planned import PlanRunOptions, PlanSearcher, run_jobs
from search.objective import LODO_METRIC, Objective
from search.pareto import non_dominated
from search.worker.replicates import replication


def setting_key(number: int) -> str:
    return f"trial_{number}"


class ConfirmError(ValueError):
    """The confirmation cannot run as asked; nothing was stored."""


@dataclass
class ConfirmOptions(PlanRunOptions):
    top: int = 3
    seeds: int = 5


# -- what to confirm ----------------------------------------------------------------------


def flat_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A ``RunConfig.to_dict`` as flat field names (what ``trainer.apply_flat`` takes)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def front_order(values: list[list[float]], directions: list[str],
                reference: list[float]) -> list[int]:
    """Front points ordered by the hypervolume each adds alone (largest first) above
    ``reference`` (the study's worst value of each objective); scalar studies: best
    first. Ties keep the given order."""
    def signed(point: list[float]) -> list[float]:
        return [v if d == "maximize" else -v for v, d in zip(point, directions, strict=True)]

    if len(directions) == 1:
        return sorted(range(len(values)), key=lambda i: -signed(values[i])[0])
    ref = signed(reference)
    # trials with the very same values are one point of the front: each adds what the
    # point adds (counted twice, neither would add anything and both would rank last)
    points = sorted({tuple(signed(p)) for p in values}, key=lambda q: (q[0], -q[1]))
    gain = {}
    for pos, q in enumerate(points):  # x ascending, so y descending along a front
        left = points[pos - 1][0] if pos > 0 else ref[0]
        below = points[pos + 1][1] if pos + 1 < len(points) else ref[1]
        gain[q] = max(0.0, q[0] - left) * max(0.0, q[1] - below)
    return sorted(range(len(values)), key=lambda i: (-gain[tuple(signed(values[i]))], i))


def select_settings(study, objective: Objective, top: int) -> list[dict[str, Any]]:
    """The default and the ``top`` best other settings, each as ``{"key", "number",
    "params", "values", "config"}``.

    The candidates are the front of the feasible trials other than the default (where
    the default is on the study's front this is the study's front without it; where it
    dominates, they are the best the search found besides it, which is what a
    confirmation should then test), ordered by the hypervolume each adds alone; in a
    scalar study, every feasible trial but the default, best first. Trials that train
    alike (``search.settings``) are one setting, and one that trains as the default does
    is the default: neither is confirmed twice nor against itself. In a study moved to
    another budget only the trials of its current budget are compared.
    """
    from optuna.trial import TrialState

    from search.settings import acting_params, one_per_setting
    from search.settings import setting_key as key_of
    from trainer import params

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with_config = _at_current_budget(
        study, [t for t in complete if isinstance(t.user_attrs.get("config"), dict)])
    if not with_config:
        raise ConfirmError(f"study {study.study_name!r} has no complete trial to confirm yet; "
                           "run a sweep first")
    settings = [t for t, _ in one_per_setting(with_config)]  # the default stands for its twins
    base = [t for t in settings if t.user_attrs.get("baseline")]
    if base:
        default_config = base[0].user_attrs["config"]
        default = {"key": DEFAULT, "number": base[0].number,
                   "params": acting_params(base[0].params, default_config),
                   "values": list(base[0].values)}
    else:  # the default lay outside the space: the method's values on a trial's config
        from trainer import apply_flat

        config = with_config[0].user_attrs["config"]
        epochs = int(config["optim"]["epochs"])
        values = {p.name: p.method_value(epochs) for p in params.searched()}
        default_config = apply_flat(config, values)
        default = {"key": DEFAULT, "number": None, "params": values, "values": None}
    default_key = key_of(-1, default_config, default["params"])
    others = [t for t in settings if not t.user_attrs.get("baseline")
              and t.user_attrs.get("feasible", True)
              and key_of(t.number, t.user_attrs["config"], t.params) != default_key]
    # one objective: every feasible trial, best first (its "front" would be the best alone)
    front = (others if len(objective.directions) == 1
             else non_dominated(others, objective.directions))
    if not front:
        raise ConfirmError(f"study {study.study_name!r} has no feasible complete trial besides "
                           "the method's default: there is nothing to confirm against it")
    feasible = [list(t.values) for t in with_config if t.user_attrs.get("feasible", True)
                and t.values is not None]
    worst = [min(v[j] if d == "maximize" else -v[j] for v in feasible)
             for j, d in enumerate(objective.directions)]
    reference = [w if d == "maximize" else -w for w, d in zip(worst, objective.directions,
                                                                strict=True)]
    order = front_order([list(t.values) for t in front], objective.directions, reference)
    out = [{**default, "config": default_config}]
    for t in (front[i] for i in order[:top]):
        out.append({"key": setting_key(t.number), "number": t.number,
                    "params": acting_params(t.params, t.user_attrs["config"]),
                    "values": list(t.values), "config": t.user_attrs["config"]})
    return out


def _at_current_budget(study, trials: list) -> list:
    """The trials that ran at the study's current budget, where it was moved to another
    (``--change-budget``): a setting and the default are compared at one budget."""
    from search.db.fixed import BUDGET_FIELD, budgets
    from trainer.params import flat_config

    history = budgets(study.user_attrs)
    if len(history) < 2:
        return trials
    current = history[-1]["epochs"]
    return [t for t in trials if flat_config(t.user_attrs["config"]).get(BUDGET_FIELD) == current]


def used_seeds(study) -> set[int]:
    """Every seed the study's trials trained or split data with."""
    used: set[int] = set()
    for t in study.get_trials(deepcopy=False):
        config = t.user_attrs.get("config")
        if isinstance(config, dict):
            used.add(int(config.get("seed", 0)))
            split = (config.get("data") or {}).get("split_seed")
            if split is not None:
                used.add(int(split))
        used.update(int(s) for s in t.user_attrs.get("replicate_seeds", []) or [])
    return used


def lodo_domains(study, objective: Objective) -> list[int] | None:
    """The held-out domains of a leave-one-domain-out study (its runs repeat them), else
    ``None``."""
    if objective.task != LODO_METRIC:
        return None
    for t in study.get_trials(deepcopy=False):
        domains = t.user_attrs.get("lodo_domains")
        if domains:
            return [int(k) for k in domains]
    raise ConfirmError(f"study {study.study_name!r} optimises {LODO_METRIC} but no trial "
                       "records its held-out domains")


def fresh_seeds(study, n: int, also_used: Iterable[int] = ()) -> list[int]:
    """``n`` seeds above every seed the study used and every seed in ``also_used`` (the
    study's earlier confirmations: a new confirmation is an independent sample, so that
    confirming again after a suggestive result is not the same seeds counted twice)."""
    used = used_seeds(study) | set(also_used)
    start = max(used) + 1 if used else 0
    return list(range(start, start + n))


# -- running ----------------------------------------------------------------------------


def pending_runs(confirmation: dict[str, Any]) -> list[tuple[str, int]]:
    """The (setting, seed) runs of a confirmation not yet stored complete."""
    done = {(r["setting"], r["seed"]) for r in confirmation["runs"]
            if r["state"] == "complete"}
    return [(s["key"], seed) for seed in confirmation["seeds"]
            for s in confirmation["settings"] if (s["key"], seed) not in done]


def jobs_for(confirmation: dict[str, Any], *, population: bool) -> list[list[tuple[str, int]]]:
    """The pending runs as Ray trials: one per run, or one per seed (``population``)."""
    pending = pending_runs(confirmation)
    if not population:
        return [[run] for run in pending]
    by_seed: dict[int, list[tuple[str, int]]] = {}
    for key, seed in pending:
        by_seed.setdefault(seed, []).append((key, seed))
    return list(by_seed.values())


def run_params(setting: dict[str, Any], seed: int) -> dict[str, Any]:
    """A setting's configuration for confirmation seed ``seed`` (its own split)."""
    return {**flat_fields(setting["config"]), "seed": int(seed), "split_seed": None,
            "write_plots": False}


class ConfirmSearcher(PlanSearcher):
    """Hands Tune the pending runs of a confirmation and stores each as it ends."""

    def __init__(self, confirmation: dict[str, Any], jobs: list[list[tuple[str, int]]], *,
                 engine, trial_options: dict[str, Any], on_event=None) -> None:
        super().__init__(jobs, engine=engine, trial_options=trial_options, on_event=on_event)
        self.confirmation = confirmation
        self.settings = {s["key"]: s for s in confirmation["settings"]}

    def job_request(self, job: list[tuple[str, int]]):
        params = [run_params(self.settings[key], seed) for key, seed in job]
        folds = self.confirmation.get("lodo_domains")
        seed = job[0][1]
        # a leave-one-domain-out study: each run is all of its folds
        rep = replication(seed, seed, 1, folds) if folds else None
        return self.settings[job[0][0]]["config"], params, rep

    def store(self, run: tuple[str, int], *, state: str, metrics: dict[str, float],
              history: list[dict[str, float]], reason: str | None) -> None:
        key, seed = run
        db.write_confirmation_run(self.engine, self.confirmation["id"], key, seed,
                                  state=state, metrics=metrics, reason=reason)


def _same_plan(stored: dict[str, Any], top: int, n_seeds: int,
               settings: list[dict[str, Any]], objective: Objective) -> bool:
    """Whether ``stored`` is this plan: the same settings (in whatever order the front
    now ranks them), ``--top`` and number of seeds, and objectives it can compare. A plan
    stored with only the objectives' names cannot compute a scalar study's weighted
    score, so a scalar study does not resume it."""
    spec = stored["objectives"]
    comparable = "mode" in spec or objective.mode == "pareto"
    return (comparable and spec["names"] == objective.names and stored["top"] == top
            and len(stored["seeds"]) == n_seeds
            and sorted(s["key"] for s in stored["settings"])
            == sorted(s["key"] for s in settings))


def open_confirmation(opts: ConfirmOptions) -> tuple[Any, Any, Objective, dict[str, Any], bool]:
    """The study, its storage, its objective and the confirmation to run (resumed when
    one with this plan exists, else created); the last item says whether it was made now."""

    from search.db.study import load_named_study, open_storage, summary_objective

    if opts.top < 1:
        raise ConfirmError(f"--top must be at least 1 (got {opts.top})")
    if opts.seeds < 2:
        raise ConfirmError(f"--seeds must be at least 2 for a paired comparison "
                           f"(got {opts.seeds})")
    storage = open_storage(opts.storage)
    study = load_named_study(storage, opts.storage, opts.study)
    objective = summary_objective(study)
    settings = select_settings(study, objective, opts.top)
    engine = storage.engine
    db.create_tables(engine)
    earlier = db.read_confirmations(engine, opts.study)
    for stored in reversed(earlier):
        if _same_plan(stored, opts.top, opts.seeds, settings, objective):
            return study, storage, objective, stored, False
    # above the seeds of earlier confirmations and fidelity checks too: an independent sample
    checks = db.read_fidelity_checks(engine, opts.study, runs=False)
    seeds = fresh_seeds(study, opts.seeds, [*(s for c in earlier for s in c["seeds"]),
                                            *(s for c in checks for s in c["plan"]["seeds"])])
    cid = db.add_confirmation(engine, opts.study, top=opts.top, seeds=seeds,
                              objectives=objective.describe(),
                              settings=settings)
    stored = next(c for c in db.read_confirmations(engine, opts.study) if c["id"] == cid)
    return study, storage, objective, stored, True


def run_confirm(opts: ConfirmOptions) -> dict[str, Any]:
    """Run (or resume) a confirmation; returns its summary (``summarize``)."""
    from search.driver.sweep import SweepInterrupted

    study, storage, objective, confirmation, created = open_confirmation(opts)
    engine = storage.engine
    population = opts.population
    jobs = jobs_for(confirmation, population=population)
    runs = sum(len(j) for j in jobs)
    total = len(confirmation["seeds"]) * len(confirmation["settings"])
    if not opts.quiet:
        names = ", ".join(s["key"] for s in confirmation["settings"][1:])
        print(f"confirmation {confirmation['id']} of study {opts.study!r} "
              f"({'new' if created else 'resumed'}): {names} against the default on seeds "
              f"{', '.join(map(str, confirmation['seeds']))}; {total - runs} of {total} runs "
              f"done, {runs} to run", flush=True)
    if jobs:
        confirmation["lodo_domains"] = lodo_domains(study, objective)
        signum = run_jobs(
            opts, jobs, lambda jobs, on_event, trial_options: ConfirmSearcher(
                confirmation, jobs, engine=engine, on_event=on_event,
                trial_options=trial_options),
            name=f"{opts.study}-confirm", error=ConfirmError,
            objective=asdict(objective),
            describe=lambda run: f"{run[0]} seed {run[1]}")
        if signum is not None:
            raise SweepInterrupted(signum, [])
    confirmation = next(c for c in db.read_confirmations(engine, opts.study)
                        if c["id"] == confirmation["id"])
    return summarize(confirmation)

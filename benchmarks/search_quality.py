"""Search quality: hypervolume after 16, 32 and 64 trials of TPE, GP, NSGA-II and random
search over ten sampler seeds, each trial trained with R paired seeds, on ``digits``.

    python benchmarks/search_quality.py [--budgets 16,32,64] [--seeds 0,...,9]
        [--samplers tpe,gp,nsga2,random] [--replicates 2] [--population 1]
        [--max-minutes M] [--summary-only] [--scaling-check]

Objectives: task accuracy (``task_accuracy``) and the ground-truth
``disentanglement_score`` (mean exclusivity of the factor x group matrix), both maximised.
Replicates: every suggested setting is trained with model seeds 0..R-1 on one fixed data
split (data seed 0); replicate r uses seed r for every setting, so differences between
settings are paired. A trial's objective values are the means over its replicates; the
per-seed values and standard errors of the objectives and of the interaction factor's
row of the factor matrix are its user attributes. A trial is feasible only if zay
collapsed in none of its replicates (the Optuna constraint is the worst replicate's).

The space is the sweep's own (``search.space.build_space``) with the opt-in levers
ranged (``RANGES``: the KL weights of zay and zx on the registry's log range, and which
pairs the penalty measures) beside the stage lengths, the penalty switch and λ. The
method's default (``SearchSpace.baseline()`` and penalty pairs zy_za: thirds, penalty
on, λ = 10, all KL weights 1) is trial 0 of every study and its point is the
hypervolume's reference: the hypervolume is the area that found settings add beyond the
default. A second column uses the reference (0, 0). Only feasible trials count. Each
sampler's hypervolumes over the search seeds are compared with random search's by a
one-sided Mann-Whitney U test (``alternative="greater"``), α = 0.1, at every budget.

How it runs: all studies advance in lockstep rounds. In a round each study below the
current budget asks ``--population`` trials (its sampler made as a sweep makes it,
seeded per trial from the search seed and the trial number); every new setting x
replicate is one member of a ``trainer.fit_population`` call over the shared data set
(split by ``trainer.group_population`` where members cannot share a model, the penalty
pairs, and into populations of at most ``MAX_MEMBERS``; a population whose final
evaluation raises is trained again in halves until the failing member is found, which
fails its trial). A setting already trained (the default in every study; the random
draws that TPE, GP and NSGA-II start from, which with the same search seed are random
search's own) is not trained again: training is a deterministic function of the
setting, the seed and the data (up to float reassociation in a population). Studies
live in ``--storage`` (SQLite): a rerun continues each study where it stopped (a round
cut short is marked failed and not counted).

``--scaling-check`` trains a few settings (default, penalty off, kl_weight suppression,
extreme levers) at this benchmark's sizes and at larger ones with several seeds and
reports whether the two rank them alike on both objectives.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the scaled-down trial (see benchmarks/README.md, "Search quality", for how it was
#: chosen): 250 source digits in six domains (1,500 images, split by source), 6 epochs at
#: a learning rate of 5e-3 (the method's default is 60 epochs at 1e-3 on all 1,797
#: sources), probes fit on 150 validation and scored on 150 test inputs, 8 x 8 images,
#: hidden 64, latents 4 x 8, batch 64
SIZES: dict[str, Any] = dict(
    epochs=6, max_samples=250, lr=5e-3, image_size=8, hidden_dim=64, zy_dim=8, za_dim=8,
    zay_dim=8, zx_dim=8, batch_size=64, eval_max_samples=150, write_plots=False,
    device="cpu", staged_training=True)
#: the larger problem of the scaling check: four times the epochs at the method's own
#: learning rate, on 1,000 source digits, the probes on 500 inputs per split
LARGE: dict[str, Any] = dict(SIZES, epochs=24, max_samples=1000, lr=1e-3,
                             eval_max_samples=500)
#: the opt-in levers searched beside the default space (``--range`` strings of a sweep)
RANGES = ("beta_ay=0.25:4", "beta_x=0.25:4", "penalty_pairs=zy_za,zy_za_zx")
OBJECTIVES = ("task_accuracy", "disentanglement_score")
DATA_SEED = 0
#: members per ``fit_population`` call: larger populations gain little on a CPU, and a
#: population whose evaluation raises is trained again in halves
MAX_MEMBERS = 24
ALPHA = 0.1
INTERRUPTED = "interrupted"
BASELINE = "baseline"
GROUPS = ("zy", "za", "zay", "zx")
#: the scaling check's settings: overrides of the method's default
SCALING_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "penalty off": {"use_independence_penalty": False},
    "kl_weight suppression": {"zay_suppression": "kl_weight"},
    "levers: beta_ay 0.25, beta_x 4, pairs zy_za_zx": {
        "beta_ay": 0.25, "beta_x": 4.0, "penalty_pairs": "zy_za_zx"},
}


def kept_metrics(interaction: str) -> tuple[str, ...]:
    """The final metrics stored per replicate: the objectives, the interaction factor's
    row of the factor x group matrix, its exclusivity, collapse and the groups' rates."""
    return (*OBJECTIVES, *(f"factor_{interaction}_from_{g}" for g in GROUPS),
            f"exclusivity_{interaction}", "zay_collapsed", "zay_rate", "zx_rate")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sd with ddof 1 over sqrt(n); nan for one value)."""
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def setting_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


# -- training settings with replicates ----------------------------------------------------


@dataclass
class Outcome:
    """One setting trained with every replicate seed: the kept metrics per seed, or why it
    failed."""

    per_seed: dict[str, list[float]] = field(default_factory=dict)
    feasible: list[bool] = field(default_factory=list)
    constraint: list[float] = field(default_factory=list)
    error: str | None = None


class ReplicateTrainer:
    """Trains settings with seeds ``0..replicates-1`` on one data set, as populations.

    Every (setting, seed) is one member; members go to as few ``fit_population`` calls as
    can share a model (``group_population`` with ``shared_data``). Outcomes are cached by
    setting, so a setting asked again (the default in every study, the same random draws
    in several studies) is trained once.
    """

    def __init__(self, sizes: dict[str, Any], replicates: int) -> None:
        from search.objective import Objective
        from trainer import RunConfig, load_dataset

        self.sizes = dict(sizes)
        self.replicates = replicates
        self.base = RunConfig().replace(**self.sizes)
        self.data = load_dataset(self.base.data, DATA_SEED)
        self.interaction = self.data.interaction_factor
        self.kept = kept_metrics(self.interaction)
        self.objective = Objective(mode="pareto", disentanglement=OBJECTIVES[1])
        self.cache: dict[str, Outcome] = {}
        self.member_runs = 0
        self.cpu_s = 0.0

    def config(self, params: dict[str, Any], seed: int):
        from trainer import RunConfig

        return RunConfig.from_dict(self.base.to_dict()).replace(**params, seed=seed)

    def train(self, settings: list[dict[str, Any]]) -> list[Outcome]:
        """The outcome of every setting, training those not in the cache."""
        from trainer import fit_population, group_population

        todo = list(dict.fromkeys(setting_key(p) for p in settings
                                  if setting_key(p) not in self.cache))
        params = {setting_key(p): p for p in settings}
        members = [(key, r) for key in todo for r in range(self.replicates)]
        cfgs = [self.config(params[key], r) for key, r in members]
        outcomes = {key: Outcome() for key in todo}
        groups = group_population(cfgs, shared_data=True) if cfgs else []
        chunks = [g[i:i + MAX_MEMBERS] for g in groups for i in range(0, len(g), MAX_MEMBERS)]
        for chunk in chunks:
            results = self._fit(fit_population, [cfgs[i] for i in chunk])
            for i, result in zip(chunk, results, strict=True):
                key, r = members[i]
                out = outcomes[key]
                if isinstance(result, Exception):
                    out.error = f"seed {r}: {type(result).__name__}: {result}"
                    continue
                final = result.final
                for name in self.kept:
                    out.per_seed.setdefault(name, [math.nan] * self.replicates)[r] = float(
                        final.get(name, math.nan))
                out.feasible.append(bool(self.objective.feasible(final)))
                out.constraint.append(float(self.objective.constraint(final)))
        self.cache.update(outcomes)
        return [self.cache[setting_key(p)] for p in settings]

    def _fit(self, fit_population, cfgs: list) -> list:
        """``fit_population`` over ``cfgs``; where it raises (the final evaluation raises
        for the whole population when one member's latents are not finite), the members
        are trained again in halves, down to the member that fails, whose exception is
        its result."""
        c0 = time.process_time()
        try:
            results = fit_population(cfgs, data=self.data)
        except Exception as exc:
            results = exc
        self.cpu_s += time.process_time() - c0  # the failed attempt's cost counts too
        self.member_runs += len(cfgs)
        if not isinstance(results, Exception):
            return results
        if len(cfgs) == 1:
            return [results]
        print(f"  a population of {len(cfgs)} raised ({type(results).__name__}: "
              f"{str(results).splitlines()[0][:80]}); training it again in halves",
              flush=True)
        half = len(cfgs) // 2
        return (self._fit(fit_population, cfgs[:half])
                + self._fit(fit_population, cfgs[half:]))

    def remember(self, trial) -> None:
        """Put a stored trial's outcome into the cache (a rerun trains nothing twice)."""
        per_seed = trial.user_attrs.get("per_seed")
        if trial.state.name == "COMPLETE" and per_seed and trial.user_attrs.get("setting"):
            self.cache[trial.user_attrs["setting"]] = Outcome(
                per_seed=per_seed, feasible=list(trial.user_attrs["feasible_per_seed"]),
                constraint=list(trial.user_attrs["constraint_per_seed"]))


# -- the studies ---------------------------------------------------------------------------


def open_study(storage: str, sampler: str, seed: int, total: int | None = None):
    """The study of one sampler and search seed (created if missing); trials a cut run
    left RUNNING are marked failed and ``interrupted`` (not counted)."""
    import optuna
    from optuna.trial import TrialState

    from search.db.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=f"{sampler}-seed{seed}",
                                directions=["maximize", "maximize"],
                                sampler=make_sampler(sampler, seed, n_trials=total),
                                load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study


def counted(study) -> list:
    """Finished trials, in order, less those a cut run left behind."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
            and not t.user_attrs.get(INTERRUPTED)]


def tell(study, trial, params: dict[str, Any], outcome: Outcome, replicates: int) -> None:
    """Tell a trial its replicates' mean objectives, with per-seed values, standard errors
    and the collapse constraint (the worst replicate's) as user attributes."""
    from optuna.trial import TrialState

    from search.db.study import FAIL_REASON_ATTR
    from trainer.objectives import COLLAPSE_FLAG

    trial.set_user_attr("setting", setting_key(params))
    if outcome.error is not None:
        trial.set_user_attr(FAIL_REASON_ATTR, outcome.error)
        study.tell(trial, state=TrialState.FAIL)
        return
    values = []
    for name in OBJECTIVES:
        m, se = mean_se(outcome.per_seed[name])
        values.append(m)
        trial.set_user_attr(f"se_{name}", se)
    trial.set_user_attr("seeds", list(range(replicates)))
    trial.set_user_attr("per_seed", outcome.per_seed)
    trial.set_user_attr("feasible_per_seed", outcome.feasible)
    trial.set_user_attr("constraint_per_seed", outcome.constraint)
    trial.set_user_attr("feasible", all(outcome.feasible))
    trial.set_constraint(COLLAPSE_FLAG, max(outcome.constraint))
    study.tell(trial, values)


def run(storage: str, samplers: list[str], seeds: list[int], budgets: list[int],
        population: int, replicates: int, deadline: float | None) -> dict[str, Any]:
    """Bring every study to each budget in turn, in lockstep rounds; stop starting rounds
    after ``deadline`` (``time.time()``). Returns the run's cost."""
    from search.db.study import make_sampler, trial_seed
    from search.space import build_space

    total = max(budgets)
    space = build_space(SIZES["epochs"], ranges=list(RANGES))
    trainer = ReplicateTrainer(SIZES, replicates)
    studies = {}
    for sampler in samplers:
        for seed in seeds:
            study = open_study(storage, sampler, seed, total)
            if not study.trials:
                study.enqueue_trial(space.baseline(), user_attrs={BASELINE: True})
            for t in study.trials:
                trainer.remember(t)
            studies[(sampler, seed)] = study
    t_start, rounds = time.time(), 0
    for budget in budgets:
        while True:
            n_done = {k: len(counted(s)) for k, s in studies.items()}
            behind = [(k, s) for k, s in studies.items() if n_done[k] < budget]
            if not behind:
                break
            if deadline is not None and time.time() > deadline:
                print(f"deadline reached: stopped before budget {budget}", flush=True)
                return _cost(trainer, t_start, rounds, stopped_at=budget)
            t0, c0, m0, ask_s = time.time(), trainer.cpu_s, trainer.member_runs, 0.0
            asked = []
            for (sampler, seed), study in behind:
                for _ in range(min(population, budget - n_done[(sampler, seed)])):
                    a0 = time.perf_counter()
                    study.sampler = make_sampler(sampler, trial_seed(seed, len(study.trials)),
                                                 n_trials=total)
                    trial = study.ask()
                    params = space.sample(trial)
                    ask_s += time.perf_counter() - a0
                    asked.append((study, trial, params))
            outcomes = trainer.train([p for _, _, p in asked])
            for (study, trial, params), outcome in zip(asked, outcomes, strict=True):
                tell(study, trial, params, outcome, replicates)
            rounds += 1
            done = min(len(counted(s)) for s in studies.values())
            print(f"round {rounds}: {len(asked)} trials, "
                  f"{trainer.member_runs - m0} member-runs trained "
                  f"({trainer.cpu_s - c0:.0f} CPU s), asking {ask_s:.1f} s, wall "
                  f"{time.time() - t0:.0f} s; every study at >= {done}/{budget} trials; "
                  f"{(time.time() - t_start) / 60:.1f} min so far", flush=True)
    return _cost(trainer, t_start, rounds, stopped_at=None)


def _cost(trainer: ReplicateTrainer, t_start: float, rounds: int,
          stopped_at: int | None) -> dict[str, Any]:
    return {"wall_s": time.time() - t_start, "rounds": rounds,
            "member_runs": trainer.member_runs, "training_cpu_s": trainer.cpu_s,
            "settings_trained": len(trainer.cache), "stopped_before_budget": stopped_at}


# -- the summary ---------------------------------------------------------------------------


def hypervolumes(points: np.ndarray, reference: list[float]) -> float:
    from analysis import hypervolume_2d

    if not len(points):
        return 0.0
    return hypervolume_2d(points, ["maximize", "maximize"], reference)


def _trial_row(t, study_name: str) -> dict[str, Any]:
    return {"study": study_name, "number": t.number, "params": dict(t.params),
            "values": list(t.values), "per_seed": t.user_attrs.get("per_seed", {}),
            "feasible": bool(t.user_attrs.get("feasible", True))}


def summarise(storage: str, samplers: list[str], seeds: list[int], budgets: list[int]
              ) -> dict[str, Any]:
    """Hypervolumes per study and budget, Mann-Whitney p-values against random search,
    the settings that dominate the default, the best setting and the interaction row."""
    import optuna
    from optuna.trial import TrialState
    from scipy.stats import mannwhitneyu

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {"sizes": SIZES, "ranges": RANGES, "objectives": OBJECTIVES,
                           "data_seed": DATA_SEED, "alpha": ALPHA, "studies": {}}
    default_row = None
    all_rows = []
    for sampler in samplers:
        for seed in seeds:
            name = f"{sampler}-seed{seed}"
            # read only: a summary taken while a run goes on must not touch its trials
            # (``open_study`` marks RUNNING ones interrupted, which is for resuming)
            study = optuna.load_study(study_name=name, storage=storage)
            done = counted(study)
            rows = [t for t in done if t.state == TrialState.COMPLETE]
            base = [t for t in rows if t.user_attrs.get(BASELINE)]
            if base and default_row is None:
                default_row = _trial_row(base[0], name)
            ref = list(base[0].values) if base else None
            entry: dict[str, Any] = {
                "trials": len(done), "failed": sum(t.state == TrialState.FAIL for t in done),
                "infeasible": sum(not t.user_attrs.get("feasible", True) for t in rows),
                "default": ref, "hv_vs_default": {}, "hv_vs_zero": {}, "dominating": []}
            for b in budgets:
                if len(done) < b:
                    continue
                first = [t for t in done[:b] if t.state == TrialState.COMPLETE
                         and t.user_attrs.get("feasible", True)]
                pts = np.array([t.values for t in first]) if first else np.zeros((0, 2))
                entry["hv_vs_default"][b] = hypervolumes(pts, ref or [0.0, 0.0])
                entry["hv_vs_zero"][b] = hypervolumes(pts, [0.0, 0.0])
            for t in rows:
                row = _trial_row(t, name)
                all_rows.append(row)
                v = t.values
                if ref and row["feasible"] and v[0] >= ref[0] and v[1] >= ref[1] and (
                        v[0] > ref[0] or v[1] > ref[1]):
                    entry["dominating"].append(
                        {"number": t.number, "d_accuracy": v[0] - ref[0],
                         "d_disentanglement": v[1] - ref[1]})
            out["studies"][name] = entry
    out["default"] = default_row
    out["hv"] = {}
    out["mann_whitney"] = {}
    for kind in ("hv_vs_default", "hv_vs_zero"):
        random_hv = {b: [out["studies"][f"random-seed{s}"][kind].get(b) for s in seeds]
                     for b in budgets} if "random" in samplers else {}
        for sampler in samplers:
            for b in budgets:
                hv = [out["studies"][f"{sampler}-seed{s}"][kind].get(b) for s in seeds]
                hv = [h for h in hv if h is not None]
                out["hv"].setdefault(kind, {}).setdefault(sampler, {})[b] = {
                    "mean": float(np.mean(hv)) if hv else None,
                    "sd": float(np.std(hv, ddof=1)) if len(hv) > 1 else None, "n": len(hv),
                    "values": hv}
                ref_hv = [h for h in random_hv.get(b, []) if h is not None]
                if sampler == "random" or len(hv) < 2 or len(ref_hv) < 2:
                    continue
                if len(set(hv) | set(ref_hv)) == 1:
                    p = 1.0  # all equal (e.g. nothing beyond the default): no evidence
                else:
                    p = float(mannwhitneyu(hv, ref_hv, alternative="greater").pvalue)
                out["mann_whitney"].setdefault(kind, {}).setdefault(sampler, {})[b] = p
    out["best"] = best_setting(all_rows, default_row)
    return out


def best_setting(rows: list[dict[str, Any]], default: dict[str, Any] | None
                 ) -> dict[str, Any] | None:
    """The feasible setting with the largest hypervolume contribution beyond the default
    (the area of the box between the default and it: it must dominate the default); if
    none dominates, the one with the largest summed improvement. With per-seed paired
    differences to the default (replicate r against replicate r)."""
    if default is None:
        return None
    d = default["values"]
    seen, candidates = set(), []
    for row in rows:
        key = setting_key(row["params"])
        if not row["feasible"] or key in seen or key == setting_key(default["params"]):
            continue
        seen.add(key)
        da, dd = row["values"][0] - d[0], row["values"][1] - d[1]
        dominates = da >= 0 and dd >= 0 and (da > 0 or dd > 0)
        candidates.append((dominates, da * dd if dominates else da + dd, row))
    if not candidates:
        return None
    dominates, score, row = max(candidates, key=lambda c: (c[0], c[1]))
    diffs = {}
    for name, values in row["per_seed"].items():
        base = default["per_seed"].get(name)
        if base is None:
            continue
        paired = [b - a for a, b in zip(base, values, strict=True)]
        m, se = mean_se(paired)
        diffs[name] = {"best": mean_se(values), "default": mean_se(base),
                       "paired_difference": (m, se), "per_seed_difference": paired}
    return {"row": row, "dominates_default": dominates,
            "hypervolume_contribution" if dominates else "summed_improvement": score,
            "same_setting_in": sorted({r["study"] for r in rows
                                       if setting_key(r["params"]) == setting_key(
                                           row["params"])}),
            "metrics": diffs}


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def table(summary: dict[str, Any], samplers: list[str], seeds: list[int],
          budgets: list[int]) -> str:
    """The markdown table: per sampler, hypervolume at each budget (mean ± sd over the
    search seeds, n), Mann-Whitney p against random, and dominating settings per seed."""
    head = ("| sampler | " + " | ".join(f"HV@{b} vs default" for b in budgets) + " | "
            + " | ".join(f"HV@{b} vs (0,0)" for b in budgets) + " | "
            + " | ".join(f"p@{b} vs random (default ref; (0,0) ref)" for b in budgets)
            + " | settings dominating the default, per seed |")
    lines = [head, "|---|" + "---|" * (3 * len(budgets) + 1)]
    mw = summary["mann_whitney"]
    for sampler in samplers:
        cells = []
        for kind in ("hv_vs_default", "hv_vs_zero"):
            for b in budgets:
                h = summary["hv"][kind][sampler][b]
                cells.append("not run" if not h["n"] else
                             f"{_fmt(h['mean'])} ± {_fmt(h['sd'])} (n={h['n']})")
        for b in budgets:
            if sampler == "random":
                cells.append("–")
                continue
            p1 = mw.get("hv_vs_default", {}).get(sampler, {}).get(b)
            p0 = mw.get("hv_vs_zero", {}).get(sampler, {}).get(b)
            mark = lambda p: "–" if p is None else (f"**{p:.3f}**" if p < ALPHA  # noqa: E731
                                                    else f"{p:.3f}")
            cells.append(f"{mark(p1)}; {mark(p0)}")
        dom = [str(len(summary["studies"][f"{sampler}-seed{s}"]["dominating"]))
               for s in seeds]
        lines.append(f"| {sampler} | " + " | ".join(cells) + f" | {', '.join(dom)} |")
    return "\n".join(lines)


def best_report(summary: dict[str, Any]) -> str:
    """The best setting against the default, and the interaction factor's row."""
    best, default = summary.get("best"), summary.get("default")
    if default is None:
        return "no default trial stored"
    if best is None:
        return "no feasible setting besides the default"
    row = best["row"]
    how = ("dominates the default; hypervolume contribution "
           + _fmt(best["hypervolume_contribution"]) if best["dominates_default"] else
           "no setting dominates the default; largest summed improvement")
    lines = [f"best setting: {row['study']} trial {row['number']} ({how}), "
             f"found in {', '.join(best['same_setting_in'])}",
             "params: " + json.dumps(row["params"]),
             "as sweep flags: " + " ".join(f"--set {k}={v}" for k, v in
                                          sweep_flags(row["params"]).items()),
             "",
             "| metric | default (mean ± SE) | best (mean ± SE) | best − default, paired "
             "(mean ± SE) | per-seed differences |",
             "|---|---|---|---|---|"]
    for name, m in best["metrics"].items():
        lines.append(f"| {name} | {_fmt(m['default'][0])} ± {_fmt(m['default'][1])} | "
                     f"{_fmt(m['best'][0])} ± {_fmt(m['best'][1])} | "
                     f"{m['paired_difference'][0]:+.4f} ± {_fmt(m['paired_difference'][1])} "
                     f"| {', '.join(f'{x:+.4f}' for x in m['per_seed_difference'])} |")
    return "\n".join(lines)


def sweep_flags(params: dict[str, Any]) -> dict[str, str]:
    """A setting as ``stagetune sweep --set NAME=VALUE`` values (registry names)."""
    out = {}
    for k, v in params.items():
        out[k] = ("on" if v else "off") if isinstance(v, bool) else (
            f"{v:.4g}" if isinstance(v, float) else str(v))
    return out


# -- the scaling check ---------------------------------------------------------------------


def scaling_check(replicates: int, previous: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Train ``SCALING_SETTINGS`` at ``SIZES`` and at ``LARGE`` with seeds
    ``0..replicates-1`` and compare their order on both objectives (Spearman's rho).

    A problem whose sizes, settings and replicates are those of ``previous`` (the last
    check's JSON) is not trained again: its results are reused (``reused`` says which).
    """
    from scipy.stats import spearmanr

    from search.space import build_space

    out: dict[str, Any] = {"settings": list(SCALING_SETTINGS), "replicates": replicates,
                           "sizes": {"small": SIZES, "large": LARGE}, "results": {},
                           "reused": []}
    for label, sizes in (("small", SIZES), ("large", LARGE)):
        if (previous and previous.get("settings") == list(SCALING_SETTINGS)
                and previous.get("replicates") == replicates
                and previous.get("sizes", {}).get(label) == json.loads(json.dumps(sizes))
                and label in previous.get("results", {})):
            out["results"][label] = previous["results"][label]
            out.setdefault("cost", {})[label] = previous.get("cost", {}).get(label)
            out["reused"].append(label)
            print(f"scaling check, {label}: the previous check's results (same sizes)")
            continue
        t0, c0 = time.time(), time.process_time()
        trainer = ReplicateTrainer(sizes, replicates)
        base = build_space(sizes["epochs"], ranges=list(RANGES)).baseline()
        settings = [{**base, **over} for over in SCALING_SETTINGS.values()]
        outcomes = trainer.train(settings)
        res = {}
        for name, outcome in zip(SCALING_SETTINGS, outcomes, strict=True):
            res[name] = {"error": outcome.error, "feasible": outcome.feasible,
                         "per_seed": outcome.per_seed,
                         **{m: mean_se(v) for m, v in outcome.per_seed.items()}}
        out["results"][label] = res
        out.setdefault("cost", {})[label] = {"wall_s": time.time() - t0,
                                             "cpu_s": time.process_time() - c0}
        print(f"scaling check, {label} ({sizes['epochs']} epochs, {sizes['max_samples']} "
              f"sources, lr {sizes['lr']}): {time.time() - t0:.0f} s", flush=True)
    out["spearman"] = {}
    for m in OBJECTIVES:
        small = [out["results"]["small"][s][m][0] for s in SCALING_SETTINGS]
        large = [out["results"]["large"][s][m][0] for s in SCALING_SETTINGS]
        rho = spearmanr(small, large).statistic
        out["spearman"][m] = {"rho": float(rho), "small_order": _order(small),
                              "large_order": _order(large)}
    return out


def _order(values: list[float]) -> list[str]:
    names = list(SCALING_SETTINGS)
    return [names[i] for i in np.argsort(-np.asarray(values), kind="stable")]


def scaling_table(check: dict[str, Any]) -> str:
    interaction = "s"
    cols = [*OBJECTIVES, f"factor_{interaction}_from_zay", f"factor_{interaction}_from_zx"]
    lines = ["| setting | " + " | ".join(f"{c} small" for c in cols) + " | "
             + " | ".join(f"{c} large" for c in cols) + " |",
             "|---|" + "---|" * (2 * len(cols))]
    for s in check["settings"]:
        cells = []
        for label in ("small", "large"):
            r = check["results"][label][s]
            cells += [f"{_fmt(r[c][0], 3)} ± {_fmt(r[c][1], 3)}" if c in r else "–"
                      for c in cols]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    for m, sp in check["spearman"].items():
        lines.append(f"\n{m}: Spearman rho {sp['rho']:.2f}; small order "
                     f"{' > '.join(sp['small_order'])}; large order "
                     f"{' > '.join(sp['large_order'])}")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="16,32,64")
    p.add_argument("--seeds", default=",".join(map(str, range(10))))
    p.add_argument("--samplers", default="tpe,gp,nsga2,random")
    p.add_argument("--population", type=int, default=1,
                   help="trials each study asks per round (all studies' trials of a round "
                        "train together); 1 tells every trial before the next is asked")
    p.add_argument("--replicates", type=int, default=2,
                   help="model seeds 0..R-1 per setting; objectives are their means")
    p.add_argument("--epochs", type=int, default=SIZES["epochs"],
                   help="epoch budget of every trial (the method's default is 60)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no round after this many minutes (rerun to continue)")
    p.add_argument("--storage", default=None,
                   help="study database (default: benchmarks/out/"
                        "search_quality_replicates[_eN].db)")
    p.add_argument("--out", default=None, help="summary JSON (default: beside the database)")
    p.add_argument("--summary-only", action="store_true", help="report what is stored")
    p.add_argument("--scaling-check", action="store_true",
                   help="compare the order of a few settings at these sizes and larger ones")
    p.add_argument("--lr", type=float, default=SIZES["lr"],
                   help="learning rate of every trial (the method's default is 1e-3)")
    p.add_argument("--max-samples", type=int, default=SIZES["max_samples"],
                   help="source digits (all: 1,797)")
    p.add_argument("--device", default="cpu",
                   help="where the populations train (cuda: a GPU, whose random streams "
                        "differ from the CPU's: another draw of the same experiment)")
    args = p.parse_args()
    SIZES["device"] = args.device
    changed = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                 ("max_samples", args.max_samples)) if SIZES[k] != v}
    SIZES.update(changed)  # LARGE was made from the defaults: the scaling check's target
    tags = {"epochs": "e", "lr": "lr", "max_samples": "n"}
    stem = "search_quality_replicates" + "".join(f"_{tags[k]}{v:g}" for k, v in changed.items())
    args.storage = args.storage or f"sqlite:///{ROOT / 'benchmarks/out' / (stem + '.db')}"
    args.out = args.out or str(ROOT / "benchmarks/out" / (stem + ".json"))
    import torch

    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = args.samplers.split(",")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.scaling_check:
        path = Path(args.out).with_name(stem + "_scaling.json")
        previous = json.loads(path.read_text()) if path.exists() else None
        check = scaling_check(max(args.replicates, 3), previous)
        path.write_text(json.dumps(check, indent=1, default=str))
        print(scaling_table(check))
        return
    cost = None
    if not args.summary_only:
        deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        cost = run(args.storage, samplers, seeds, budgets, args.population,
                   args.replicates, deadline)
        cost["started"] = started
        cost["ended"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    summary = summarise(args.storage, samplers, seeds, budgets)
    summary["replicates"] = args.replicates
    summary["cost"] = cost
    if cost is None and Path(args.out).exists():  # keep the run's cost on a re-summary
        summary["cost"] = json.loads(Path(args.out).read_text()).get("cost")
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    d = summary["default"]
    print(f"sizes: {SIZES}; searched levers {RANGES}; {args.replicates} replicates; "
          f"objectives {OBJECTIVES}; default point "
          f"{[round(v, 4) for v in d['values']] if d else None}")
    if summary["cost"]:
        print(f"cost: {summary['cost']}")
    print(table(summary, samplers, seeds, budgets))
    print()
    print(best_report(summary))


if __name__ == "__main__":
    main()

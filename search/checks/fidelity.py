"""Does a cheap budget rank settings like the budget the user trains at?

A sweep at a reduced budget, and a scheduler that stops trials at a rung, both assume that
a cheap measurement ranks settings as the full one would. In staged training that is
weaker than usual: the budget changes the schedule (a 6-epoch run has a 2-epoch stage 1;
the first 6 epochs of a 60-epoch run are all stage 1, with zay gated out). A fidelity
check measures it: N settings (the method's default among them) x R paired seeds, trained
at the target budget and at each cheap budget, then for every cheap budget and objective

- Spearman's rho and Kendall's tau of the settings' mean values against the target's,
  each with a bootstrap interval over settings (settings resampled, and each chosen
  setting's seeds resampled within it, paired across budgets: seed s of a setting is one
  draw at every budget);
- the overlap of the top k (k = N // 4, at least 1);
- the regret: the target value lost by taking the cheap budget's best setting instead of
  the target's best.

Two kinds of cheap budget:

- a **schedule**: the whole run shortened (fewer epochs, every stage length scaled by the
  same factor, as the default's thirds scale) or made smaller (fewer sources, another
  size); its final metrics are compared with the target's;
- a **rung**: the target run read at an earlier epoch, by the per-epoch proxy of each
  objective (``search.objective.EPOCH_PROXIES``), what a scheduler's rung compares.

This module plans and scores (plain Python and numpy); ``search.checks.fidelity_run`` trains and
stores a check, and ``benchmarks/fidelity.py`` measures one on ``digits``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from search.objective import COLLAPSED_PROXY, proxy_of
from trainer.objectives import COLLAPSE_FLAG, direction

#: bootstrap replicates of the rank statistics' intervals
BOOTSTRAP = 2000
#: the bar a cheap budget must clear to be called faithful: the lower end of the 95%
#: bootstrap interval of Spearman's rho at or above this
RHO_BAR = 0.7
TARGET = "target"


class FidelityError(ValueError):
    """A fidelity check that cannot run or be scored as asked; the message says why."""


@dataclass(frozen=True)
class Budget:
    """One way of measuring a setting.

    Attributes:
        name: how tables and the database name it (``target``, ``e6``, ``rung20``...).
        epochs: a schedule's epoch budget (its stages scaled from the target's); for a
            rung, the target's.
        rung: a rung's epoch (1-based: the row of epoch ``rung - 1`` is read), else None.
        overrides: trainer fields a schedule changes beside the epochs (``max_samples``,
            sizes, learning rate).
    """

    name: str
    epochs: int
    rung: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def is_rung(self) -> bool:
        return self.rung is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Budget:
        return cls(name=raw["name"], epochs=int(raw["epochs"]), rung=raw.get("rung"),
                   overrides=dict(raw.get("overrides") or {}))

    def describe(self) -> str:
        if self.is_rung:
            return f"epoch {self.rung} of the target run"
        extra = ", ".join(f"{k} {v}" for k, v in self.overrides.items())
        return f"{self.epochs} epochs" + (f", {extra}" if extra else "")


def scale_stages(params: Mapping[str, Any], from_epochs: int, to_epochs: int
                 ) -> dict[str, Any]:
    """A setting's parameters at another epoch budget: every stage length scaled by
    ``to_epochs / from_epochs`` and rounded half up, stage 2 trimmed so that the stages
    fit the budget. A length equal to the method's (a third of ``from_epochs``) becomes
    the method's at ``to_epochs``, so the default stays the default a sweep at that
    budget trains (20 + 20 of 60 are 2 + 2 of 6 and 6 + 6 of 20, as
    ``trainer.params.baseline`` has them). A stage shorter than half an epoch after
    scaling is gone (4 of 60 epochs at 6)."""
    out = dict(params)
    ratio = to_epochs / from_epochs
    taken = 0
    for name in ("stage1_epochs", "stage2_epochs"):
        if out.get(name) is None:
            continue
        if out[name] == from_epochs // 3:
            scaled = to_epochs // 3
        else:
            scaled = math.floor(out[name] * ratio + 0.5)
        out[name] = min(scaled, to_epochs - taken)
        taken += out[name]
    return out


def default_rungs(target_epochs: int) -> list[int]:
    """The rungs a check reads by default, as epochs of the method's default schedule at
    the target budget (thirds): the end of stage 1, the end of stage 2 and midway
    through stage 3 (20, 40 and 50 of 60)."""
    third = target_epochs // 3
    stage3 = target_epochs - 2 * third
    rungs = [third, 2 * third, 2 * third + stage3 // 2]
    return sorted({r for r in rungs if 0 < r < target_epochs})


def plan_budgets(target_epochs: int, *, epochs: Sequence[int] = (), rungs: Sequence[int] = (),
                 schedules: Mapping[str, dict[str, Any]] | None = None) -> list[Budget]:
    """The target and its cheap budgets: shortened schedules (``epochs``), named schedules
    (``schedules``: name -> trainer overrides, ``epochs`` among them) and prefix rungs."""
    budgets = [Budget(TARGET, target_epochs)]
    for e in epochs:
        if not 0 < e < target_epochs:
            raise FidelityError(f"a cheaper schedule needs 1 to {target_epochs - 1} epochs "
                                f"(got {e})")
        budgets.append(Budget(f"e{e}", int(e)))
    for name, overrides in (schedules or {}).items():
        over = dict(overrides)
        budgets.append(Budget(name, int(over.pop("epochs", target_epochs)), overrides=over))
    for r in rungs:
        if not 0 < r < target_epochs:
            raise FidelityError(f"a rung must lie inside the target's {target_epochs} epochs "
                                f"(got {r})")
        budgets.append(Budget(f"rung{r}", target_epochs, rung=int(r)))
    names = [b.name for b in budgets]
    if len(set(names)) != len(names):
        raise FidelityError(f"budgets named twice: {', '.join(names)}")
    return budgets


def budget_params(params: Mapping[str, Any], budget: Budget, target_epochs: int
                  ) -> dict[str, Any]:
    """A setting's flat trainer fields at a schedule budget."""
    out = scale_stages(params, target_epochs, budget.epochs)
    return {**out, **budget.overrides, "epochs": budget.epochs}


# -- reading the runs -----------------------------------------------------------------------


def rung_value(history: Sequence[Mapping[str, float]], rung: int, proxy: str) -> float:
    """The proxy at the end of epoch ``rung`` (1-based); a run that stopped before it
    (stage-3 patience) keeps its last row, as a scheduler would read it. NaN for a run
    still in stage 1 there: zay is gated out, and MO-ASHA does not compare it."""
    rows = [r for r in history if int(r["epoch"]) < rung]
    if not rows or int(rows[-1].get("stage", 3)) <= 1:
        return float("nan")
    return float(rows[-1].get(proxy, float("nan")))


def run_value(run: Mapping[str, Any], budget: Budget, objective: str) -> float:
    """What ``budget`` measures of ``objective`` on a run: a schedule's final metric, or a
    rung's per-epoch proxy (``run["history"]`` of the target run)."""
    if budget.is_rung:
        proxy = proxy_of(objective)
        if proxy is None:
            return float("nan")
        return rung_value(run.get("history") or [], budget.rung, proxy)
    value = (run.get("final") or {}).get(objective)
    return float("nan") if value is None else float(value)


def value_table(runs: Mapping[tuple[str, int, str], Mapping[str, Any]], settings: Sequence[str],
                seeds: Sequence[int], budget: Budget, objective: str) -> np.ndarray:
    """``(settings, seeds)`` values of one budget (NaN where a run is missing or failed).

    ``runs`` maps (setting, seed, schedule name) to a run; rungs read the target's runs.
    """
    source = TARGET if budget.is_rung else budget.name
    table = np.full((len(settings), len(seeds)), np.nan)
    for i, s in enumerate(settings):
        for j, seed in enumerate(seeds):
            run = runs.get((s, seed, source))
            if run is not None and run.get("state", "complete") == "complete":
                table[i, j] = run_value(run, budget, objective)
    return table


def collapsed_table(runs: Mapping[tuple[str, int, str], Mapping[str, Any]],
                    settings: Sequence[str], seeds: Sequence[int], budget: Budget
                    ) -> np.ndarray:
    """``(settings, seeds)``: True where a run's zay collapsed (a schedule's final
    ``zay_collapsed``; a rung's ``val_zay_collapsed`` at its row, False where the row
    lacks it)."""
    source = TARGET if budget.is_rung else budget.name
    table = np.zeros((len(settings), len(seeds)), dtype=bool)
    for i, s in enumerate(settings):
        for j, seed in enumerate(seeds):
            run = runs.get((s, seed, source))
            if run is None or run.get("state", "complete") != "complete":
                continue
            if budget.is_rung:
                value = rung_value(run.get("history") or [], budget.rung, COLLAPSED_PROXY)
                table[i, j] = math.isfinite(value) and value > 0
            else:
                table[i, j] = float((run.get("final") or {}).get(COLLAPSE_FLAG, 0.0)) >= 1.0
    return table


# -- the statistics ---------------------------------------------------------------------------


def setting_means(values: np.ndarray, collapsed: np.ndarray, sign: float) -> np.ndarray:
    """Each setting's mean over its seeds, a setting whose zay collapsed on any seed
    placed below every other (as a sweep at that budget would never select it: the
    sweep's rule, collapse in any replicate is collapse)."""
    with warnings.catch_warnings():  # a row whose draws are all NaN: its mean is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values, 1)
    bad = collapsed.any(1)
    good = ~bad & np.isfinite(means)
    if bad.any() and good.any():
        means = means.copy()
        means[bad] = sign * (np.min(sign * means[good]) - 1.0)
    return means


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (ties at their average rank); NaN when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b; NaN when either side is constant."""
    from scipy.stats import kendalltau

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(kendalltau(x, y).statistic)


def top_k_overlap(cheap: np.ndarray, target: np.ndarray, k: int, sign: float) -> float:
    """Share of the target's k best settings that are among the cheap budget's k best."""
    best_cheap = set(np.argsort(-sign * cheap, kind="stable")[:k])
    best_target = set(np.argsort(-sign * target, kind="stable")[:k])
    return len(best_cheap & best_target) / k


def regret(cheap: np.ndarray, target: np.ndarray, sign: float) -> float:
    """Target value lost by taking the cheap budget's best: best target value minus the
    target value of the cheap budget's pick, in the objective's better direction (>= 0);
    settings tied for the cheap budget's best are each picked with equal chance."""
    picks = np.flatnonzero(sign * cheap == np.max(sign * cheap))
    return float(np.max(sign * target) - np.mean(sign * target[picks]))


def _statistics(cheap: np.ndarray, target: np.ndarray, sign: float, k: int) -> dict[str, float]:
    return {"spearman": spearman(cheap, target), "kendall": kendall(cheap, target),
            "top_k_overlap": top_k_overlap(cheap, target, k, sign),
            "regret": regret(cheap, target, sign)}


def compare(cheap: np.ndarray, target: np.ndarray, objective: str, *,
            cheap_collapsed: np.ndarray | None = None,
            target_collapsed: np.ndarray | None = None, k: int | None = None,
            bootstrap: int = BOOTSTRAP, seed: int = 0, level: float = 0.95
            ) -> dict[str, Any]:
    """How a cheap budget's ``(settings, seeds)`` table ranks like the target's.

    The point estimates use each setting's mean over its seeds (settings with no finite
    value at either budget are left out). Feasibility is the sweep's: a setting whose
    zay collapsed at the target on any seed is left out (a sweep never selects it;
    ``infeasible_at_target`` counts them), and one that collapsed at the cheap budget
    ranks below every other there (``setting_means``). The intervals are percentile
    bootstraps: each replicate draws the settings with replacement and, within each
    drawn setting, its seeds with replacement, the same seed indices at both budgets (the
    seeds are paired: seed s of a setting is one training run read two ways, or two runs
    on one split and initial draw). The two levels count seed noise twice (each
    setting's mean already carries it), so the intervals are conservative: wider than
    ``level``. A budget at which every setting gives the same value (a proxy that is
    constant while zay is gated out, say) ranks nothing: ``constant``, never faithful.
    """
    sign = 1.0 if direction(objective) == "maximize" else -1.0
    cheap_collapsed = (np.zeros(cheap.shape, bool) if cheap_collapsed is None
                       else cheap_collapsed)
    target_collapsed = (np.zeros(target.shape, bool) if target_collapsed is None
                        else target_collapsed)
    # paired: a seed counts only where both budgets have its run
    both = np.isfinite(cheap) & np.isfinite(target)
    cheap, target = np.where(both, cheap, np.nan), np.where(both, target, np.nan)
    present = both.any(1)
    ok = present & ~target_collapsed.any(1)
    cheap, target, cheap_collapsed = cheap[ok], target[ok], cheap_collapsed[ok]
    n = len(cheap)
    if n < 3:
        raise FidelityError(f"{objective}: {n} feasible settings have values at both "
                            "budgets; a rank correlation needs at least 3")
    k = k or max(1, n // 4)
    none = np.zeros(target.shape, bool)
    point = _statistics(setting_means(cheap, cheap_collapsed, sign),
                        setting_means(target, none, sign), sign, k)
    rng = np.random.default_rng(seed)
    seeds = cheap.shape[1]
    draws: dict[str, list[float]] = {key: [] for key in point}
    for _ in range(bootstrap):
        rows = rng.integers(0, n, n)
        cols = rng.integers(0, seeds, (n, seeds))
        cm = setting_means(np.take_along_axis(cheap[rows], cols, 1),
                           np.take_along_axis(cheap_collapsed[rows], cols, 1), sign)
        tm = setting_means(np.take_along_axis(target[rows], cols, 1), none, sign)
        keep = np.isfinite(cm) & np.isfinite(tm)
        if keep.sum() < 3:  # missing runs left too few settings in this resample
            continue
        for key, value in _statistics(cm[keep], tm[keep], sign, min(k, int(keep.sum()))
                                      ).items():
            draws[key].append(value)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out: dict[str, Any] = {"objective": objective, "settings": int(n), "seeds": int(seeds),
                           "k": int(k), "infeasible_at_target": int((present & ~ok).sum()),
                           "infeasible_at_cheap": int(cheap_collapsed.any(1).sum())}
    for key, value in point.items():
        # a resample in which one side has no spread ranks nothing: its correlation is 0
        # (leaving it out would let the resamples that happen to vary decide alone)
        drawn = np.nan_to_num(np.asarray(draws[key], dtype=float), nan=0.0)
        out[key] = value
        out[f"{key}_lo"] = float(np.quantile(drawn, lo_q)) if len(drawn) else math.nan
        out[f"{key}_hi"] = float(np.quantile(drawn, hi_q)) if len(drawn) else math.nan
    # no spread at the cheap budget (or the target): it cannot rank the settings at all
    out["constant"] = not math.isfinite(out["spearman"])
    out["faithful"] = bool(not out["constant"] and out["spearman_lo"] >= RHO_BAR)
    return out


def score_check(runs: Mapping[tuple[str, int, str], Mapping[str, Any]], settings: Sequence[str],
                seeds: Sequence[int], budgets: Sequence[Budget], objectives: Sequence[str], *,
                bootstrap: int = BOOTSTRAP, seed: int = 0) -> list[dict[str, Any]]:
    """Every cheap budget against the target, per objective: ``compare``'s records plus
    each setting's mean and standard error at that budget and at the target (what the
    report draws)."""
    target_budget = next(b for b in budgets if b.name == TARGET)
    records = []
    for objective in objectives:
        target = value_table(runs, settings, seeds, target_budget, objective)
        target_collapsed = collapsed_table(runs, settings, seeds, target_budget)
        for budget in budgets:
            if budget.name == TARGET:
                continue
            cheap = value_table(runs, settings, seeds, budget, objective)
            try:
                record = compare(cheap, target, objective, bootstrap=bootstrap, seed=seed,
                                 cheap_collapsed=collapsed_table(runs, settings, seeds,
                                                                 budget),
                                 target_collapsed=target_collapsed)
            except FidelityError as exc:
                record = {"objective": objective, "error": str(exc)}
            record |= {"budget": budget.name, "describe": budget.describe(),
                       "points": _points(settings, cheap, target)}
            records.append(record)
    return records


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    se = float(finite.std(ddof=1) / math.sqrt(len(finite))) if len(finite) > 1 else float("nan")
    return float(finite.mean()), se


def _points(settings: Sequence[str], cheap: np.ndarray, target: np.ndarray
            ) -> list[dict[str, Any]]:
    out = []
    for i, s in enumerate(settings):
        cm, cse = _mean_se(cheap[i])
        tm, tse = _mean_se(target[i])
        out.append({"setting": s, "cheap": cm, "cheap_se": cse, "target": tm,
                    "target_se": tse})
    return out


def interval_text(record: Mapping[str, Any], key: str) -> str:
    """``+0.62 [+0.31, +0.84]``: a statistic with its bootstrap interval."""
    return f"{record[key]:+.2f} [{record[f'{key}_lo']:+.2f}, {record[f'{key}_hi']:+.2f}]"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """A scored check as ``status`` prints it: its size, then per objective each cheap
    budget's rho with its interval, and which budgets clear the bar."""
    runs = summary["runs"]
    state = "complete" if summary["complete"] else "incomplete"
    failed = f", {runs['failed']} failed" if runs["failed"] else ""
    lines = [f"fidelity check {summary['id']} ({state}: {runs['complete']} of "
             f"{runs['total']} runs{failed}): "
             f"{summary['settings']} settings x {len(summary['seeds'])} seeds against "
             f"{summary['target_epochs']} epochs; Spearman rho [95% CI] of each cheaper "
             f"budget (faithful: lower bound >= {RHO_BAR})"]
    by_objective: dict[str, list[Mapping[str, Any]]] = {}
    for record in summary["records"]:
        by_objective.setdefault(record["objective"], []).append(record)
    for objective, records in by_objective.items():
        parts = []
        for r in records:
            if "error" in r:
                parts.append(f"{r['budget']} n/a")
                continue
            if r.get("constant"):
                parts.append(f"{r['budget']} no spread (ranks nothing)")
                continue
            mark = " faithful" if r["faithful"] else ""
            parts.append(f"{r['budget']} {interval_text(r, 'spearman')}{mark}")
        lines.append(f"  {objective}: " + "; ".join(parts))
    faithful = sorted({r["budget"] for r in summary["records"] if r.get("faithful")})
    lines.append("  faithful for every objective: " + (", ".join(
        b for b in faithful if all(r.get("faithful") for r in summary["records"]
                                   if r["budget"] == b)) or "none"))
    return lines

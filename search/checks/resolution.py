"""Does an objective separate a study's trials, or only their seeds?

With replicates every trial's objective is a mean over its seeds with a standard error.
Were every trial the same setting, the spread of those means between trials would be
about the median standard error within a trial (ratio about 1); an objective ranks
settings only where the spread between trials stands clearly above it. The ratio here is

    sd over trials of the trial means / median over trials of the standard error,

and an objective *resolves* the study when it is at least ``RESOLVES`` (2: a spread
between settings of about sqrt(2^2 - 1) = 1.7 standard errors beside the seed noise).
Below it, ranking the trials by that objective mostly ranks their seeds; the warning
names the alternatives that do resolve (measured on the same trials, since a replicated
sweep stores the spread of every selectable metric). Without replicates there is no
within-trial spread, and the resolution is unknown. Plain Python: ``status`` (search)
and the report (analysis) both read it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trainer.objectives import DISENTANGLEMENT_OBJECTIVES, TASK_OBJECTIVE

RESOLVES = 2.0
#: trials an estimate of the spread between trials needs
MIN_TRIALS = 3


def metric_resolution(values: Sequence[float], errors: Sequence[float]) -> dict[str, Any]:
    """The spread between trials of one metric against the median standard error within
    one (``errors``: one standard error per trial; NaN where a trial has none)."""
    pairs = [(v, e) for v, e in zip(values, errors, strict=True)
             if math.isfinite(v) and math.isfinite(e)]
    out: dict[str, Any] = {"trials": len(pairs)}
    if len(pairs) < MIN_TRIALS:
        out["state"] = "too few trials"
        return out
    between = statistics.stdev(v for v, _ in pairs)
    within = statistics.median(e for _, e in pairs)
    out |= {"between_sd": between, "median_se": within}
    if within <= 0:
        out["state"] = "no spread within trials" if between == 0 else "resolves"
        out["ratio"] = math.inf if between > 0 else math.nan
        return out
    out["ratio"] = between / within
    out["state"] = "resolves" if out["ratio"] >= RESOLVES else "does not resolve"
    return out


def study_resolution(rows: Iterable[Mapping[str, Any]], objectives: Sequence[str], *,
                     replicated: bool) -> dict[str, Any]:
    """Each objective's resolution over a study's complete trials (``rows``: each trial's
    metrics, their ``<name>_se`` and ``feasible``, e.g. Optuna's user attributes or the
    report's trial table), and the alternatives' (the other task and disentanglement
    metrics). Infeasible trials (zay collapsed) are left out."""
    rows = [r for r in rows if _truthy(r.get("feasible", True))
            and _finite(r.get(objectives[0]))]
    if not replicated:
        return {"replicated": False, "objectives": {}, "alternatives": {}}

    def of(name: str) -> dict[str, Any]:
        values = [_number(r.get(name)) for r in rows]
        errors = [_number(r.get(f"{name}_se")) for r in rows]
        return metric_resolution(values, errors)

    others = [n for n in (TASK_OBJECTIVE, *DISENTANGLEMENT_OBJECTIVES) if n not in objectives]
    return {"replicated": True, "objectives": {n: of(n) for n in objectives},
            "alternatives": {n: of(n) for n in others}}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(value: Any) -> bool:
    return math.isfinite(_number(value))


def _truthy(value: Any) -> bool:
    """``feasible`` as stored (a bool, or NaN in a table where a trial lacks it)."""
    return True if value is None or (isinstance(value, float) and math.isnan(value)) \
        else bool(value)


def resolution_warnings(resolution: dict[str, Any]) -> list[str]:
    """One line per objective that does not separate the trials, naming the alternatives
    that do; one line saying that resolution is unknown without replicates."""
    if not resolution["replicated"]:
        return ["objective resolution unknown: without replicates no trial has a standard "
                "error to compare the spread between trials with (sweep with --replicates 2 "
                "or more)"]
    lines = []
    better = [n for n, r in resolution["alternatives"].items() if r.get("state") == "resolves"]
    for name, r in resolution["objectives"].items():
        if r.get("state") != "does not resolve":
            continue
        hint = (f"; these do: {', '.join(better)}" if better else
                "; no other selectable metric does either")
        lines.append(f"warning: {name} does not separate the trials: its spread between "
                     f"trials (sd {r['between_sd']:.4f}) is {r['ratio']:.1f}x the median "
                     f"standard error within a trial ({r['median_se']:.4f}; about 1 if every "
                     f"trial were the same setting, {RESOLVES:g} or more to rank them){hint}")
    return lines

"""Ranking trials: Pareto rank, then crowding distance; or the scalar score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis._load import SEARCHED_PARAMS, StudyData
from search.pareto import crowding_distance, hypervolume_history, pareto_ranks


def rank_trials(data: StudyData, *, include_pruned: bool = False,
                include_infeasible: bool = False) -> pd.DataFrame:
    """Trials ordered best first, with ``pareto_rank`` and ``crowding`` columns.

    Multi-objective studies: non-dominated sorting over the objectives, then crowding
    distance (larger first) within a front. Scalar studies: by the score. Trials without
    values (pruned) sort last. Trials that train alike (the ``setting`` column) are one
    setting, ranked once: the row of the one that stands for them, with the others'
    numbers in ``same_as``.
    """
    df = one_row_per_setting(data.complete(include_pruned=include_pruned,
                                           include_infeasible=include_infeasible))
    has_values = df[data.objectives].notna().all(axis=1)
    scored, unscored = df[has_values].copy(), df[~has_values].copy()
    if len(scored):
        values = scored[data.objectives].to_numpy(dtype=np.float64)
        ranks = pareto_ranks(values, data.directions)
        scored["pareto_rank"] = ranks
        crowd = np.zeros(len(scored))
        for r in np.unique(ranks):
            idx = np.flatnonzero(ranks == r)
            crowd[idx] = crowding_distance(values[idx])
        scored["crowding"] = crowd
        if len(data.objectives) == 1:
            sign = -1.0 if data.directions[0] == "maximize" else 1.0
            scored = scored.assign(_key=sign * scored[data.objectives[0]]).sort_values(
                ["_key", "number"]).drop(columns="_key")
            scored["pareto_rank"] = np.arange(len(scored))
        else:
            scored = scored.assign(_c=-scored["crowding"]).sort_values(
                ["pareto_rank", "_c", "number"]).drop(columns="_c")
    unscored["pareto_rank"] = np.nan
    unscored["crowding"] = np.nan
    ranked = pd.concat([scored, unscored.sort_values("number")], ignore_index=True)
    ranked.insert(0, "position", np.arange(1, len(ranked) + 1))
    return ranked


def one_row_per_setting(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with one row per ``setting``: the trial that stands for it where present,
    else its lowest-numbered; ``same_as`` lists the others (a column only where any
    setting has several trials)."""
    df = df.copy()
    if "setting" not in df or df.empty:
        return df
    setting = df["setting"].fillna(df["number"]).astype(int)
    stands = setting.eq(df["number"].astype(int))
    # the representative first, then by number: the first row of each setting is kept
    order = df.assign(_s=setting, _r=~stands).sort_values(["_s", "_r", "number"])
    keep = ~order["_s"].duplicated()
    twins = order[~keep].groupby("_s")["number"].apply(
        lambda n: ", ".join(str(int(v)) for v in sorted(n)))
    kept = order[keep].drop(columns=["_s", "_r"])
    if len(twins):
        kept["same_as"] = setting[keep[keep].index].map(twins).fillna("")
    return kept.sort_values("number")


def study_notes(data: StudyData, ranked: pd.DataFrame) -> list[str]:
    """What a reader of a ranking must know about what it compares, a line each: which
    trials ran at which budget (a study moved with ``--change-budget``), and that trials
    which trained alike are ranked once."""
    notes = [line for line in (data.budget_line(),) if line]
    if "same_as" in ranked and ranked["same_as"].fillna("").astype(bool).any():
        notes.append("Trials that trained alike (their effective configurations are equal: "
                     "what differs between them cannot act) are ranked once; same_as lists "
                     "the others.")
    return notes


def table_columns(data: StudyData, ranked: pd.DataFrame) -> list[str]:
    """The columns a ranked table shows, in order, where present; each objective of a
    study swept with replicates is followed by its standard error (``<name>_se``)."""
    objectives = [c for o in data.objectives for c in (o, f"{o}_se")]
    cols = ["position", "number", "same_as", "epochs", "pareto_rank", "crowding", *objectives,
            "state",
            *SEARCHED_PARAMS, "zay_active_dims", "disentanglement_score", "zay_label_leakage",
            "acc_y_test", "feasible", "baseline"]
    seen: list[str] = []
    for c in cols:
        if c in ranked.columns and c not in seen:
            seen.append(c)
    return seen


#: what a ranked table's less obvious columns hold (the report's header tooltips)
COLUMN_NOTES = {
    "position": "place in the ranking, 1 = best",
    "number": "the Optuna trial number",
    "same_as": "the trials that trained alike (equal effective configurations), ranked "
               "once as this row",
    "pareto_rank": "0: on the Pareto front; 1: on the front once that one is removed; ...",
    "crowding": "crowding distance within the trial's front (NSGA-II): how far apart its "
                "two neighbours on the front lie, larger ranks first; ∞ (end): one of the "
                "front's two end points, infinite by definition (as is every trial of a "
                "front of one or two)",
    "feasible": "False: zay collapsed (ranked only with --include-infeasible)",
    "baseline": "True: the method's default setting",
}


def hypervolume_over_trials(data: StudyData, reference: list[float] | None = None
                            ) -> pd.DataFrame:
    """Hypervolume of the feasible front after each completed trial (2 objectives)."""
    df = data.complete().sort_values("number")
    df = df[df[data.objectives].notna().all(axis=1)]
    if len(data.objectives) != 2 or df.empty:
        return pd.DataFrame(columns=["number", "hypervolume"])
    ref = reference if reference is not None else default_reference(data)
    hv = hypervolume_history(df[data.objectives].to_numpy(np.float64), data.directions, ref)
    return pd.DataFrame({"number": df["number"].to_numpy(), "hypervolume": hv})


def default_reference(data: StudyData) -> list[float]:
    """Reference point: 0 for maximised scores in [0, 1], 1 for minimised ones."""
    return [0.0 if d == "maximize" else 1.0 for d in data.directions]

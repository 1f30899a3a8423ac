"""Reading a study database: read-only, plain SQL over Optuna's schema and our tables.

Optuna's own storage class may create tables when it opens a database, so analysis
never uses it: it reads the tables directly through a read-only connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from search.db import fixed as fixed_config  # plain Python: no optuna, torch or ray
from search.db.storage import redact  # sqlalchemy only: no torch, no ray
from search.settings import representatives, setting_key
from trainer import params as registry  # plain Python: no torch
from trainer.objectives import COLLAPSE_FLAG

OPTUNA_TABLES = {"studies", "study_directions", "trials", "trial_values", "trial_params",
                 "trial_user_attributes", "study_user_attributes"}
OBJECTIVE_ATTR = "stagetune_objective"
#: the seeds per setting of a study swept with ``--replicates R`` (R > 1), as
#: ``search.db.study`` stores it
REPLICATES_ATTR = "stagetune_replicates"
#: the registry's searched parameters, in its order
SEARCHED_PARAMS = registry.searched_names()


class AnalysisError(RuntimeError):
    """The database or study cannot be analysed; the message says why."""


def open_read_only(url: str) -> sa.Engine:
    """A read-only engine on a reachable study database."""
    from search.db.storage import StorageError, make_engine, ping

    try:
        engine = make_engine(url, read_only=True)
        ping(engine, url)
    except StorageError as exc:
        raise AnalysisError(str(exc)) from None
    try:
        tables = set(sa.inspect(engine).get_table_names())
    except sa.exc.DatabaseError as exc:  # e.g. a text file given as an SQLite database
        cause = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise AnalysisError(f"{redact(url)} is not a study database ({cause}); point "
                            "--storage at the database a sweep wrote") from None
    if not tables >= OPTUNA_TABLES:
        raise AnalysisError(f"{redact(url)} is not a study database (no Optuna tables); "
                            "point --storage at the database a sweep wrote")
    return engine


def study_names(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.text("SELECT study_name FROM studies")))


@dataclass
class StudyData:
    """Everything analysis needs from one study, as a DataFrame of trials."""

    name: str
    study_id: int
    objectives: list[str]
    directions: list[str]
    objective_spec: dict[str, Any]
    trials: pd.DataFrame  # one row per trial: number, state, objectives, params, metrics
    engine: sa.Engine = field(repr=False)
    #: each searched parameter's Optuna distribution (as stored: name and attributes)
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""  # as the user gave it (shown redacted)
    #: seeds per setting (``--replicates``): objectives are means over this many paired
    #: seeds, with ``<name>_se`` columns beside them when it is above 1
    replicates: int = 1
    #: the budgets the study ran at, oldest first (``search.db.fixed``; empty for a study
    #: that never moved to another), with an ``epochs`` column of each trial's then
    budgets: list[dict[str, int]] = field(default_factory=list)

    def budget_line(self) -> str | None:
        """Which trials ran at which budget, in a line (``None`` for one budget)."""
        if len(self.budgets) < 2:
            return None
        t = self.trials[~self.trials["state"].isin(["WAITING"])]
        ran = {int(n): int(e) for n, e in zip(t["number"], t.get("epochs", []), strict=False)
               if pd.notna(e)}
        return fixed_config.budget_line(
            self.budgets, fixed_config.trial_budgets(self.budgets, t["number"].astype(int), ran))

    @property
    def scalar(self) -> bool:
        return len(self.objectives) == 1

    def complete(self, *, include_pruned: bool = False,
                 include_infeasible: bool = False) -> pd.DataFrame:
        states = ["COMPLETE", "PRUNED"] if include_pruned else ["COMPLETE"]
        df = self.trials[self.trials["state"].isin(states)]
        if not include_infeasible:
            df = df[df["feasible"]]
        return df

    def epochs(self, trial_ids: list[int]) -> dict[int, list[dict[str, float]]]:
        """Per-epoch metrics of the given Optuna trial ids, from our table."""
        if not trial_ids or not _has_table(self.engine, "stagetune_epoch_metrics"):
            return {}
        q = sa.text("SELECT trial_id, epoch, metrics FROM stagetune_epoch_metrics "
                    "WHERE trial_id IN :ids ORDER BY trial_id, epoch"
                    ).bindparams(sa.bindparam("ids", expanding=True))
        out: dict[int, list[dict[str, float]]] = {}
        with self.engine.connect() as conn:
            for tid, _epoch, metrics in conn.execute(q, {"ids": list(trial_ids)}):
                out.setdefault(int(tid), []).append(json.loads(metrics))
        return out

    def configs(self, trial_ids: list[int] | None = None, *,
                containing: str | None = None) -> dict[int, dict[str, Any]]:
        """The trainer configurations (the ``config`` user attribute) of the given Optuna
        trial ids, or of every trial of the study when ``trial_ids`` is None.

        ``containing`` keeps only configurations whose stored JSON text contains it (a
        cheap filter in the database, e.g. ``"diva"``; check the parsed value too).
        """
        if trial_ids is not None and not trial_ids:
            return {}
        sql = ("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'config' "
               "AND trial_id IN ")
        params: dict[str, Any] = {}
        if trial_ids is None:
            sql += "(SELECT trial_id FROM trials WHERE study_id = :s)"
            params["s"] = self.study_id
        else:
            sql += ":ids"
            params["ids"] = [int(t) for t in trial_ids]
        if containing is not None:
            sql += " AND value_json LIKE :like"
            params["like"] = f"%{containing}%"
        query = sa.text(sql)
        if trial_ids is not None:
            query = query.bindparams(sa.bindparam("ids", expanding=True))
        with self.engine.connect() as conn:
            rows = conn.execute(query, params).all()
        out: dict[int, dict[str, Any]] = {}
        for tid, value_json in rows:
            value = json.loads(value_json)
            if isinstance(value, dict):
                out[int(tid)] = value
        return out

    def artifact(self, trial_id: int, name: str) -> Any | None:
        if not _has_table(self.engine, "stagetune_artifacts"):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT content FROM stagetune_artifacts WHERE "
                                       "trial_id = :t AND name = :n"),
                               {"t": trial_id, "n": name}).first()
        return json.loads(row[0]) if row else None


def _has_table(engine: sa.Engine, name: str) -> bool:
    return name in sa.inspect(engine).get_table_names()


def _widen(seen: dict[str, Any] | None, spec: dict[str, Any]) -> dict[str, Any]:
    """One distribution that holds every trial's value of a parameter.

    A define-by-run space gives trials different bounds (stage 2's upper bound is what
    stage 1 leaves of the budget), so the study-wide distribution is the union: the lowest
    low and highest high of numeric ones, every choice of categorical ones.
    """
    if seen is None or seen.get("name") != spec.get("name"):
        return seen or spec
    a, b = seen["attributes"], spec["attributes"]
    if "choices" in a:
        extra = [c for c in b["choices"] if c not in a["choices"]]
        return {**seen, "attributes": {**a, "choices": [*a["choices"], *extra]}}
    return {**seen, "attributes": {**a, "low": min(a["low"], b["low"]),
                                   "high": max(a["high"], b["high"])}}


def _decode_param(value: float, distribution_json: str) -> Any:
    dist = json.loads(distribution_json)
    attrs = dist.get("attributes", {})
    if dist.get("name") == "CategoricalDistribution":
        return attrs["choices"][int(value)]
    if dist.get("name") == "IntDistribution":
        return int(value)
    return float(value)


def load_study(url: str, study: str, *, engine: sa.Engine | None = None) -> StudyData:
    """Load one study's trials; unknown or empty studies raise AnalysisError."""
    engine = engine or open_read_only(url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"),
                           {"n": study}).first()
        if row is None:
            names = study_names(engine)
            raise AnalysisError(f"no study {study!r} in {redact(url)}; studies there: "
                                f"{', '.join(names) or 'none'}")
        sid = int(row[0])
        directions = [d.lower() for (d,) in conn.execute(sa.text(
            "SELECT direction FROM study_directions WHERE study_id = :s ORDER BY objective"),
            {"s": sid})]
        study_attrs = dict(conn.execute(sa.text(
            "SELECT key, value_json FROM study_user_attributes WHERE study_id = :s AND key IN "
            "(:o, :r, :f, :b)"), {"s": sid, "o": OBJECTIVE_ATTR, "r": REPLICATES_ATTR,
                                  "f": fixed_config.FIXED_CONFIG_ATTR,
                                  "b": fixed_config.BUDGETS_ATTR}).all())
        spec = json.loads(study_attrs.get(OBJECTIVE_ATTR, "{}"))
        replicates = int(json.loads(study_attrs.get(REPLICATES_ATTR, "1")))
        study_fixed = json.loads(study_attrs.get(fixed_config.FIXED_CONFIG_ATTR, "{}"))
        budgets = fixed_config.budgets(
            {k: json.loads(v) for k, v in study_attrs.items() if k == fixed_config.BUDGETS_ATTR})
        trials = pd.DataFrame(conn.execute(sa.text(
            "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
            "WHERE study_id = :s ORDER BY number"), {"s": sid}).all(),
            columns=["trial_id", "number", "state", "datetime_start", "datetime_complete"])
        if trials.empty:
            raise AnalysisError(f"study {study!r} has no trials yet; run a sweep first")
        sub = "(SELECT trial_id FROM trials WHERE study_id = :s)"
        values = conn.execute(sa.text(
            f"SELECT trial_id, objective, value FROM trial_values WHERE trial_id IN {sub}"),
            {"s": sid}).all()
        params = conn.execute(sa.text(
            "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
            f"WHERE trial_id IN {sub}"), {"s": sid}).all()
        attrs = conn.execute(sa.text(
            f"SELECT trial_id, key, value_json FROM trial_user_attributes WHERE trial_id IN "
            f"{sub} AND key <> 'config'"), {"s": sid}).all()
        configs = {int(tid): json.loads(value) for tid, value in conn.execute(sa.text(
            f"SELECT trial_id, value_json FROM trial_user_attributes WHERE trial_id IN {sub} "
            "AND key = 'config'"), {"s": sid}).all()}
        fixed = conn.execute(sa.text(
            "SELECT trial_id, value_json FROM trial_system_attributes WHERE key = "
            f"'fixed_params' AND trial_id IN {sub}"), {"s": sid}).all()
    names = spec.get("names") or [f"objective_{i}" for i in range(len(directions))]
    trials = trials.set_index("trial_id", drop=False)
    by_objective: dict[str, dict[int, float]] = {name: {} for name in names}
    for tid, objective, value in values:
        by_objective[names[objective]][tid] = value
    for name in names:
        trials[name] = trials["trial_id"].map(by_objective[name]).astype(np.float64)
    columns: dict[str, dict[int, Any]] = {}
    for tid, fixed_json in fixed:  # an enqueued trial's settings, as it ran them
        for k, v in json.loads(fixed_json).items():
            columns.setdefault(k, {})[tid] = v
    distributions: dict[str, dict[str, Any]] = {}
    for tid, name, value, dist in params:
        columns.setdefault(name, {})[tid] = _decode_param(value, dist)
        distributions[name] = _widen(distributions.get(name), json.loads(dist))
    for tid, key, value_json in attrs:
        columns.setdefault(key, {})[tid] = json.loads(value_json)
    # objective values come from trial_values; same-named user attributes are copies
    extra = pd.DataFrame({k: v for k, v in columns.items() if k not in trials.columns},
                         index=trials.index)
    trials = pd.concat([trials, extra], axis=1)
    collapsed = trials.get(COLLAPSE_FLAG, pd.Series(0.0, index=trials.index)).fillna(0.0)
    trials["feasible"] = trials.get("feasible", pd.Series(True, index=trials.index)
                                    ).fillna(True).astype(bool) & (collapsed < 1.0)
    trials["baseline"] = trials.get("baseline", pd.Series(False, index=trials.index)
                                    ).fillna(False).astype(bool)
    trials = _settings(trials, configs, study_fixed, with_epochs=len(budgets) > 1)
    trials = trials.reset_index(drop=True)
    return StudyData(study, sid, names, directions, spec, trials, engine, distributions, url,
                     replicates, budgets)


def _settings(trials: pd.DataFrame, configs: dict[int, Any], fixed: dict[str, Any], *,
              with_epochs: bool) -> pd.DataFrame:
    """Blank out each trial's parameters that are inert in its run (λ with the penalty
    off, the penalty where it acts in no epoch: ``trainer.params.effective_config``) and
    add ``setting``: the number of the trial that stands for all that train alike
    (``search.settings``; the default where it is one of them). A trial that stored no
    configuration is read as its parameters over the study's fixed fields. With
    ``with_epochs`` (a study moved to another budget) each trial's ``epochs`` too."""
    searched = [p for p in registry.searched() if p.name in trials]
    keys: dict[int, str] = {}
    epochs: dict[int, Any] = {}
    inert: dict[str, list[Any]] = {p.name: [] for p in searched}  # trial ids, by parameter
    columns = ["number", *(p.name for p in searched)]
    for tid, row in zip(trials.index, trials[columns].to_dict("records"), strict=True):
        number = int(row["number"])
        config = configs.get(int(tid))
        given = {p.name: row[p.name] for p in searched
                 if not (isinstance(row[p.name], float) and np.isnan(row[p.name]))}
        run = (registry.flat_config(config) if isinstance(config, dict)
               else {**fixed, **given})
        config = run if isinstance(config, dict) else None  # flattened once
        for p in searched:
            if p.name in given and p.inert(run, (run.get(p.name, given[p.name]),)):
                inert[p.name].append(tid)
        keys[number] = setting_key(number, config, given)
        epochs[number] = run.get(fixed_config.BUDGET_FIELD)
    for name, ids in inert.items():
        if ids:
            trials[name] = trials[name].where(~trials.index.isin(ids), np.nan)
    chosen = representatives(keys, trials.loc[trials["baseline"], "number"].astype(int))
    trials["setting"] = trials["number"].map(chosen).astype("Int64")
    if with_epochs:
        trials["epochs"] = trials["number"].map(epochs)
    return trials

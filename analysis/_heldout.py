"""Which task accuracy a study selected on, and how its settings fare on held-out domains.

A sweep chooses its task objective with ``--task-metric`` (``search.objective.TASK_METRICS``)
and records it in the study's objective (``"task"``); a study without that key predates
the choice and selected on ``task_accuracy``. The test domain is reported, never
selected on.

``held_out_records`` gathers what the held-out-domain figure draws: for a
leave-one-domain-out study (``--lodo``) each shown setting's accuracy on each held-out
training domain (``lodo_acc_domain_<k>``); otherwise, where the study has them, the
in-domain validation accuracy beside the held-out validation domain's
(``acc_y_val_domain``) and the test domain's (``acc_y_test_domain``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis._load import StudyData
from search.objective import TASK_METRICS  # plain Python: no torch, no ray
from trainer.objectives import TASK_OBJECTIVE

LODO_COLUMN = re.compile(r"^lodo_acc_domain_(\d+)$")
VAL_DOMAIN = "acc_y_val_domain"
TEST_DOMAIN = "acc_y_test_domain"
#: data sets whose ``data.domains`` are rotation angles in degrees
ROTATED = ("digits", "mnist", "fashion_mnist", "shapes")
#: the model variant without zay (``trainer`` ``ModelConfig.variant``): DIVA, the baseline
DIVA_VARIANT = "diva"
#: at most this many front (or, in a scalar study, top) settings are drawn
MOST_SETTINGS = 8
NOT_SELECTED = "reported, not selected on"


def task_metric(spec: dict[str, Any]) -> str:
    """The task objective a study selected on (``task_accuracy`` for older studies)."""
    return str(spec.get("task") or TASK_OBJECTIVE)


def task_sentence(spec: dict[str, Any]) -> str:
    """``task objective: lodo_accuracy — mean held-out-domain accuracy over the ...
    (--lodo); the test domain never selects``, in the words of ``TASK_METRICS``."""
    task = task_metric(spec)
    meaning = TASK_METRICS.get(task, (None, ""))[1]
    return (f"task objective: {task}" + (f" — {meaning}" if meaning else "")
            + "; the test domain never selects")


def lodo_columns(trials: pd.DataFrame) -> list[tuple[int, str]]:
    """``(k, "lodo_acc_domain_<k>")`` of every held-out domain k in the trials, by k."""
    found = [(int(m.group(1)), c) for c in trials.columns
             if isinstance(c, str) and (m := LODO_COLUMN.match(c))]
    return sorted(found)


def domain_label(config: dict[str, Any] | None, index: int | None) -> str:
    """Domain ``index`` in words: its rotation (``15°``) when the trial's configuration
    gives its data set's angles, else ``domain <index>``."""
    if index is None:
        return "domain ?"
    data = (config or {}).get("data") or {}
    domains = data.get("domains")
    if (data.get("dataset", "digits") in ROTATED and isinstance(domains, list | tuple)
            and 0 <= index < len(domains) and isinstance(domains[index], int | float)):
        return f"{float(domains[index]):g}°"
    return f"domain {index}"


@dataclass
class HeldOut:
    """What the held-out-domain figure draws.

    ``settings`` has one row per setting (``number``, ``role``: ``default``, ``diva`` or
    ``front``, and the ``measures`` columns with, where stored, ``<measure>_se``);
    ``labels`` names each measure on the figure, in order (held-out domains for
    ``kind == "lodo"``, the three accuracies for ``kind == "splits"``).
    """

    kind: str
    settings: pd.DataFrame
    measures: list[str]
    labels: list[str]
    task: str
    note: str
    #: lodo: the test domain's column and label, when the shown settings have it
    test: tuple[str, str] | None = None


def _int(value: Any) -> int | None:
    try:
        return None if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return None


def held_out_records(data: StudyData, ranked: pd.DataFrame, *,
                     most: int = MOST_SETTINGS) -> HeldOut | None:
    """The settings and accuracies the held-out-domain figure draws; ``None`` when the
    study stored no held-out accuracy (no LODO folds, no validation or test domain).

    The settings are the front (a scalar study: the top ``most``), at most ``most`` of
    them in ranked order, the method's default, and the best-ranked trial of the DIVA
    variant (no zay) when the study has one.
    """
    lodo = lodo_columns(data.trials)
    splits = [c for c in (VAL_DOMAIN, TEST_DOMAIN)
              if c in data.trials.columns and data.trials[c].notna().any()]
    if not lodo and not splits:
        return None
    scored = ranked[ranked["pareto_rank"].notna()]
    if scored.empty:
        return None
    top, shown = _shown_settings(data, scored, most)
    base, diva, diva_note = _default_and_diva(data, scored)
    rows = pd.concat([base.assign(role="default"), diva.assign(role="diva"),
                      top.assign(role="front")])
    rows = rows.drop_duplicates("number", keep="first")
    source = base if len(base) else rows
    config = next(iter(data.configs(source["trial_id"].astype(int).head(1).tolist())
                       .values()), None)
    task = task_sentence(data.objective_spec)
    what = shown + (" and the method default" if len(base) else "")
    if lodo:
        measures, labels, test = _lodo_measures(lodo, rows, config)
        kind = "lodo"
    else:
        splits = [c for c in splits if c in rows.columns and rows[c].notna().any()]
        if not splits:  # only trials that are not shown stored a held-out accuracy
            return None
        measures, labels = _split_measures(splits, rows, config)
        test = None
        kind = "splits"
    drawn = [*measures, *([test[0]] if test else [])]
    rows = rows[rows[drawn].notna().any(axis=1)]
    if rows.empty:
        return None
    keep = ["trial_id", "number", "role", *[c for m in drawn for c in (m, f"{m}_se")
                                            if c in rows.columns]]
    return HeldOut(kind, rows[keep].reset_index(drop=True), measures, labels, task,
                   f"{what}; {diva_note}", test)


def _shown_settings(data: StudyData, scored: pd.DataFrame,
                    most: int) -> tuple[pd.DataFrame, str]:
    """The front's first ``most`` settings (a scalar study: the top ``most``) and which
    they are, in words."""
    if data.scalar:
        top = scored.head(most)
        return top, f"the top {len(top)} of {len(scored)} ranked trials"
    front = scored[scored["pareto_rank"] == 0]
    top = front.head(most)
    return top, (f"the {len(top)} front trials" if len(top) == len(front)
                 else f"{len(top)} of the {len(front)} front trials")


def _default_and_diva(data: StudyData,
                      scored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The method's default (at most one row), the best-ranked DIVA-variant trial that
    is not the default (at most one row), and a note saying which the DIVA variant is."""
    is_base = scored["baseline"].astype(bool) if "baseline" in scored else pd.Series(
        False, index=scored.index)
    base = scored[is_base].head(1)
    is_diva = _is_diva(data, scored)
    diva = scored[is_diva & ~is_base].head(1)
    if len(base) and bool(is_diva[base.index].any()):
        diva_note = "the method default here is the DIVA variant (no zay)"
    elif len(diva):
        diva_note = (f"the DIVA variant (no zay): trial #{int(diva.iloc[0]['number'])}, "
                     "its best-ranked trial")
    else:
        diva_note = "the DIVA variant (no zay) is not in this study"
    return base, diva, diva_note


def _is_diva(data: StudyData, scored: pd.DataFrame) -> pd.Series:
    """Which scored trials are of the DIVA variant: by their stored configuration, or by
    an enqueued trial's fixed ``variant`` setting."""
    diva_configs = data.configs(containing=DIVA_VARIANT)
    diva_ids = {tid for tid, cfg in diva_configs.items()
                if (cfg.get("model") or {}).get("variant") == DIVA_VARIANT}
    if "variant" in scored.columns:  # an enqueued trial's fixed setting
        diva_ids |= set(scored.loc[scored["variant"] == DIVA_VARIANT, "trial_id"].astype(int))
    return scored["trial_id"].astype(int).isin(diva_ids)


def _lodo_measures(lodo: list[tuple[int, str]], rows: pd.DataFrame,
                   config: dict[str, Any] | None
                   ) -> tuple[list[str], list[str], tuple[str, str] | None]:
    """A LODO study's measures (one per held-out domain) and their labels, and the test
    domain's column and label where the shown settings have it."""
    measures = [c for _, c in lodo]
    labels = [domain_label(config, k) for k, _ in lodo]
    test = None
    if TEST_DOMAIN in rows.columns and rows[TEST_DOMAIN].notna().any():
        where = domain_label(config, _int(((config or {}).get("data") or {})
                                          .get("test_domain")))
        test = (TEST_DOMAIN, f"test domain {where} ({NOT_SELECTED})")
    return measures, labels, test


def _split_measures(splits: list[str], rows: pd.DataFrame,
                    config: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """The in-domain validation accuracy (where shown) beside the held-out ``splits``
    (validation and test domain), and their labels."""
    data_cfg = (config or {}).get("data") or {}
    measures, labels = [], []
    if TASK_OBJECTIVE in rows.columns and rows[TASK_OBJECTIVE].notna().any():
        measures.append(TASK_OBJECTIVE)
        labels.append(f"in-domain validation ({TASK_OBJECTIVE})")
    if VAL_DOMAIN in splits:
        where = domain_label(config, _int(data_cfg.get("val_domain")))
        measures.append(VAL_DOMAIN)
        labels.append(f"held-out validation domain {where} ({VAL_DOMAIN})")
    if TEST_DOMAIN in splits:
        where = domain_label(config, _int(data_cfg.get("test_domain")))
        measures.append(TEST_DOMAIN)
        labels.append(f"test domain {where} ({TEST_DOMAIN}): {NOT_SELECTED}")
    return measures, labels

"""What a study keeps fixed: the configuration its trials share, and the budgets it ran at.

Everything the search space does not vary (the data set and its size, the model's sizes,
the epochs, the optimiser, every other field of the sweep's base ``RunConfig``) is part
of a study's identity: its trials are comparable only because they share it. A new study
stores it (a study user attribute); a command that resumes the study with another is
refused, naming the difference, before anything is written. Moving a study to another
epoch budget is an explicit act (``--change-budget``): the move is recorded with the
number of the first trial it applies to, and ``status`` and the report then say which
trials ran at which budget, since trials of different budgets answer different questions.

Plain Python (no Optuna, torch or ray): ``analysis`` reads the same attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trainer import params as registry

#: study user attribute: the flat fields every trial shares (``fixed_fields``)
FIXED_CONFIG_ATTR = "stagetune_fixed_config"
#: study user attribute: the budgets the study ran at, oldest first, as
#: ``{"epochs": E, "first_trial": N}`` (N: the first trial number asked at E)
BUDGETS_ATTR = "stagetune_budgets"
#: the field a budget move changes
BUDGET_FIELD = "epochs"
#: the flag that moves a study to another budget
CHANGE_BUDGET_FLAG = "--change-budget"
#: fields a trial's runs rewrite from its plan (replicate seeds and their pinned split)
RUN_SEEDS = ("seed", "split_seed")
#: what a leave-one-domain-out trial's runs rewrite too: each fold's held-out domain
LODO_FOLD = "val_domain"


#: where the data set lives: another machine's path to the same files is the same study
DATA_LOCATION = ("data_root",)


def fixed_fields(base_config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a sweep's base configuration that identify its study, flat and
    sorted: all of them but the searched parameters (each trial's own, drawn or fixed by
    the space) and what only says where a run goes or reads from (``device``,
    ``write_plots``, ``data_root``)."""
    left_out = {*registry.searched_names(), *registry.NOT_TRAINING, *DATA_LOCATION}
    flat = registry.flat_config(base_config)
    return {k: _plain(flat[k]) for k in sorted(flat) if k not in left_out}


def fixed_from_trial(config: Mapping[str, Any], *, lodo: bool = False) -> dict[str, Any]:
    """A study's fixed fields as read back from one trial's stored configuration (a
    study made before they were stored, whose trials store their first run's): the
    seeds left out, which replicates rewrite, and a leave-one-domain-out trial's
    (``lodo``) validation domain, which is its first fold's."""
    rewritten = (*RUN_SEEDS, LODO_FOLD) if lodo else RUN_SEEDS
    return {k: v for k, v in fixed_fields(config).items() if k not in rewritten}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def differences(stored: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """The fields whose values differ between a study's stored fixed fields and those a
    command asks for (only fields both name: a field added to ``RunConfig`` since the
    study was made is no difference), in sorted order."""
    return [k for k in sorted(set(stored) & set(asked)) if _plain(stored[k]) != _plain(asked[k])]


def _listed(fields: list[str], values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_plain(values[k])}" for k in fields)


def mismatch_message(study: str, stored: Mapping[str, Any], asked: Mapping[str, Any],
                     fields: list[str], *, moved: bool = False) -> str:
    """The one line that refuses a command asking ``study`` for other fixed ``fields``
    (``moved``: the study was moved to its budget since it was made)."""
    verb = "was moved to" if moved and BUDGET_FIELD in fields else "was created with"
    head = (f"study {study!r} {verb} {_listed(fields, stored)}; this command asks "
            f"for {_listed(fields, asked)}")
    if fields == [BUDGET_FIELD]:
        return (f"{head}: resume it with --epochs {stored[BUDGET_FIELD]}, move the study to "
                f"the new budget with {CHANGE_BUDGET_FLAG} (recorded; status and the report "
                "then show which trials ran at which), or use another --study")
    return (f"{head}: its trials are comparable only at the same settings; resume it with "
            "them or use another --study")


def budgets(attrs: Mapping[str, Any]) -> list[dict[str, int]]:
    """The budgets a study ran at, oldest first (``[]`` for a study that never moved or
    was made before moves were recorded)."""
    stored = attrs.get(BUDGETS_ATTR)
    if not isinstance(stored, list):
        return []
    return [{"epochs": int(b["epochs"]), "first_trial": int(b["first_trial"])} for b in stored]


def moved_budgets(attrs: Mapping[str, Any], epochs: int, next_trial: int) -> list[dict[str, int]]:
    """The study's budgets after a move to ``epochs`` from trial ``next_trial`` on (the
    budget it had until then first, if none was recorded)."""
    history = budgets(attrs)
    if not history:
        fixed = attrs.get(FIXED_CONFIG_ATTR) or {}
        history = [{"epochs": int(fixed.get(BUDGET_FIELD, epochs)), "first_trial": 0}]
    return [*history, {"epochs": int(epochs), "first_trial": int(next_trial)}]


def budget_of(number: int, history: list[dict[str, int]]) -> int | None:
    """The budget trial ``number`` was asked at, by the recorded moves."""
    epochs = None
    for b in history:
        if number >= b["first_trial"]:
            epochs = b["epochs"]
    return epochs


def trial_budgets(history: list[dict[str, int]], numbers: Iterable[int],
                  ran: Mapping[int, int]) -> dict[int, int]:
    """Each trial's budget: the epochs it ran (``ran``, from its stored configuration)
    where known, else the budget it was asked at."""
    out = {}
    for n in numbers:
        epochs = ran.get(n, budget_of(n, history))
        if epochs is not None:
            out[int(n)] = int(epochs)
    return out


def number_ranges(numbers: Iterable[int]) -> str:
    """Trial numbers as runs: ``0-6, 9``."""
    ordered = sorted(set(numbers))
    parts: list[str] = []
    start = prev = None
    for n in [*ordered, None]:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    return ", ".join(parts)


def budget_line(history: list[dict[str, int]], by_trial: Mapping[int, int]) -> str | None:
    """The line ``status`` and the report print for a study moved to another budget:
    the budgets, which trials ran at which, and that they are not comparable (``None``
    for a study of one budget)."""
    if len(history) < 2:
        return None
    order = list(dict.fromkeys(b["epochs"] for b in history))
    ran = []
    for e in order:
        numbers = [n for n, b in by_trial.items() if b == e]
        trials = "trial" if len(numbers) == 1 else "trials"
        ran.append(f"epochs={e} for {trials} {number_ranges(numbers)}" if numbers
                   else f"epochs={e} for no trial yet")
    return (f"budget moved ({CHANGE_BUDGET_FLAG}), now epochs={history[-1]['epochs']}: "
            + "; ".join(ran) + "; trials of different budgets are not comparable")

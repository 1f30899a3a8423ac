"""One setting, however many trials trained it.

Two trials whose effective configurations are equal (``trainer.params.effective_config``:
their inert fields dropped, e.g. λ where the penalty acts in no epoch) train alike: they
are one setting, which ``status``, the report's ranking and ``confirm`` show and count
once. The trial that stands for a setting is the method's default where it is one of
them, else the lowest-numbered; the others are its twins.

Plain Python (no Optuna, torch or ray): ``analysis`` groups its rows with it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trainer import params as registry


def setting_key(number: int, config: Any, params: Mapping[str, Any] | None = None) -> str:
    """A trial's setting: its effective configuration (its ``params`` over its stored
    ``config``, which holds them too, as text), or (a trial that stored no configuration)
    its own number, which no other trial shares."""
    if isinstance(config, Mapping):
        return registry.setting_key({**registry.flat_config(config), **(params or {})})
    return f"trial #{int(number)}"


def representatives(keys: Mapping[int, str], preferred: Iterable[int] = ()) -> dict[int, int]:
    """Each trial number's representative among the trials of its setting (``keys``:
    number -> setting): a ``preferred`` one (the method's default) if there is one, else
    the lowest number."""
    first: dict[str, int] = {}
    chosen = set(preferred)
    for number in sorted(keys, key=lambda n: (n not in chosen, n)):
        first.setdefault(keys[number], number)
    return {number: first[key] for number, key in keys.items()}


def one_per_setting(trials: Iterable[Any]) -> list[tuple[Any, list[int]]]:
    """Optuna trials, one per setting, in their given order: each representative (the
    default, else the lowest number) with the numbers of its twins."""
    trials = list(trials)
    keys = {t.number: setting_key(t.number, t.user_attrs.get("config"), t.params)
            for t in trials}
    chosen = representatives(keys, [t.number for t in trials if t.user_attrs.get("baseline")])
    twins: dict[int, list[int]] = {}
    for number, rep in sorted(chosen.items()):
        if number != rep:
            twins.setdefault(rep, []).append(number)
    return [(t, twins.get(t.number, [])) for t in trials if chosen[t.number] == t.number]


def acting_params(params: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """The trial's ``params`` that act in its run (all of them where it stored no
    configuration to tell)."""
    if not isinstance(config, Mapping):
        return dict(params)
    acting = registry.effective_config(config)
    return {k: v for k, v in params.items() if k in acting}

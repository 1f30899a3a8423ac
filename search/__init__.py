"""stagetune's search: sweeps of staged-training settings over Ray Tune and Optuna.

The public surface, imported on first use (``import search`` loads neither Ray nor
Optuna)::

    from search import SweepOptions, run_sweep, build_space, Objective
    summary = run_sweep(SweepOptions(storage="sqlite:///s.db", study="s", n_trials=8,
                                     space=build_space(12)))

Sub-packages by who runs them (``docs/search.md``, "How search is laid out"):
``search.driver`` (the sweep's process), ``search.worker`` (what a Ray worker runs),
``search.db`` (the study database), ``search.checks`` (confirmation, fidelity,
resolution); ``search.contract`` is what the driver and the workers exchange.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SweepOptions": "search.driver.sweep",
    "run_sweep": "search.driver.sweep",
    "PreflightError": "search.driver.launch",
    "SweepInterrupted": "search.driver.sweep",
    "ConfirmOptions": "search.checks.confirm",
    "run_confirm": "search.checks.confirm",
    "FidelityOptions": "search.checks.fidelity_run",
    "run_fidelity": "search.checks.fidelity_run",
    "Objective": "search.objective",
    "SearchSpace": "search.space",
    "build_space": "search.space",
    "Request": "search.contract",
    "Outcome": "search.contract",
    "Failure": "search.contract",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")

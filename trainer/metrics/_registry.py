"""The metric registry: every metric by name, with one signature,
``metric(inputs) -> dict[str, float]``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.metrics._inputs import EvalInputs

Metric = Callable[["EvalInputs"], dict[str, float]]
_METRICS: dict[str, Metric] = {}


def register_metric(name: str) -> Callable[[Metric], Metric]:
    """Register ``fn(inputs) -> dict[str, float]`` under ``name``."""

    def wrap(fn: Metric) -> Metric:
        _METRICS[name] = fn
        return fn

    return wrap


def metric_names() -> list[str]:
    return list(_METRICS)


def metric(name: str) -> Metric:
    """The registered metric ``name``."""
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(_METRICS)}")
    return _METRICS[name]


def evaluate_latents(inputs: EvalInputs, names: list[str] | None = None) -> dict[str, float]:
    """Run the named metrics (all by default) and merge their flat dicts."""
    out: dict[str, float] = {}
    for name in names or metric_names():
        out.update(inputs.result(name))
    return {k: float(v) for k, v in out.items()}

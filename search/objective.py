"""What a sweep optimises: names, directions and feasibility, from ``trainer.objectives``.

``pareto`` (default): maximise a task accuracy (``--task-metric``: in-domain validation,
the held-out validation domain, or the leave-one-domain-out mean; never the test domain)
and a disentanglement metric; the study is multi-objective. ``scalar``: one weighted
score. Either way a trial whose zay collapsed is infeasible (an Optuna constraint), so
collapse cannot win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.objectives import (
    COLLAPSE_FLAG,
    DEFAULT_DISENTANGLEMENT_OBJECTIVE,
    DISENTANGLEMENT_OBJECTIVES,
    TASK_OBJECTIVE,
    direction,
)

#: the per-epoch score the ASHA scheduler compares (scalar mode), from validation only
EPOCH_SCORE = "val_score"
#: per-epoch stand-ins of the final objectives, measured on the validation split
#: (``trainer.metrics._proxies``): every metric the search can select has its own
EPOCH_PROXIES = {
    TASK_OBJECTIVE: "val_acc_y",
    "zay_independence_score": "val_zay_independence",
    "disentanglement_score": "val_disentanglement_score",
    "zay_nonlinear_independence": "val_zay_nonlinear_independence",
    "zay_label_leakage": "val_zay_label_leakage",
}


#: the task objectives ``--task-metric`` chooses from: per-epoch proxy and meaning; each
#: is maximised, and none reads the test domain (which is reported, never selected on)
TASK_METRICS = {
    TASK_OBJECTIVE: ("val_acc_y", "in-domain validation accuracy of q(y|zy), as the method "
                                  "states"),
    "acc_y_val_domain": ("val_acc_y_val_domain", "accuracy of q(y|zy) on the held-out "
                                                 "validation domain (--val_domain)"),
    "lodo_accuracy": ("val_acc_y_val_domain", "mean held-out-domain accuracy over the "
                                              "leave-one-domain-out folds (--lodo)"),
}
#: the task metric of a leave-one-domain-out sweep
LODO_METRIC = "lodo_accuracy"
#: the per-epoch stand-in of ``zay_collapsed`` (trainer.metrics._proxies)
COLLAPSED_PROXY = "val_zay_collapsed"


def proxy_of(objective: str) -> str | None:
    """The per-epoch proxy a rung reads for an objective (a task metric's too), if any."""
    if objective in EPOCH_PROXIES:
        return EPOCH_PROXIES[objective]
    return TASK_METRICS[objective][0] if objective in TASK_METRICS else None


class ObjectiveError(ValueError):
    pass


@dataclass(frozen=True)
class Objective:
    mode: str = "pareto"  # or "scalar"
    disentanglement: str = DEFAULT_DISENTANGLEMENT_OBJECTIVE
    weight: float = 0.5  # scalar: (1 - w) * accuracy + w * disentanglement
    task: str = TASK_OBJECTIVE  # which accuracy (TASK_METRICS)

    def __post_init__(self) -> None:
        if self.mode not in ("pareto", "scalar"):
            raise ObjectiveError(f"unknown objective mode {self.mode!r}; use pareto or scalar")
        if self.disentanglement not in DISENTANGLEMENT_OBJECTIVES:
            raise ObjectiveError(
                f"unknown disentanglement metric {self.disentanglement!r}; choose one of "
                f"{', '.join(DISENTANGLEMENT_OBJECTIVES)}"
            )
        if self.disentanglement not in EPOCH_PROXIES:
            raise ObjectiveError(f"no per-epoch proxy for {self.disentanglement!r}")
        if self.task not in TASK_METRICS:
            raise ObjectiveError(f"unknown task metric {self.task!r}; choose one of "
                                 f"{', '.join(TASK_METRICS)}")
        if not 0.0 <= self.weight <= 1.0:
            raise ObjectiveError(f"--weight must lie in [0, 1] (got {self.weight})")

    @property
    def names(self) -> list[str]:
        if self.mode == "pareto":
            return [self.task, self.disentanglement]
        return ["scalar_score"]

    @property
    def directions(self) -> list[str]:
        if self.mode == "pareto":
            return ["maximize", direction(self.disentanglement)]
        return ["maximize"]

    def _signed(self, value: float) -> float:
        """The disentanglement value oriented so that higher is better."""
        return value if direction(self.disentanglement) == "maximize" else 1.0 - value

    def scalar(self, accuracy: float, disentanglement: float) -> float:
        return (1.0 - self.weight) * accuracy + self.weight * self._signed(disentanglement)

    def values(self, final: dict[str, float]) -> list[float]:
        """The objective values of a finished run, in the order of ``names``."""
        acc, dis = final[self.task], final[self.disentanglement]
        if self.mode == "pareto":
            return [acc, dis]
        return [self.scalar(acc, dis)]

    def epoch_score(self, row: dict[str, float]) -> float | None:
        """A per-epoch scalar from validation metrics (what a scheduler compares).

        It follows the chosen disentanglement metric through its own proxy
        (``EPOCH_PROXIES``); a row without that proxy gives None, never another metric.
        """
        proxy = EPOCH_PROXIES[self.disentanglement]  # every selectable metric has one
        task = TASK_METRICS[self.task][0]
        if task not in row or proxy not in row:
            return None
        return self.scalar(row[task], row[proxy])

    @staticmethod
    def feasible(final: dict[str, float]) -> bool:
        return final.get(COLLAPSE_FLAG, 0.0) < 1.0

    @staticmethod
    def constraint(final: dict[str, float]) -> float:
        """Optuna constraint value (<= 0 feasible): a collapsed zay violates it."""
        return final.get(COLLAPSE_FLAG, 0.0) - 0.5

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "disentanglement": self.disentanglement,
                "weight": self.weight, "task": self.task, "names": self.names,
                "directions": self.directions}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Objective:
        """The objective ``describe`` wrote (a key it lacks takes its default)."""
        return cls(mode=spec.get("mode", "pareto"),
                   disentanglement=spec.get("disentanglement",
                                            DEFAULT_DISENTANGLEMENT_OBJECTIVE),
                   weight=spec.get("weight", 0.5), task=spec.get("task", TASK_OBJECTIVE))

    def named_values(self, final: dict[str, float]) -> dict[str, float]:
        """``values`` by name; a run that lacks a metric an objective needs gives NaN."""
        try:
            return dict(zip(self.names, self.values(final), strict=True))
        except KeyError:
            return {name: float("nan") for name in self.names}

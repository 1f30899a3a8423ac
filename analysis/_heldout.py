"""Which task accuracy a study selected on.

A sweep chooses its task objective with ``--task-metric`` (``search.objective.TASK_METRICS``)
and records it in the study's objective (``"task"``); a study without that key predates
the choice and selected on ``task_accuracy``. The test domain is reported, never
selected on.
"""

from __future__ import annotations

from typing import Any

from search.objective import TASK_METRICS  # plain Python: no torch, no ray
from trainer.objectives import TASK_OBJECTIVE


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

"""The driver's coordinator: one Ray actor per sweep that population workers ask for the
settings that fill freed slots and for MO-ASHA's decisions on their settings.

A population trial holds K settings in one Ray trial, so neither of Tune's own levers
fits it: a scheduler stops a whole Ray trial, and a searcher suggests only at the start
of one. The coordinator is the channel back:

- **Refill.** A worker whose members stopped asks, through Tune, for the settings to
  fill the freed slots (``search.contract.refill_message``); the driver's
  ``PopulationSearcher`` asks Optuna for them (counted toward ``--n-trials``, seeded and
  tagged like any trial) and posts them here; the worker takes them
  (``search.contract.CoordinatorClient``). An empty list says there are no more.
- **Rungs.** The coordinator holds the sweep's ``RungBook`` (``search.driver.moasha``);
  a worker asks for the decision on each of its settings' rows at a rung, with the
  replicate means, and stops the members of a setting the book stops. The book is
  rebuilt from the database when a driver starts (a resumed driver decides as the
  stopped one would have), as for solo trials.

The actor lives as long as the driver's Ray session (``num_cpus=0``: it takes no trial's
slot).
"""

from __future__ import annotations

import threading
from typing import Any

from search.driver.moasha import CONTINUE, RungBook

__all__ = ["Coordinator", "actor_name", "start_coordinator"]


def actor_name(experiment: str) -> str:
    """The coordinator's Ray actor name for the Tune experiment ``experiment``."""
    return f"stagetune-coordinator-{experiment}"


class Coordinator:
    """Posted settings by Ray trial id, and the rung book (plain Python; Ray's actor is
    ``start_coordinator``'s)."""

    def __init__(self, book: RungBook | None = None) -> None:
        self.book = book
        self._posted: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()  # a threaded actor: takes poll while puts arrive
        self.stopped = 0

    def put(self, trial_id: str, settings: list[dict[str, Any]]) -> None:
        with self._lock:
            self._posted[trial_id] = list(settings)

    def take(self, trial_id: str) -> list[dict[str, Any]] | None:
        """The settings posted for ``trial_id`` (removed), or ``None`` if none yet."""
        with self._lock:
            return self._posted.pop(trial_id, None)

    def decide(self, number: int, row: dict[str, float]) -> str:
        if self.book is None:
            return CONTINUE
        with self._lock:
            decision = self.book.on_row(number, row)
            if decision != CONTINUE:
                self.stopped += 1
            return decision

    def pruned(self) -> int:
        return self.stopped


def start_coordinator(experiment: str, book: RungBook | None):
    """Start the coordinator actor of ``experiment`` (Ray already started); its handle."""
    import ray

    actor = ray.remote(Coordinator).options(name=actor_name(experiment), num_cpus=0,
                                            max_concurrency=8)
    return actor.remote(book)

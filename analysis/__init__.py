"""Reads a study database: ranks trials, computes Pareto fronts, draws figures, writes
reports. Never writes to the database; imports neither torch nor ray.
"""

from __future__ import annotations

from search.pareto import (
    crowding_distance,
    hypervolume_2d,
    hypervolume_history,
    pareto_front_mask,
    pareto_ranks,
)

__all__ = [
    "crowding_distance",
    "hypervolume_2d",
    "hypervolume_history",
    "pareto_front_mask",
    "pareto_ranks",
]

"""The front, defined once: non-dominated sorting, crowding distance and 2-D hypervolume.

Plain numpy. ``status``, ``confirm`` and MO-ASHA (``search``) and the report's ranking
and figures (``analysis``) all read a study's front through these functions.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np


def _as_maximised(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    return np.asarray(values, dtype=np.float64) * signs


def pareto_ranks(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Pareto rank of every row: 0 for the non-dominated front, 1 for the next, ...

    One objective: a sort (equal values share a rank). Two: an O(n log n) sweep. More:
    Optuna's non-dominated sort (the one its samplers use). Identical rows share a rank.
    """
    v = _as_maximised(values, directions)
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    if v.shape[1] == 1:
        _, ranks = np.unique(-v[:, 0], return_inverse=True)
        return ranks.reshape(-1).astype(np.int64)
    if v.shape[1] == 2:
        return _ranks_2d(v)
    return _ranks_nd(v)


def _ranks_nd(v: np.ndarray) -> np.ndarray:
    # Optuna minimises: hand it the negated (maximised) values.
    from optuna.study._multi_objective import _fast_non_domination_rank

    return np.asarray(_fast_non_domination_rank(-v), dtype=np.int64)


def _ranks_2d(v: np.ndarray) -> np.ndarray:
    # Sweep by x descending (ties: y descending). Every earlier point has x >= ours, so
    # front k dominates us iff its highest y so far is >= ours (an identical point does
    # not dominate). The fronts' highest ys decrease with k: binary search.
    order = np.lexsort((-v[:, 1], -v[:, 0]))
    ranks = np.empty(len(v), dtype=np.int64)
    neg_best_y: list[float] = []  # -max y of each front, increasing
    last: list[tuple[float, float]] = []
    for i in order:
        x, y = v[i]
        k = bisect.bisect_right(neg_best_y, -y)  # first front whose max y < y
        if k > 0 and last[k - 1] == (x, y):
            k -= 1  # an identical point shares its front
        if k == len(neg_best_y):
            neg_best_y.append(-y)
            last.append((x, y))
        else:
            neg_best_y[k] = min(neg_best_y[k], -y)
            last[k] = (x, y)
        ranks[i] = k
    return ranks


def pareto_front_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """True for rows that no other row dominates."""
    return pareto_ranks(values, directions) == 0


def non_dominated(trials: Sequence, directions: Sequence[str]) -> list:
    """The trials (anything with ``values``) that no other of ``trials`` dominates, in
    their given order; one objective: those with the best value."""
    if not trials:
        return []
    mask = pareto_front_mask(np.array([list(t.values) for t in trials]), directions)
    return [t for t, keep in zip(trials, mask, strict=True) if keep]


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points get infinity)."""
    v = np.asarray(values, dtype=np.float64)
    n, m = v.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(v[:, k], kind="stable")
        span = v[order[-1], k] - v[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (v[order[2:], k] - v[order[:-2], k]) / span
    return dist


def hypervolume_2d(values: np.ndarray, directions: Sequence[str],
                   reference: Sequence[float]) -> float:
    """Area dominated by the points and bounded by ``reference`` (2 objectives)."""
    v = _as_maximised(values, directions)
    ref = _as_maximised(np.asarray([reference]), directions)[0]
    v = v[(v > ref).all(1)]
    if len(v) == 0:
        return 0.0
    v = v[np.argsort(-v[:, 0], kind="stable")]
    area, best_y = 0.0, ref[1]
    for x, y in v:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return float(area)


def hypervolume_history(values: np.ndarray, directions: Sequence[str],
                        reference: Sequence[float]) -> np.ndarray:
    """Hypervolume of the first k points for every k, kept incrementally."""
    v = _as_maximised(values, directions)
    ref = _as_maximised(np.asarray([reference]), directions)[0]
    front: list[tuple[float, float]] = []
    out = np.zeros(len(v))
    hv = 0.0
    for i, (x, y) in enumerate(v):
        if x > ref[0] and y > ref[1] and not any(fx >= x and fy >= y for fx, fy in front):
            front = [(fx, fy) for fx, fy in front if not (x >= fx and y >= fy)]
            front.append((x, y))
            pts = np.array(front)
            hv = hypervolume_2d(pts, ["maximize", "maximize"], ref)
        out[i] = hv
    return out

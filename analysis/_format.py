"""Numbers as text: enough digits that distinct values stay distinct."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def decimals_needed(values: Iterable[float], *, least: int = 3, most: int = 10) -> int:
    """Fewest decimals (at least ``least``) at which the values keep their distinctness.

    Rounding must neither merge two different values (0.91234 and 0.91236 would both
    read 0.912 at 3 decimals) nor carry a value over an integer (0.99996 must not read
    1.000: it is not 1).
    """
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return least
    n_distinct = np.unique(v).size
    floors = np.floor(v)
    for d in range(least, most + 1):
        r = np.round(v, d)
        if np.unique(r).size == n_distinct and np.array_equal(np.floor(r), floors):
            return d
    return most


def float_formatter(values: Iterable[float], *, least: int = 3,
                    most: int = 10) -> Callable[[float], str]:
    """A formatter for one column: fixed decimals from ``decimals_needed`` (at most
    ``most``)."""
    values = list(values)
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() < 1e15:
        return lambda x: "" if x is None or not np.isfinite(x) else f"{x:.0f}"
    big = finite.size and np.abs(finite).max() >= 1e6
    d = decimals_needed(finite, least=least, most=most)

    def fmt(x: float) -> str:
        if x is None or not np.isfinite(x):
            return "" if x is None or np.isnan(x) else str(x)
        return f"{x:.{d}e}" if big else f"{x:.{d}f}"

    return fmt


def mean_se_texts(means: Iterable[float], ses: Iterable[float], *, least: int = 3,
                  most: int = 10) -> list[str]:
    """``"0.912 ± 0.004"`` for each mean and its standard error.

    The means get the decimals their column needs (``float_formatter``) and each standard
    error as many, so the two read on one scale. A missing mean is ``""``; a mean without
    a standard error (a trial swept once) is the mean alone.
    """
    means, ses = list(means), list(ses)
    fmt = float_formatter(means, least=least, most=most)
    out = []
    for m, s in zip(means, ses, strict=True):
        text = fmt(m)
        if text and s is not None and np.isfinite(s):
            text += f" ± {fmt(s)}"
        out.append(text)
    return out


def params_text(params: dict[str, Any]) -> str:
    """A setting in the short form the sweep's progress lines use:
    ``stage1_epochs=3, use_independence_penalty=True, independence_penalty=15.9``."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


#: how a front's end point reads in the crowding column: its distance is infinite by
#: definition (NSGA-II), so that the ranking keeps a front's extremes first
FRONT_END = "∞ (end)"


def crowding_texts(values: Iterable[float]) -> list[str]:
    """The crowding distances of a ranked table as text: ``FRONT_END`` for a front's end
    points (infinite), the others with the digits their column needs, ``""`` where none
    (a trial without values)."""
    values = list(values)
    v = np.asarray(values, dtype=np.float64)
    fmt = float_formatter(v[np.isfinite(v)])
    return [FRONT_END if np.isinf(x) else fmt(float(x)) for x in v]

"""Paired comparisons over seeds: a setting against the method's default.

Replicate r of every setting is trained with the same seed, so the comparison is on the
per-seed differences d_r = x_r(setting) - x_r(default), which removes what a seed does to
both (the split, the initialisation, the batch order). With n seeds:

- the mean difference d̄ and its standard error s_d / √n (s_d the sample standard
  deviation, n - 1 in the denominator);
- a 95% confidence interval d̄ ± t_{0.975, n-1} · s_d / √n;
- the paired t test of d̄ = 0 (two-sided), t = d̄ / (s_d / √n) with n - 1 degrees of
  freedom.

Why the paired t test and not Wilcoxon's signed-rank test: with the few seeds a
confirmation affords, the signed-rank test cannot reach the usual levels at all (its
smallest two-sided p-value is 2 / 2^n: 0.0625 at n = 5), while the t test is exact under
normal differences and robust to moderate departures at these sizes. Several settings are
confirmed at once, so each objective's p-values are adjusted with Holm's step-down
correction, which controls the family-wise error rate without assuming independence.

A comparison with nothing to test is not given a test: one seed (no spread can be
estimated), or the same difference on every seed (no spread at all: "identical on every
seed" when that difference is zero, as for a setting that trains exactly as the default
does). Its interval, t and p are NaN and its sentence says which it is; in Holm's family it
keeps its place as p = 1 (it claims no difference), so the correction of the others is the
one the settings chosen before the runs would get.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: the confidence level of every interval
CONFIDENCE = 0.95
#: the level at which a difference is called a difference (after Holm's correction)
ALPHA = 0.05


#: what a comparison without a test is (``Paired.degenerate``): one paired seed, no
#: difference on any seed, or the same non-zero difference on every seed
ONE_SEED, IDENTICAL, CONSTANT = ("one seed", "identical on every seed",
                                  "the same difference on every seed")
#: differences whose spread is below this fraction of the values' size are taken as the
#: same (float rounding of equal differences between unequal values, e.g. 0.81 - 0.80
#: and 0.72 - 0.71, differs in the 17th digit)
SAME_DIFFERENCE_RTOL = 1e-9


@dataclass(frozen=True)
class Paired:
    """The paired comparison of one objective: setting minus default, over ``n`` seeds.

    Without a test (``degenerate``: one seed, or the same difference on every seed),
    ``low``, ``high``, ``t`` and ``p`` are NaN; so is ``sd`` at one seed.
    """

    n: int
    mean: float  # mean difference
    sd: float  # sample standard deviation of the differences (nan when n < 2)
    se: float  # standard error of the mean difference
    low: float  # the 95% confidence interval
    high: float
    t: float  # the t statistic
    p: float  # two-sided p-value of the paired t test (unadjusted)

    @property
    def degenerate(self) -> str | None:
        """``ONE_SEED``, ``IDENTICAL`` or ``CONSTANT`` for a comparison without a test;
        ``None`` for one with a t test."""
        if self.n < 2:
            return ONE_SEED
        if self.sd == 0.0:
            return IDENTICAL if self.mean == 0.0 else CONSTANT
        return None

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_difference(setting: Sequence[float], default: Sequence[float]) -> Paired:
    """The paired t comparison of ``setting`` against ``default`` (same seeds, same order).

    One pair, or the same difference on every pair, gives a comparison without a test
    (``Paired.degenerate``).

    Raises:
        ValueError: the two differ in length, or no pair is given.
    """
    from scipy import stats

    a, b = np.asarray(setting, dtype=np.float64), np.asarray(default, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two sequences of one length (got {a.shape} "
                         f"and {b.shape})")
    n = int(a.size)
    if n < 1:
        raise ValueError("a paired comparison needs at least 1 seed (got 0)")
    d = a - b
    mean = float(d.mean())
    nan = math.nan
    if n == 1:
        return Paired(n=1, mean=mean, sd=nan, se=nan, low=nan, high=nan, t=nan, p=nan)
    sd = float(d.std(ddof=1))
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    if sd <= SAME_DIFFERENCE_RTOL * scale:  # the same difference on every seed: no test
        mean = 0.0 if abs(mean) <= SAME_DIFFERENCE_RTOL * scale else mean
        return Paired(n=n, mean=mean, sd=0.0, se=0.0, low=nan, high=nan, t=nan, p=nan)
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    t = mean / se
    p = float(2.0 * stats.t.sf(abs(t), n - 1))
    return Paired(n=n, mean=mean, sd=sd, se=se, low=mean - half, high=mean + half, t=t, p=p)


def paired_by_seed(setting: Mapping[int, float], default: Mapping[int, float]
                   ) -> Paired | None:
    """``paired_difference`` over the seeds both have (seed -> value); ``None`` when fewer
    than two seeds are shared (no paired test)."""
    seeds = sorted(set(setting) & set(default))
    if len(seeds) < 2:
        return None
    return paired_difference([setting[k] for k in seeds], [default[k] for k in seeds])


def mean_sd_text(values: Sequence[float]) -> str:
    """``0.233 ± 0.038`` (mean ± sample sd); one value alone; ``–`` for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{float(np.mean(values)):.3f} ± {float(np.std(values, ddof=1)):.3f}"


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order.

    The i-th smallest p-value is multiplied by (m - i + 1) and the results are made
    monotone (each at least the one before it in sorted order) and capped at 1.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, float(p[i]) * (m - rank)))
        adjusted[i] = running
    return adjusted.tolist()


#: the three verdicts of a comparison; the last claims no equivalence, only that the
#: seeds did not show a difference at ``ALPHA``
BEATS, WORSE, NOT_SHOWN = "beats", "is worse than", "not shown to differ from"


def verdict(mean: float, p_adjusted: float, *, alpha: float = ALPHA,
            higher_is_better: bool = True) -> str:
    """``BEATS`` or ``WORSE`` when the adjusted p-value is below ``alpha`` (and the mean
    difference is not zero), else ``NOT_SHOWN`` (also without a p: NaN)."""
    if not p_adjusted < alpha or mean == 0.0:
        return NOT_SHOWN
    return BEATS if (mean > 0) == higher_is_better else WORSE


def comparison_verdict(diff: Paired, p_adjusted: float, *, alpha: float = ALPHA,
                       higher_is_better: bool = True) -> str:
    """``verdict`` of a comparison with a test; of one without, what it is
    (``ONE_SEED``, ``IDENTICAL``, ``CONSTANT``)."""
    return diff.degenerate or verdict(diff.mean, p_adjusted, alpha=alpha,
                                      higher_is_better=higher_is_better)


def untested_text(diff: Paired, *, fmt: str = ".3f") -> str | None:
    """A comparison without a test in a few words: "identical on every seed", "+0.012 on
    every seed", "+0.012 on one seed"; ``None`` for one with a test."""
    kind = diff.degenerate
    if kind == IDENTICAL:
        return IDENTICAL
    if kind == CONSTANT:
        return f"{diff.mean:+{fmt}} on every seed"
    if kind == ONE_SEED:
        return f"{diff.mean:+{fmt}} on one seed"
    return None


def _untested_sentence(name: str, diff: Paired, fmt: str) -> str:
    """``describe`` of a comparison without a test."""
    kind = diff.degenerate
    if kind == IDENTICAL:
        return (f"identical to the default on {name} on every seed ({diff.n} seeds: nothing "
                "to test)")
    if kind == CONSTANT:
        return (f"differs from the default on {name} by {diff.mean:+{fmt}} on every seed "
                f"({diff.n} seeds: no spread, so no t test)")
    if diff.mean == 0.0:
        return f"equal to the default on {name} on its one paired seed (no interval, no test)"
    return (f"differs from the default on {name} by {diff.mean:+{fmt}} on its one paired "
            "seed (no interval, no test)")


def describe(name: str, diff: Paired, p_adjusted: float, *, alpha: float = ALPHA,
             higher_is_better: bool = True, fmt: str = ".3f", family: int = 1) -> str:
    """One comparison in words: "beats the default on accuracy by 0.021 ± 0.005
    (95% CI +0.008 to +0.034, p = 0.004)" or "not shown to differ from the default on
    ...". Over a ``family`` of more than one setting the p-value is Holm's and says so
    ("Holm p"); the interval is the comparison's own (unadjusted), so it can exclude zero
    where the adjusted test does not call a difference. A comparison without a test says
    what it is: "identical to the default on accuracy on every seed (5 seeds: nothing to
    test)", "differs from the default on accuracy by +0.012 on every seed (5 seeds: no
    spread, so no t test)", "... on its one paired seed (no interval, no test)"."""
    if diff.degenerate:
        return _untested_sentence(name, diff, fmt)
    shown = format_p(p_adjusted)
    label = "Holm p" if family > 1 else "p"
    interval = (f"95% CI {diff.low:+{fmt}} to {diff.high:+{fmt}}, "
                f"{label} {shown if shown.startswith('<') else '= ' + shown}")
    said = verdict(diff.mean, p_adjusted, alpha=alpha, higher_is_better=higher_is_better)
    if said == NOT_SHOWN:
        return (f"{NOT_SHOWN} the default on {name} ({diff.mean:+{fmt}} ± "
                f"{diff.se:{fmt}}, {interval})")
    return f"{said} the default on {name} by {abs(diff.mean):{fmt}} ± {diff.se:{fmt}} ({interval})"


def format_p(p: float) -> str:
    """A p-value as a reader takes it in: three decimals, "< 0.001", or "no test" (NaN:
    a comparison without a test)."""
    if math.isnan(p):
        return "no test"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}"

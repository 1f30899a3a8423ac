"""What the metrics read: ``EvalInputs``, the latents and factors of two held-out splits,
and the probes fit on them (once each, cached; ``fit_probes`` fits many models' at once).

Probes are fit on ``fit`` and scored on ``score``, never on their own training split.
They read what the decoder receives, posterior samples z = mu + sigma * eps (the
means-based entries stay as ``*_means`` diagnostics): see ``EvalInputs``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trainer.metrics import _registry
from trainer.metrics._probes import (
    RIDGE_ALPHA,
    ProbeBackend,
    chance_corrected,
    chance_level,
    is_discrete,
    probe_scores,
    regression_scores,
    uninformative,
)

#: posterior draws scored per split: each input gets ceil(SCORED_DRAWS / n) of them (at
#: most MAX_DRAWS_PER_INPUT); see ``EvalInputs`` for why
SCORED_DRAWS = 40_000
MAX_DRAWS_PER_INPUT = 64

SPLITS = ("fit", "score")
#: what a probe reads: the posterior samples the decoder receives, or the encoder means
PROBE_SOURCES = ("samples", "means")


@dataclass
class EvalInputs:
    """Latents (group -> (n, d)) and factors (name -> (n,)) of two held-out splits.

    ``*_latents`` are the encoder means and ``*_std`` the posterior standard deviations of
    the same inputs (empty: deterministic latents, the samples are the means). Scales may
    be given for some groups only, the same ones on both splits: a group without them is
    deterministic (each of its draws is its means), and its scored rows still line up
    with the other groups' draws (``received``). Factors
    with an integer dtype are discrete, float ones continuous. ``factor_groups`` maps each
    ground-truth factor (y and a included) to the group meant to hold it; empty means the
    data set has no ground truth beyond its labels.

    How many draws: averaged over R draws, a probe's accuracy on n scored inputs has the
    variance of the inputs (which no number of draws removes) plus a draw term
    mean_i p_i (1 - p_i) / (n R), where p_i is the chance that input i is read right. Its
    worst case is a balanced binary factor with every p_i = 1/2: the sd of the
    chance-corrected accuracy is then 1 / sqrt(n R). ``draws`` (default: ceil(40,000 / n),
    at most 64) keeps n R >= 40,000 and so that sd <= 0.005, half the 0.01 to which the
    two probe backends agree: 8 draws at the evaluation's 5,000 inputs, 19 at 2,160. Only
    scoring grows with R (the probe is fit once, on one draw per fit input), and scoring
    40,000 rows costs about as much as the fit. ``tests/trainer/metrics/test_probes.py`` checks
    the draw term against this formula.
    """

    fit_latents: dict[str, np.ndarray]
    fit_factors: dict[str, np.ndarray]
    score_latents: dict[str, np.ndarray]
    score_factors: dict[str, np.ndarray]
    interaction_factor: str | None = None
    factor_groups: dict[str, str] = field(default_factory=dict)
    kl: dict[str, float] = field(default_factory=dict)  # mean KL per group, score split
    task: dict[str, float] = field(default_factory=dict)  # accuracies of the model's heads
    # the class head's confusion matrix (rows true, columns predicted) per held-out split
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    seed: int = 0
    fit_std: dict[str, np.ndarray] = field(default_factory=dict)
    score_std: dict[str, np.ndarray] = field(default_factory=dict)
    draws: int | None = None
    probes: ProbeBackend = field(default_factory=ProbeBackend)
    _probe_cache: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    _metric_cache: dict[str, dict[str, float]] = field(default_factory=dict)
    _sample_cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.fit_std) != set(self.score_std):
            raise ValueError(
                f"give posterior scales of the same groups on both splits (fit: "
                f"{sorted(self.fit_std) or 'none'}, score: {sorted(self.score_std) or 'none'})")
        for split, std in (("fit", self.fit_std), ("score", self.score_std)):
            means = self.fit_latents if split == "fit" else self.score_latents
            for g, s in std.items():
                if g not in means or np.shape(s) != np.shape(means[g]):
                    raise ValueError(f"posterior scales of {g!r} ({split} split) must have "
                                     f"the shape of its means")
        if self.draws is not None and self.draws < 1:
            raise ValueError(f"draws must be at least 1 (got {self.draws})")

    def result(self, metric: str) -> dict[str, float]:
        """A registered metric's values on these inputs, computed once.

        On one BLAS thread: the metrics' matrices are small (d <= 64 columns), where a
        second thread gains nothing and, on a busy machine, costs up to 60x (an SVD of
        3,333 x 16 took 232 ms on two OpenBLAS threads under load, 3.7 ms on one).
        """
        if metric not in self._metric_cache:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1, user_api="blas"):
                self._metric_cache[metric] = _registry.metric(metric)(self)
        return self._metric_cache[metric]

    @property
    def groups(self) -> list[str]:
        return list(self.score_latents)

    @property
    def stochastic(self) -> bool:
        """Whether any group has posterior scales (else every latent is deterministic and
        each input is scored once)."""
        return bool(self.score_std)

    @property
    def score_draws(self) -> int:
        """Draws per scored input: ``draws`` (by default ceil(``SCORED_DRAWS`` / n), at most
        ``MAX_DRAWS_PER_INPUT``), or 1 for deterministic latents."""
        if not self.stochastic:
            return 1
        if self.draws is not None:
            return self.draws
        n = len(next(iter(self.score_factors.values())))
        return min(MAX_DRAWS_PER_INPUT, max(1, -(-SCORED_DRAWS // max(n, 1))))

    def received(self, group: str, split: str) -> np.ndarray:
        """What the decoder receives from ``group`` on a split: z = mu + sigma * eps.

        ``fit``: one draw per input, ``(n, d)``. ``score``: ``score_draws`` draws per
        input stacked draw after draw, ``(score_draws * n, d)``, aligned with
        ``targets(factor, "score")`` and with every other group's draws. Seeded by
        ``seed``, the group and the split, so the same inputs always give the same draws.
        A group without posterior scales is deterministic: each draw is its means.
        """
        key = (group, split)
        if key not in self._sample_cache:
            means = (self.fit_latents if split == "fit" else self.score_latents)[group]
            std = (self.fit_std if split == "fit" else self.score_std).get(group)
            draws = 1 if split == "fit" else self.score_draws
            if std is None:  # the means, once per draw of the groups that have scales
                self._sample_cache[key] = np.tile(np.asarray(means), (draws, 1))
            else:
                rng = np.random.default_rng(
                    [self.seed, zlib.crc32(group.encode()), SPLITS.index(split)])
                # float32 noise: half the generator's time, and no probe can tell
                eps = rng.standard_normal((draws, *means.shape), dtype=np.float32)
                z = np.asarray(means, np.float64) + np.asarray(std, np.float64) * eps
                self._sample_cache[key] = z.reshape(-1, means.shape[1])
        return self._sample_cache[key]

    def targets(self, factor: str, split: str, on: str = "samples") -> np.ndarray:
        """A factor's values aligned with ``received`` (``on="samples"``) or the means."""
        if split == "fit":
            return self.fit_factors[factor]
        values = self.score_factors[factor]
        return np.tile(values, self.score_draws) if on == "samples" else values

    def probe_problem(self, group: str, factor: str, on: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x_fit, t_fit, x_score, t_score)`` of one probe, on samples or on means."""
        if on not in PROBE_SOURCES:
            raise ValueError(f"unknown probe source {on!r}; choose one of {PROBE_SOURCES}")
        if on == "means":
            return (self.fit_latents[group], self.fit_factors[factor],
                    self.score_latents[group], self.score_factors[factor])
        return (self.received(group, "fit"), self.targets(factor, "fit"),
                self.received(group, "score"), self.targets(factor, "score"))

    def probe(self, group: str, factor: str, on: str = "samples") -> dict[str, float]:
        """Scores of a probe predicting ``factor`` from ``group`` (fit on fit, scored on score).

        ``on="samples"`` (the ruler): posterior samples, each scored draw's score
        averaged; ``on="means"``: the encoder means (the ``*_means`` diagnostics).
        Discrete factors: accuracy, chance, chance-corrected accuracy and cross-entropy.
        Continuous factors: R^2. Either way ``readout`` is the [0, 1] entry of the factor
        matrix.
        """
        key = (on, group, factor)
        if key not in self._probe_cache:
            args = self.probe_problem(group, factor, on)
            if is_discrete(self.fit_factors[factor]):
                res = probe_scores(*args, backend=self.probes)
                res["readout"] = float(np.clip(res["acc_cc"], 0.0, 1.0))
            else:
                res = regression_scores(*args, backend=self.probes)
                res["readout"] = float(np.clip(res["r2"], 0.0, 1.0))
            self._probe_cache[key] = res
        return self._probe_cache[key]

    def probed_factors(self) -> list[str]:
        """Every factor some metric probes: y, a, the interaction and the ground truth."""
        names = ["y", "a", self.interaction_factor, *self.factor_groups]
        return [f for f in dict.fromkeys(names) if f and f in self.fit_factors]


def fit_probes(inputs: Sequence[EvalInputs], *, c: float = 1.0, alpha: float = RIDGE_ALPHA
               ) -> int:
    """Fit every probe of several ``EvalInputs`` in two batched solves, on the device of
    their torch backend (inputs with the scikit-learn backend are left to fit each probe
    when a metric asks: the reference is not batched).

    The probes are every (group, factor) pair on posterior samples and, for the factor
    matrix's ``*_means`` diagnostics, every (group, ground-truth factor) pair on the
    means. Fills each ``inputs[i]``'s probe cache with what ``EvalInputs.probe`` would
    compute (probes with a constant target or latent are left to it). Returns how many
    probes were fit.
    """
    from trainer.metrics._probes_torch import logistic_scores, ridge_probes

    batched = [inp for inp in inputs if inp.probes.name == "torch"]
    devices = {inp.probes.device for inp in batched}
    if len(devices) > 1:
        raise ValueError(f"inputs fit together share one device (got {sorted(devices)})")
    device = devices.pop() if devices else "cpu"
    logistic, ridge = [], []
    for inp in batched:
        wanted = [("samples", f) for f in inp.probed_factors()]
        if inp.stochastic:
            wanted += [("means", f) for f in inp.factor_groups if f in inp.fit_factors]
        for g in inp.groups:
            for on, f in wanted:
                if (on, g, f) in inp._probe_cache:
                    continue
                xf, tf, xs, ts = inp.probe_problem(g, f, on)
                if is_discrete(tf):
                    if not uninformative(xf, tf):
                        logistic.append((inp, (on, g, f), (xf, tf, xs), ts))
                elif xf.shape[1] and not np.all(xf.std(0) < 1e-12) and float(
                        ((ts - ts.mean()) ** 2).sum()) > 1e-12:
                    ridge.append((inp, (on, g, f), (xf, tf.astype(np.float64), xs),
                                  ts.astype(np.float64)))
    fitted = logistic_scores([(*p, ts) for *_, p, ts in logistic], c=c, device=device)
    for (inp, key, _, ts), (acc, ce) in zip(logistic, fitted, strict=True):
        chance = chance_level(ts)
        acc_cc = chance_corrected(acc, chance)
        inp._probe_cache[key] = {"acc": acc, "chance": chance, "acc_cc": acc_cc, "ce": ce,
                                 "readout": float(np.clip(acc_cc, 0.0, 1.0))}
    preds = ridge_probes([p for *_, p, _ in ridge], alpha=alpha, device=device)
    for (inp, key, _, ts), pred in zip(ridge, preds, strict=True):
        r2 = 1.0 - float(((ts - pred) ** 2).sum()) / float(((ts - ts.mean()) ** 2).sum())
        inp._probe_cache[key] = {"r2": r2, "readout": float(np.clip(r2, 0.0, 1.0))}
    return len(logistic) + len(ridge)

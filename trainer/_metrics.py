"""Disentanglement metrics: pure numpy functions of latents and labels.

Every registered metric has the same signature, ``metric(inputs) -> dict[str, float]``,
and is a thin wrapper over a pure function of arrays. ``EvalInputs`` carries the encoder
means of two held-out splits: probes are fit on ``fit`` and scored on ``score``, never
on their own training split. Dependence and activity use ``score`` only.

Dependence between latent groups (``zy_zay_correlation`` ...) is **debiased linear CKA**
(Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019),
with HSIC replaced by the unbiased estimator of Song et al. ("Feature Selection via
Dependence Maximization", JMLR 2012) as in Nguyen, Raghu & Kornblith ("Do Wide and Deep
Networks Learn the Same Things?", ICLR 2021). It is invariant to permutations,
rotations and isotropic scaling of a group's dimensions, so a permuted or rotated copy
scores 1; its expectation is about 0 for independent groups at any sample size (the
plain estimator is biased upwards by about d/n); it needs no matrix inverse. Its known
blind spot: CKA weighs directions by their variance, so a copy of zy hidden in a
low-variance direction of an otherwise noisy zay scores low. The factor x group matrix
below standardises features before probing and so catches such a copy; the mean squared
canonical correlation (``*_cca``, invariant to any invertible linear map) is reported
as a diagnostic too.

Ground truth, where a data set has it: ``factor_<f>_from_<g>`` is how well factor f is
read from group g alone (chance-corrected probe accuracy for discrete factors, R^2 of a
ridge probe for continuous ones, both clipped to [0, 1]); ``exclusivity_<f>`` is how
much better f is read from its own group than from the best other group; their mean is
``disentanglement_score``. Group-level DCI (Eastwood & Williams, ICLR 2018) is reported
beside it.

**What the decoder receives.** Every probe (the factor matrix, exclusivity, DCI,
specificity, leakage, interaction content, co-information) reads posterior samples
z = mu + sigma * eps, never the encoder means alone: a mean that varies far below its
posterior noise carries nothing the decoder can use, yet a probe on standardised means
reads it perfectly. A probe is fit on one draw per input of the fit split and scored on
several draws per input of the score split (``EvalInputs.score_draws``); the draws'
scores are averaged
(averaging the draws themselves would shrink the noise the decoder sees). The means-based
entries stay as ``*_means`` diagnostics. Activity and collapse are judged by information,
not by the spread of the means: ``<g>_rate`` bounds what group g transmits about x
(``information_rate``), a dimension is active when its signal stands above its posterior
noise (``ACTIVE_SNR``), and a group transmitting less than ``COLLAPSE_RATE_PER_DIM``
nats per dimension is collapsed. Latents given without posterior scales are taken as
deterministic (the samples are the means). Dependence between groups (CKA, HSIC) is
measured on the means.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trainer._epoch_metrics import COLLAPSE_RATE_PER_DIM
from trainer._epoch_metrics import information_rate as _epoch_information_rate

#: a dimension is active when the variance of its encoder mean over the data exceeds this
#: fraction of its mean posterior variance (Burda et al.'s active units, 2016, threshold
#: 0.01 on Cov_x(E[z|x]) against a unit prior, measured against the posterior noise)
ACTIVE_SNR = 0.01
#: latents without posterior scales (deterministic): a dimension is active when its value
#: varies over the data by more than this fraction of its mean square (scale-free)
ACTIVE_RELATIVE_VARIANCE = 1e-8
#: posterior draws scored per split: each input gets ceil(SCORED_DRAWS / n) of them (at
#: most MAX_DRAWS_PER_INPUT); see ``EvalInputs`` for why
SCORED_DRAWS = 40_000
MAX_DRAWS_PER_INPUT = 64
#: samples for the RBF HSIC metric: at 1,000 its sd over subsamples is 0.0008 on independent
#: groups and 0.004 on weakly dependent ones (0.0001 and 0.0015 at 2,000), far below the
#: seed-to-seed spread of the scores (about 0.08), for a quarter of the Gram arithmetic
HSIC_MAX_SAMPLES = 1000
#: ridge penalty of the continuous-factor probe (on standardised features)
RIDGE_ALPHA = 1.0


SPLITS = ("fit", "score")
#: what a probe reads: the posterior samples the decoder receives, or the encoder means
PROBE_SOURCES = ("samples", "means")


@dataclass
class EvalInputs:
    """Latents (group -> (n, d)) and factors (name -> (n,)) of two held-out splits.

    ``*_latents`` are the encoder means and ``*_std`` the posterior standard deviations of
    the same inputs (empty: deterministic latents, the samples are the means). Factors
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
    40,000 rows costs about as much as the fit. ``tests/trainer/test_metrics.py`` checks
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
    seed: int = 0
    fit_std: dict[str, np.ndarray] = field(default_factory=dict)
    score_std: dict[str, np.ndarray] = field(default_factory=dict)
    draws: int | None = None
    _probe_cache: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    _metric_cache: dict[str, dict[str, float]] = field(default_factory=dict)
    _sample_cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.fit_std) != bool(self.score_std):
            raise ValueError("give posterior scales for both splits or for neither")
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
                self._metric_cache[metric] = _METRICS[metric](self)
        return self._metric_cache[metric]

    @property
    def groups(self) -> list[str]:
        return list(self.score_latents)

    @property
    def stochastic(self) -> bool:
        """Whether the latents have posterior scales (else they are deterministic)."""
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
        ``targets(factor, "score")``. Seeded by ``seed``, the group and the split, so the
        same inputs always give the same draws.
        """
        key = (group, split)
        if key not in self._sample_cache:
            means = (self.fit_latents if split == "fit" else self.score_latents)[group]
            std = (self.fit_std if split == "fit" else self.score_std).get(group)
            if std is None:
                self._sample_cache[key] = np.asarray(means)
            else:
                draws = 1 if split == "fit" else self.score_draws
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
                res = probe_scores(*args)
                res["readout"] = float(np.clip(res["acc_cc"], 0.0, 1.0))
            else:
                res = regression_scores(*args)
                res["readout"] = float(np.clip(res["r2"], 0.0, 1.0))
            self._probe_cache[key] = res
        return self._probe_cache[key]

    def probed_factors(self) -> list[str]:
        """Every factor some metric probes: y, a, the interaction and the ground truth."""
        names = ["y", "a", self.interaction_factor, *self.factor_groups]
        return [f for f in dict.fromkeys(names) if f and f in self.fit_factors]


def is_discrete(values: np.ndarray) -> bool:
    """Integer (or boolean) factors are discrete; float factors are continuous."""
    return bool(np.issubdtype(values.dtype, np.integer) or values.dtype == bool)


# -- dependence between groups ------------------------------------------------------------


def abs_correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson r| of every column of ``a`` with every column of ``b``; constant columns give 0."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na = np.linalg.norm(a, axis=0)
    nb = np.linalg.norm(b, axis=0)
    denom = np.outer(na, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 1e-12, (a.T @ b) / np.where(denom > 1e-12, denom, 1.0), 0.0)
    return np.abs(r)


def mean_abs_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |Pearson r| over all dimension pairs (dilutes a full copy by about 1/d)."""
    return float(abs_correlation_matrix(a, b).mean())


def published_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """|Pearson r| of the flattened arrays: the published score, matched dimensions only.

    Flattening pairs ``a[n, i]`` with ``b[n, i]``, so only matched dimensions are
    compared (the first ``min(da, db)`` of each): a permuted copy scores about 0.
    """
    k = min(a.shape[1], b.shape[1])
    fa, fb = a[:, :k].ravel(), b[:, :k].ravel()
    fa, fb = fa - fa.mean(), fb - fb.mean()
    denom = float(np.linalg.norm(fa) * np.linalg.norm(fb))
    return abs(float(fa @ fb) / denom) if denom > 1e-12 else 0.0


def _cka_from_hsic(hab: float, haa: float, hbb: float) -> float:
    if haa <= 1e-12 or hbb <= 1e-12:  # a constant group holds nothing: no dependence
        return 0.0
    return hab / math.sqrt(haa * hbb)


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Debiased linear CKA of two groups (raw: about 0 +- noise when independent, 1 for a
    copy), at any scale of either group: the penalty's own function
    (``trainer._independence.linear_cka``) in float64, so metric and penalty are one
    estimator."""
    import torch

    from trainer._independence import linear_cka as torch_linear_cka

    with torch.no_grad():
        return float(torch_linear_cka(*(torch.as_tensor(np.asarray(x, dtype=np.float64))
                                        for x in (a, b))))


def linear_dependence(a: np.ndarray, b: np.ndarray) -> float:
    """Debiased linear CKA clipped to [0, 1]: the per-pair dependence of the scores."""
    return float(np.clip(linear_cka(a, b), 0.0, 1.0))


def mean_squared_canonical_correlation(
    a: np.ndarray, b: np.ndarray, ridge: float = 1e-3
) -> float:
    """Mean of the squared canonical correlations (regularised), over min(da, db) pairs.

    Invariant to any invertible linear map of either group. ``ridge`` (relative to each
    group's mean variance) keeps near-constant directions from producing spurious 1s.
    A diagnostic: biased upwards by about d/n on independent groups.
    """
    a = a - a.mean(0)
    b = b - b.mean(0)
    n = a.shape[0]
    caa, cbb, cab = a.T @ a / n, b.T @ b / n, a.T @ b / n
    if np.trace(caa) <= 1e-12 or np.trace(cbb) <= 1e-12:
        return 0.0

    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        c = c + ridge * np.trace(c) / len(c) * np.eye(len(c))
        w, v = np.linalg.eigh(c)
        return (v / np.sqrt(w)) @ v.T

    rho = np.linalg.svd(inv_sqrt(caa) @ cab @ inv_sqrt(cbb), compute_uv=False)
    return float(np.mean(np.clip(rho[: min(a.shape[1], b.shape[1])], 0.0, 1.0) ** 2))


def normalised_hsic_against(common: np.ndarray, others: list[np.ndarray]) -> list[float]:
    """``normalised_hsic(other, common)`` for each of ``others``, sharing ``common``'s
    Gram matrix and self-HSIC.

    The penalty's torch functions (``trainer._independence``) in float64: RBF kernels
    with median-heuristic bandwidths, the unbiased estimator on zero-diagonal Grams.
    """
    import torch

    from trainer._independence import rbf_gram, unbiased_hsic_hollow

    def hollow_gram(x: np.ndarray) -> torch.Tensor:
        if len(x) < 4:
            raise ValueError(f"unbiased HSIC needs at least 4 samples (got {len(x)})")
        k = rbf_gram(torch.as_tensor(np.asarray(x, dtype=np.float64)))
        return k.fill_diagonal_(0.0)

    with torch.no_grad():
        kc = hollow_gram(common)
        hcc = float(unbiased_hsic_hollow(kc, kc))
        out = []
        for x in others:
            ko = hollow_gram(x)
            value = _cka_from_hsic(float(unbiased_hsic_hollow(ko, kc)),
                                   float(unbiased_hsic_hollow(ko, ko)), hcc)
            out.append(float(np.clip(value, 0.0, 1.0)))
    return out


def normalised_hsic(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised unbiased RBF HSIC (debiased RBF CKA), clipped to [0, 1].

    Median-heuristic bandwidths. The unbiased estimator's expectation is 0 for
    independent groups whatever their dimension (the biased one grows with it).
    """
    return normalised_hsic_against(b, [a])[0]


# -- activity -----------------------------------------------------------------------------


def posterior_snr(mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per dimension: variance of the encoder mean over the data / mean posterior variance."""
    noise = (np.asarray(std, np.float64) ** 2).mean(0)
    return np.asarray(mu, np.float64).var(0) / np.maximum(noise, np.finfo(np.float64).tiny)


def information_rate(mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per dimension, an upper bound (nats) on what z = mu(x) + sigma(x) eps tells of x:
    the per-epoch proxies' own function (``trainer._epoch_metrics.information_rate``,
    which derives it), so the final flag and the proxy are one estimator."""
    import torch

    return _epoch_information_rate(torch.as_tensor(np.asarray(mu, np.float64)),
                                   torch.as_tensor(np.asarray(std, np.float64))).numpy()


def active_dims(latent: np.ndarray, std: np.ndarray | None = None) -> int:
    """Dimensions whose signal stands above their posterior noise.

    With posterior scales: ``var(mu) > ACTIVE_SNR * mean(sigma^2)``. Without (a
    deterministic latent): ``var > ACTIVE_RELATIVE_VARIANCE * mean(z^2)``, unit-free, so
    a constant or all-zero dimension is inactive at any scale.
    """
    var = np.asarray(latent, np.float64).var(0)
    if std is not None:
        return int((posterior_snr(latent, std) > ACTIVE_SNR).sum())
    scale = (latent * latent).mean(0)
    return int(((var > ACTIVE_RELATIVE_VARIANCE * scale) & (var > 0)).sum())


def is_collapsed(n_active: int, rate: float | None, dim: int) -> bool:
    """Collapsed: transmits less than ``COLLAPSE_RATE_PER_DIM`` nats per dimension.

    ``rate`` is the group's ``information_rate`` (None for a deterministic latent, which
    is collapsed only when no dimension varies).
    """
    if rate is None:
        return n_active == 0
    return rate < COLLAPSE_RATE_PER_DIM * dim


# -- probes (one function per probe type, so a backend switch is one place) ----------------


def chance_level(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent label."""
    return float(np.bincount(labels).max() / len(labels))


def chance_corrected(acc: float, chance: float) -> float:
    """(acc - chance) / (1 - chance): 0 at chance, 1 at perfect (may leave [0, 1])."""
    return (acc - chance) / (1.0 - chance) if chance < 1.0 else 0.0


#: implementations of the probes: "torch" (``trainer._probes_torch``, batched, on a
#: device; every trial's evaluation, solo or population) or "sklearn" (the reference it
#: agrees with within 0.01, kept for tests and comparisons)
PROBE_BACKENDS = ("sklearn", "torch")
_probe_backend: dict[str, str] = {"name": "torch", "device": "cpu"}


def set_probe_backend(name: str, device: str = "cpu") -> None:
    """Choose the probes' implementation (and the torch backend's device)."""
    if name not in PROBE_BACKENDS:
        raise ValueError(f"unknown probe backend {name!r}; choose {' or '.join(PROBE_BACKENDS)}")
    _probe_backend.update(name=name, device=device)


def probe_backend() -> tuple[str, str]:
    """The probes' implementation and device now."""
    return _probe_backend["name"], _probe_backend["device"]


def _logistic_scores(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray,
                     y_score: np.ndarray, c: float) -> tuple[float, float]:
    """Accuracy and cross-entropy (nats) of a logistic probe, from the chosen backend."""
    if _probe_backend["name"] == "torch":
        from trainer._probes_torch import logistic_scores

        return logistic_scores([(x_fit, y_fit, x_score, y_score)], c=c,
                               device=_probe_backend["device"])[0]
    model = _fit_logistic(x_fit, y_fit, c)
    proba, classes = model.predict_proba(x_score), model.classes_
    return (float((classes[proba.argmax(1)] == y_score).mean()),
            _cross_entropy(proba, classes, y_score))


def _fit_logistic(x_fit: np.ndarray, y_fit: np.ndarray, c: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=c))
    model.fit(x_fit, y_fit)
    return model


def _cross_entropy(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(y) in nats; labels unseen when fitting get the floor probability."""
    order = np.argsort(classes, kind="stable")
    pos = np.clip(np.searchsorted(classes[order], y), 0, max(len(classes) - 1, 0))
    col = order[pos]
    seen = classes[col] == y
    p = np.where(seen, proba[np.arange(len(y)), col], 0.0)
    return float(-np.log(np.clip(p, 1e-6, 1.0)).mean())


def _uninformative(x_fit: np.ndarray, y_fit: np.ndarray) -> bool:
    return len(np.unique(y_fit)) < 2 or x_fit.shape[1] == 0 or bool(
        np.all(x_fit.std(0) < 1e-12))


def probe_scores(
    x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray,
    *, c: float = 1.0,
) -> dict[str, float]:
    """Fit a standardised logistic-regression probe on one split, score it on another.

    Returns accuracy, chance level, chance-corrected accuracy and cross-entropy (nats).
    A constant target or a constant latent gives the chance-level predictor.
    """
    chance = chance_level(y_score)
    if _uninformative(x_fit, y_fit):
        classes, counts = np.unique(y_fit, return_counts=True)
        prior = (counts + 1.0) / (counts.sum() + len(classes))
        pred = np.full(len(y_score), classes[counts.argmax()])
        proba = np.broadcast_to(prior, (len(y_score), len(classes)))
        acc = float((pred == y_score).mean())
        ce = _cross_entropy(proba, classes, y_score)
    else:
        acc, ce = _logistic_scores(x_fit, y_fit, x_score, y_score, c)
    return {"acc": acc, "chance": chance, "acc_cc": chance_corrected(acc, chance), "ce": ce}


def regression_scores(
    x_fit: np.ndarray, t_fit: np.ndarray, x_score: np.ndarray, t_score: np.ndarray,
    *, alpha: float = RIDGE_ALPHA,
) -> dict[str, float]:
    """Ridge probe on standardised features, fit on one split; R^2 on the other."""
    t_fit = t_fit.astype(np.float64)
    t_score = t_score.astype(np.float64)
    ss_tot = float(((t_score - t_score.mean()) ** 2).sum())
    if ss_tot <= 1e-12:
        return {"r2": 0.0}
    if x_fit.shape[1] == 0 or np.all(x_fit.std(0) < 1e-12):
        pred = np.full_like(t_score, t_fit.mean())
    elif _probe_backend["name"] == "torch":
        from trainer._probes_torch import ridge_probes

        pred = ridge_probes([(x_fit, t_fit, x_score)], alpha=alpha,
                            device=_probe_backend["device"])[0]
    else:
        mean, std = x_fit.mean(0), x_fit.std(0)
        std = np.where(std > 1e-12, std, 1.0)
        xf, xs = (x_fit - mean) / std, (x_score - mean) / std
        w = np.linalg.solve(xf.T @ xf + alpha * np.eye(xf.shape[1]), xf.T @ (t_fit - t_fit.mean()))
        pred = xs @ w + t_fit.mean()
    return {"r2": 1.0 - float(((t_score - pred) ** 2).sum()) / ss_tot}


def label_entropy(y_fit: np.ndarray, y_score: np.ndarray) -> float:
    """Cross-entropy (nats) of the label marginal from ``fit`` on ``score``."""
    classes, counts = np.unique(y_fit, return_counts=True)
    prior = (counts + 1.0) / (counts.sum() + len(classes))
    return _cross_entropy(np.broadcast_to(prior, (len(y_score), len(classes))), classes, y_score)


def conditional_features(z: np.ndarray, a: np.ndarray, n_domains: int) -> np.ndarray:
    """[one-hot(a), z (x) one-hot(a)]: a separate linear probe per domain."""
    onehot = np.eye(n_domains)[a]
    return np.concatenate([onehot, (z[:, None, :] * onehot[:, :, None]).reshape(len(z), -1)], 1)


def _nearest_mean_log_loss(
    t_fit: np.ndarray, lab_fit: np.ndarray, t_held: np.ndarray, lab_held: np.ndarray
) -> float:
    """Held-out log-loss of the LDA classifier in a discriminant space (closed form).

    Class means and a pooled diagonal within-class variance from ``fit``; class priors
    from their frequencies; an unseen held-out label gets the floor probability.
    """
    classes, inverse, counts = np.unique(lab_fit, return_inverse=True, return_counts=True)
    onehot = np.zeros((len(classes), len(inverse)))
    onehot[inverse, np.arange(len(inverse))] = 1.0
    means = onehot @ t_fit / counts[:, None]
    var = ((t_fit - means[inverse]) ** 2).mean(0) + 1e-9
    # |t - mu|^2 / var expanded: one matrix product instead of an (n, classes, k) array
    d2 = ((t_held**2 / var).sum(1)[:, None] - 2.0 * (t_held / var) @ means.T
          + (means**2 / var).sum(1)[None, :])
    logits = -0.5 * d2 + np.log(counts / counts.sum())
    logits -= logits.max(1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(1, keepdims=True)
    return _cross_entropy(proba, classes, lab_held)


def discriminant_projection(
    z_fit: np.ndarray, labels_fit: np.ndarray, *, folds: int = 3, seed: int = 0
) -> Callable[[np.ndarray], np.ndarray]:
    """A linear map of z onto its top-k discriminant directions for ``labels``, k by CV.

    LDA (fit split only) orders directions by how much they separate the labels; k in
    {1, 2, 4, ...} up to the rank is the one whose (closed-form) LDA classifier has the
    lowest cross-validated log-loss on the fit split. Few directions keep the later
    probes' parameters few (a 60-class probe on 16 raw dimensions has ~1000 weights and
    loses a third of the information to estimation noise).
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n_classes = len(np.unique(labels_fit))
    rank = min(z_fit.shape[1], n_classes - 1)
    smallest_fold = len(labels_fit) - -(-len(labels_fit) // folds)  # CV training size
    if rank < 1 or _uninformative(z_fit, labels_fit) or smallest_fold <= n_classes:
        return lambda z: z  # too few samples for LDA on these classes: raw z
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, rank) if k <= rank})
    order = np.random.default_rng(seed).permutation(len(labels_fit))
    parts = np.array_split(order, folds)
    losses = {k: 0.0 for k in ks}
    for i in range(folds):
        held = parts[i]
        train = np.concatenate([parts[j] for j in range(folds) if j != i])
        # a CV fold may miss a class, which lowers the rank LDA allows on it
        fold_rank = min(rank, len(np.unique(labels_fit[train])) - 1)
        if fold_rank < 1:
            continue
        lda = LinearDiscriminantAnalysis(n_components=fold_rank).fit(z_fit[train],
                                                                     labels_fit[train])
        tr, he = lda.transform(z_fit[train]), lda.transform(z_fit[held])
        for k in ks:
            losses[k] += _nearest_mean_log_loss(tr[:, :k], labels_fit[train], he[:, :k],
                                                labels_fit[held])
    best = min(ks, key=lambda k: losses[k])
    lda = LinearDiscriminantAnalysis(n_components=rank).fit(z_fit, labels_fit)
    return lambda z: lda.transform(z)[:, :best]


def coinformation(
    z_fit: np.ndarray, y_fit: np.ndarray, a_fit: np.ndarray,
    z_score: np.ndarray, y_score: np.ndarray, a_score: np.ndarray,
    *, seed: int = 0,
) -> dict[str, float]:
    """Co-information I(z;y;a) = I(z;y) - I(z;y|a) from probe cross-entropies (nats).

    Sign convention: negative means synergy (z and a together say more about y than
    apart, as for z = y XOR a), positive means redundancy. Estimated through the exact
    identity I(z;y;a) = I(z;y) + I(z;a) - I(z;(y,a)): three probes from z alone, each
    mutual information a drop in held-out cross-entropy, clipped at 0. All three read
    the same discriminant projection T(z) of the joint label (``discriminant_projection``,
    fit on the fit split): a probe per domain on raw z (the obvious estimator of
    I(z;y|a)) has d x n_domains x n_classes weights and overfits, which shrank the
    synergy of a 16-d zay holding only s from -ln 2 to about -0.3 nats. By the
    data-processing inequality each term stays a lower bound.
    """
    n_dom = int(max(a_fit.max(), a_score.max())) + 1
    joint_fit, joint_score = y_fit * n_dom + a_fit, y_score * n_dom + a_score
    project = discriminant_projection(z_fit, joint_fit, seed=seed)
    t_fit, t_score = project(z_fit), project(z_score)

    def mi(lab_fit: np.ndarray, lab_score: np.ndarray) -> float:
        ce = probe_scores(t_fit, lab_fit, t_score, lab_score)["ce"]
        return max(0.0, label_entropy(lab_fit, lab_score) - ce)

    mi_zy, mi_za, mi_joint = mi(y_fit, y_score), mi(a_fit, a_score), mi(joint_fit, joint_score)
    onehot_fit, onehot_score = np.eye(n_dom)[a_fit], np.eye(n_dom)[a_score]
    h_y_given_a = probe_scores(onehot_fit, y_fit, onehot_score, y_score)["ce"]
    mi_zy_given_a = max(0.0, mi_joint - mi_za)
    return {
        "mi_z_y": mi_zy,
        "mi_z_a": mi_za,
        "mi_z_ya": mi_joint,
        "mi_z_y_given_a": mi_zy_given_a,
        "coinformation": mi_zy - mi_zy_given_a,
        "h_y_given_a": h_y_given_a,
    }


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k]) if n > k else np.arange(n)


# -- the factor x group matrix ------------------------------------------------------------


def exclusivity_scores(
    matrix: np.ndarray, factors: list[str], groups: list[str], factor_groups: dict[str, str]
) -> dict[str, float]:
    """Per factor: max(0, M[f, own(f)] - max over other groups of M[f, g])."""
    out = {}
    for i, f in enumerate(factors):
        own = groups.index(factor_groups[f])
        others = [matrix[i, j] for j in range(len(groups)) if j != own]
        out[f] = max(0.0, float(matrix[i, own]) - (max(others) if others else 0.0))
    return out


def _entropy_base(p: np.ndarray, n: int) -> float:
    """Entropy of ``p`` (sums to 1) with logarithm base ``n``; 0 when n < 2."""
    if n < 2:
        return 0.0
    q = p[p > 0]
    return float(-(q * np.log(q)).sum() / math.log(n))


def group_dci(
    matrix: np.ndarray, factors: list[str], groups: list[str], factor_groups: dict[str, str]
) -> dict[str, float]:
    """DCI (Eastwood & Williams, ICLR 2018) at the level of latent groups.

    Importance R[f, g] = the factor matrix (how well f is read from group g alone).
    Disentanglement: per group g, 1 - H_F(R[:, g] / sum), base = number of factors,
    weighted by the group's share of total importance. Completeness: per factor f,
    1 - H_G(R[f, :] / sum), base = number of groups, averaged. Informativeness: the mean
    of M[f, own(f)]. Groups or factors with zero importance contribute 0.
    """
    n_f, n_g = matrix.shape
    total = float(matrix.sum())
    d_parts, weights = [], []
    for j in range(n_g):
        col = matrix[:, j]
        s = float(col.sum())
        weights.append(s)
        d_parts.append(1.0 - _entropy_base(col / s, n_f) if s > 0 else 0.0)
    disentanglement = float(np.dot(d_parts, weights) / total) if total > 0 else 0.0
    c_parts = []
    for i in range(n_f):
        row = matrix[i]
        s = float(row.sum())
        c_parts.append(1.0 - _entropy_base(row / s, n_g) if s > 0 else 0.0)
    informativeness = float(np.mean(
        [matrix[i, groups.index(factor_groups[f])] for i, f in enumerate(factors)]))
    return {"dci_disentanglement": disentanglement,
            "dci_completeness": float(np.mean(c_parts)),
            "dci_informativeness": informativeness}


# -- registered metrics -------------------------------------------------------------------

Metric = Callable[[EvalInputs], dict[str, float]]
_METRICS: dict[str, Metric] = {}


def register_metric(name: str) -> Callable[[Metric], Metric]:
    def wrap(fn: Metric) -> Metric:
        _METRICS[name] = fn
        return fn

    return wrap


def metric_names() -> list[str]:
    return list(_METRICS)


@register_metric("task_accuracy")
def task_accuracy(inputs: EvalInputs) -> dict[str, float]:
    out = dict(inputs.task)
    if "acc_y_val" in out:
        out["task_accuracy"] = out["acc_y_val"]
    return out


@register_metric("correlation")
def correlation(inputs: EvalInputs) -> dict[str, float]:
    """Linear dependence of zay on zy and za: debiased linear CKA, plus published variants."""
    z = inputs.score_latents
    out = {"za_zy_correlation": linear_dependence(z["za"], z["zy"])}
    if "zay" not in z:
        return out
    for other in ("zy", "za"):
        a, b = z[other], z["zay"]
        out[f"{other}_zay_correlation"] = linear_dependence(a, b)
        out[f"{other}_zay_correlation_published"] = published_correlation(b, a)
        out[f"{other}_zay_correlation_allpairs"] = mean_abs_correlation(a, b)
        out[f"{other}_zay_cca"] = mean_squared_canonical_correlation(a, b)
    for suffix in ("", "_published", "_allpairs"):
        out[f"zay_independence_score{suffix}"] = 1.0 - (
            out[f"zy_zay_correlation{suffix}"] + out[f"za_zay_correlation{suffix}"]
        ) / 2.0
    return out


@register_metric("nonlinear_dependence")
def nonlinear_dependence(inputs: EvalInputs) -> dict[str, float]:
    z = inputs.score_latents
    if "zay" not in z:
        return {}
    keep = _subsample(len(z["zay"]), HSIC_MAX_SAMPLES, inputs.seed)
    zy_h, za_h = normalised_hsic_against(z["zay"][keep], [z["zy"][keep], z["za"][keep]])
    return {
        "zy_zay_hsic": zy_h,
        "za_zay_hsic": za_h,
        "zay_nonlinear_independence": 1.0 - (zy_h + za_h) / 2.0,
    }


@register_metric("specificity")
def specificity(inputs: EvalInputs) -> dict[str, float]:
    zy_y, zy_a = inputs.probe("zy", "y"), inputs.probe("zy", "a")
    za_a, za_y = inputs.probe("za", "a"), inputs.probe("za", "y")

    def cc(p: dict[str, float]) -> float:  # clipped first, so the difference stays <= 1
        return float(np.clip(p["acc_cc"], 0.0, 1.0))

    return {
        "zy_y_specificity": zy_y["acc"] - zy_a["acc"],
        "za_a_specificity": za_a["acc"] - za_y["acc"],
        "zy_y_specificity_cc": cc(zy_y) - cc(zy_a),
        "za_a_specificity_cc": cc(za_a) - cc(za_y),
    }


@register_metric("probe_accuracy")
def probe_accuracy(inputs: EvalInputs) -> dict[str, float]:
    """Accuracy of y, a and the interaction factor from every latent group."""
    factors = ["y", "a"] + ([inputs.interaction_factor] if inputs.interaction_factor else [])
    out = {}
    for g in inputs.groups:
        for f in factors:
            p = inputs.probe(g, f)
            out[f"probe_acc_{g}_{f}"] = p["acc"]
            out[f"probe_acc_cc_{g}_{f}"] = p["acc_cc"]
    return out


@register_metric("activity")
def activity(inputs: EvalInputs) -> dict[str, float]:
    """Per group: active dimensions, information rate, KL to its prior, collapse (score split).

    ``<g>_rate`` (nats) bounds what the group transmits about the input
    (``information_rate``); ``<g>_kl`` is the mean KL of its posterior to its prior (what
    the loss pays, which a learned conditional prior can drive to 0 while the group still
    carries its factor). A group is collapsed when its rate is below
    ``COLLAPSE_RATE_PER_DIM`` nats per dimension, whatever its means do.
    """
    out: dict[str, float] = {}
    for g, mu in inputs.score_latents.items():
        std = inputs.score_std.get(g)
        n_active = active_dims(mu, std)
        rate = float(information_rate(mu, std).sum()) if std is not None else None
        out[f"{g}_active_dims"] = float(n_active)
        if rate is not None:
            out[f"{g}_rate"] = rate
        if g in inputs.kl:
            out[f"{g}_kl"] = float(inputs.kl[g])
        out[f"{g}_collapsed"] = float(is_collapsed(n_active, rate, mu.shape[1]))
    if "zay" in inputs.score_latents:
        out["zay_active_fraction"] = out["zay_active_dims"] / inputs.score_latents["zay"].shape[1]
    return out


@register_metric("zay_interaction")
def zay_interaction(inputs: EvalInputs) -> dict[str, float]:
    """What zay holds of the labels (leakage) and of their interaction (content)."""
    if "zay" not in inputs.score_latents:
        return {}
    y_p, a_p = inputs.probe("zay", "y"), inputs.probe("zay", "a")
    # the max: a zay holding all of y and nothing of a leaks fully, not by half
    out = {"zay_label_leakage": float(np.clip(max(y_p["acc_cc"], a_p["acc_cc"]), 0.0, 1.0))}
    if inputs.interaction_factor:
        content = inputs.probe("zay", inputs.interaction_factor)["acc_cc"]
    else:  # no ground truth: synergy relative to what a leaves unknown about y
        ci = inputs.result("coinformation")
        h = ci["zay_h_y_given_a"]
        content = -ci["zay_coinformation"] / h if h > 0 else 0.0
    out["zay_interaction_content"] = float(np.clip(content, 0.0, 1.0))
    return out


@register_metric("coinformation")
def zay_coinformation(inputs: EvalInputs) -> dict[str, float]:
    """I(zay;y;a) and its parts (nats) on posterior samples of zay; negative means synergy."""
    if "zay" not in inputs.score_latents:
        return {}
    with warnings.catch_warnings():  # many joint (y, a) classes on a small split
        warnings.filterwarnings("ignore", message="The number of unique classes")
        ci = coinformation(
            inputs.received("zay", "fit"), inputs.targets("y", "fit"),
            inputs.targets("a", "fit"), inputs.received("zay", "score"),
            inputs.targets("y", "score"), inputs.targets("a", "score"), seed=inputs.seed,
        )
    return {"zay_coinformation": ci["coinformation"], "zay_mi_y": ci["mi_z_y"],
            "zay_mi_y_given_a": ci["mi_z_y_given_a"], "zay_h_y_given_a": ci["h_y_given_a"]}


def _matrix_scores(inputs: EvalInputs, fg: dict[str, str], on: str) -> dict[str, float]:
    factors, groups = list(fg), inputs.groups
    matrix = np.array([[inputs.probe(g, f, on)["readout"] for g in groups] for f in factors])
    out = {f"factor_{f}_from_{g}": float(matrix[i, j])
           for i, f in enumerate(factors) for j, g in enumerate(groups)}
    excl = exclusivity_scores(matrix, factors, groups, fg)
    out.update({f"exclusivity_{f}": v for f, v in excl.items()})
    out["factor_exclusivity"] = float(np.mean(list(excl.values())))
    out.update(group_dci(matrix, factors, groups, fg))
    return out


@register_metric("factor_matrix")
def factor_matrix(inputs: EvalInputs) -> dict[str, float]:
    """The factor x group matrix, per-factor exclusivity and group-level DCI.

    Read from posterior samples; the same names with ``_means`` appended read the encoder
    means (a diagnostic: what the ruler said before it measured what the decoder
    receives). Only where the data set names its factors' groups (``factor_groups``).
    """
    fg = {f: g for f, g in inputs.factor_groups.items()
          if g in inputs.score_latents and f in inputs.score_factors}
    if not fg:
        return {}
    out = _matrix_scores(inputs, fg, "samples")
    if inputs.stochastic:
        out.update({f"{k}_means": v for k, v in _matrix_scores(inputs, fg, "means").items()})
    return out


def combined_score(values: dict[str, float]) -> float:
    """Label-only score: geometric mean of the parts a disentangled zay must all get right.

    Parts, each clipped to [0, 1]: zy and za chance-corrected specificity, zay
    non-leakage, zay non-linear independence and zay interaction content. A collapsed
    zay scores 0: it is independent only because it holds nothing.
    """
    if values.get("zay_collapsed", 0.0) >= 1.0:
        return 0.0
    parts = [
        values.get("zy_y_specificity_cc", 0.0),
        values.get("za_a_specificity_cc", 0.0),
        1.0 - values.get("zay_label_leakage", 1.0),
        values.get("zay_nonlinear_independence", 0.0),
        values.get("zay_interaction_content", 0.0),
    ]
    clipped = np.clip(np.asarray(parts, dtype=np.float64), 0.0, 1.0)
    return float(np.exp(np.log(np.maximum(clipped, 1e-12)).mean())) if clipped.min() > 0 else 0.0


@register_metric("disentanglement_score")
def disentanglement_score(inputs: EvalInputs) -> dict[str, float]:
    """Ground-truth exclusivity where the factors are known, else the label-only score.

    Why exclusivity and not DCI as the headline: DCI's disentanglement and completeness
    only ask that each factor sit in *some single* group; they cannot tell a model that
    put s in zay from one that put s in zx. Exclusivity compares each factor's own group
    (the one the method intends) with the best other group, so it names the group, and
    a factor readable everywhere (an untrained encoder's means hold colour in every
    latent) scores 0. It is 0 for a collapsed zay. Read from posterior samples.
    """
    if "zay" not in inputs.score_latents:
        return {}
    values: dict[str, float] = {}
    for name in ("specificity", "activity", "zay_interaction", "nonlinear_dependence"):
        values.update(inputs.result(name))
    out = {"disentanglement_score_label_only": combined_score(values)}
    collapsed = values.get("zay_collapsed", 0.0) >= 1.0
    fm = inputs.result("factor_matrix")
    if fm:
        out["disentanglement_score"] = 0.0 if collapsed else fm["factor_exclusivity"]
    else:
        out["disentanglement_score"] = out["disentanglement_score_label_only"]
    return out


def evaluate_latents(inputs: EvalInputs, names: list[str] | None = None) -> dict[str, float]:
    """Run the named metrics (all by default) and merge their flat dicts."""
    out: dict[str, float] = {}
    for name in names or metric_names():
        out.update(inputs.result(name))
    return {k: float(v) for k, v in out.items()}


def correlation_matrices(latents: dict[str, np.ndarray]) -> dict[str, object]:
    """Group-level dependence (debiased linear CKA) and the per-dimension |r| matrix.

    The diagonal of the group matrix is 1 (a group against itself).
    """
    groups = list(latents)
    group_matrix = np.zeros((len(groups), len(groups)))
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            group_matrix[i, j] = 1.0 if i == j else linear_dependence(latents[gi], latents[gj])
    stacked = np.concatenate([latents[g] for g in groups], 1)
    labels = [f"{g}[{k}]" for g in groups for k in range(latents[g].shape[1])]
    return {
        "groups": groups,
        "group_matrix": group_matrix.round(6).tolist(),
        "dim_labels": labels,
        "dim_matrix": abs_correlation_matrix(stacked, stacked).round(4).tolist(),
    }

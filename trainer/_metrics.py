"""Disentanglement metrics: pure numpy functions of latents and labels.

Every registered metric has the same signature, ``metric(inputs) -> dict[str, float]``,
and is a thin wrapper over a pure function of arrays. ``EvalInputs`` carries the encoder
means of two held-out splits: probes are fit on ``fit`` and scored on ``score``, never
on their own training split. Correlation and activity use ``score`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ACTIVE_VARIANCE = 0.01
HSIC_MAX_SAMPLES = 2000


@dataclass
class EvalInputs:
    """Latents (group -> (n, d)) and factors (name -> (n,) ints) of two held-out splits."""

    fit_latents: dict[str, np.ndarray]
    fit_factors: dict[str, np.ndarray]
    score_latents: dict[str, np.ndarray]
    score_factors: dict[str, np.ndarray]
    interaction_factor: str | None = None
    kl: dict[str, float] = field(default_factory=dict)  # mean KL per group, score split
    task: dict[str, float] = field(default_factory=dict)  # accuracies of the model's heads
    seed: int = 0
    _probe_cache: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    _metric_cache: dict[str, dict[str, float]] = field(default_factory=dict)

    def result(self, metric: str) -> dict[str, float]:
        """A registered metric's values on these inputs, computed once."""
        if metric not in self._metric_cache:
            self._metric_cache[metric] = _METRICS[metric](self)
        return self._metric_cache[metric]

    @property
    def groups(self) -> list[str]:
        return list(self.score_latents)

    def probe(self, group: str, factor: str) -> dict[str, float]:
        """Accuracy, chance and cross-entropy of a probe predicting ``factor`` from ``group``."""
        key = (group, factor)
        if key not in self._probe_cache:
            self._probe_cache[key] = probe_scores(
                self.fit_latents[group], self.fit_factors[factor],
                self.score_latents[group], self.score_factors[factor],
            )
        return self._probe_cache[key]


# -- pure functions -----------------------------------------------------------------------


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
    """Mean |Pearson r| over all dimension pairs (not only matched ones)."""
    return float(abs_correlation_matrix(a, b).mean())


def _rbf_gram(x: np.ndarray) -> np.ndarray:
    sq = np.sum(x * x, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    off = d2[~np.eye(len(x), dtype=bool)]
    bandwidth = float(np.median(off)) if off.size else 1.0
    return np.exp(-d2 / max(bandwidth, 1e-12))


def normalised_hsic(a: np.ndarray, b: np.ndarray) -> float:
    """RBF-kernel HSIC normalised to [0, 1] (kernel CKA), median-heuristic bandwidth."""
    ka, kb = _rbf_gram(a.astype(np.float64)), _rbf_gram(b.astype(np.float64))
    ka = ka - ka.mean(0) - ka.mean(1)[:, None] + ka.mean()
    kb = kb - kb.mean(0) - kb.mean(1)[:, None] + kb.mean()
    denom = math.sqrt(float((ka * ka).sum()) * float((kb * kb).sum()))
    return float((ka * kb).sum() / denom) if denom > 1e-12 else 0.0


def active_dims(latent: np.ndarray, threshold: float = ACTIVE_VARIANCE) -> int:
    """Dimensions whose encoder mean varies over the data (variance above ``threshold``)."""
    return int((latent.var(0) > threshold).sum())


def chance_level(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent label."""
    return float(np.bincount(labels).max() / len(labels))


def chance_corrected(acc: float, chance: float) -> float:
    """(acc - chance) / (1 - chance): 0 at chance, 1 at perfect."""
    return (acc - chance) / (1.0 - chance) if chance < 1.0 else 0.0


def _fit_logistic(x_fit: np.ndarray, y_fit: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=1.0))
    model.fit(x_fit, y_fit)
    return model


def _cross_entropy(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(y) in nats; labels unseen when fitting get the floor probability."""
    col = {c: i for i, c in enumerate(classes)}
    p = np.array([proba[i, col[t]] if t in col else 0.0 for i, t in enumerate(y)])
    return float(-np.log(np.clip(p, 1e-6, 1.0)).mean())


def probe_scores(
    x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray
) -> dict[str, float]:
    """Fit a standardised logistic-regression probe on one split, score it on another.

    Returns accuracy, chance level, chance-corrected accuracy and cross-entropy (nats).
    A constant target or a constant latent gives the chance-level predictor.
    """
    chance = chance_level(y_score)
    if len(np.unique(y_fit)) < 2 or x_fit.shape[1] == 0 or np.all(x_fit.std(0) < 1e-12):
        classes, counts = np.unique(y_fit, return_counts=True)
        prior = (counts + 1.0) / (counts.sum() + len(classes))
        pred = np.full(len(y_score), classes[counts.argmax()])
        proba = np.broadcast_to(prior, (len(y_score), len(classes)))
        acc = float((pred == y_score).mean())
        ce = _cross_entropy(proba, classes, y_score)
    else:
        model = _fit_logistic(x_fit, y_fit)
        proba = model.predict_proba(x_score)
        classes = model.classes_
        acc = float((classes[proba.argmax(1)] == y_score).mean())
        ce = _cross_entropy(proba, classes, y_score)
    return {"acc": acc, "chance": chance, "acc_cc": chance_corrected(acc, chance), "ce": ce}


def label_entropy(y_fit: np.ndarray, y_score: np.ndarray) -> float:
    """Cross-entropy (nats) of the label marginal from ``fit`` on ``score``."""
    classes, counts = np.unique(y_fit, return_counts=True)
    prior = (counts + 1.0) / (counts.sum() + len(classes))
    return _cross_entropy(np.broadcast_to(prior, (len(y_score), len(classes))), classes, y_score)


def conditional_features(z: np.ndarray, a: np.ndarray, n_domains: int) -> np.ndarray:
    """[one-hot(a), z (x) one-hot(a)]: a separate linear probe per domain."""
    onehot = np.eye(n_domains)[a]
    return np.concatenate([onehot, (z[:, None, :] * onehot[:, :, None]).reshape(len(z), -1)], 1)


def coinformation(
    z_fit: np.ndarray, y_fit: np.ndarray, a_fit: np.ndarray,
    z_score: np.ndarray, y_score: np.ndarray, a_score: np.ndarray,
) -> dict[str, float]:
    """Co-information I(z;y;a) = I(z;y) - I(z;y|a) from probe cross-entropies (nats).

    Sign convention: negative means synergy (z and a together say more about y than
    apart, as for z = y XOR a), positive means redundancy. Each mutual information is
    estimated as a drop in held-out cross-entropy and clipped at 0.
    """
    n_dom = int(max(a_fit.max(), a_score.max())) + 1
    h_y = label_entropy(y_fit, y_score)
    h_y_given_z = probe_scores(z_fit, y_fit, z_score, y_score)["ce"]
    onehot_fit, onehot_score = np.eye(n_dom)[a_fit], np.eye(n_dom)[a_score]
    h_y_given_a = probe_scores(onehot_fit, y_fit, onehot_score, y_score)["ce"]
    h_y_given_za = probe_scores(
        conditional_features(z_fit, a_fit, n_dom), y_fit,
        conditional_features(z_score, a_score, n_dom), y_score,
    )["ce"]
    mi_zy = max(0.0, h_y - h_y_given_z)
    mi_zy_given_a = max(0.0, h_y_given_a - h_y_given_za)
    return {
        "mi_z_y": mi_zy,
        "mi_z_y_given_a": mi_zy_given_a,
        "coinformation": mi_zy - mi_zy_given_a,
        "h_y_given_a": h_y_given_a,
    }


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k]) if n > k else np.arange(n)


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
    z = inputs.score_latents
    out = {"za_zy_correlation": mean_abs_correlation(z["za"], z["zy"])}
    if "zay" in z:
        out["zy_zay_correlation"] = mean_abs_correlation(z["zy"], z["zay"])
        out["za_zay_correlation"] = mean_abs_correlation(z["za"], z["zay"])
        out["zay_independence_score"] = 1.0 - (
            out["zy_zay_correlation"] + out["za_zay_correlation"]
        ) / 2.0
    return out


@register_metric("nonlinear_dependence")
def nonlinear_dependence(inputs: EvalInputs) -> dict[str, float]:
    z = inputs.score_latents
    if "zay" not in z:
        return {}
    keep = _subsample(len(z["zay"]), HSIC_MAX_SAMPLES, inputs.seed)
    zy_h = normalised_hsic(z["zy"][keep], z["zay"][keep])
    za_h = normalised_hsic(z["za"][keep], z["zay"][keep])
    return {
        "zy_zay_hsic": zy_h,
        "za_zay_hsic": za_h,
        "zay_nonlinear_independence": 1.0 - (zy_h + za_h) / 2.0,
    }


@register_metric("specificity")
def specificity(inputs: EvalInputs) -> dict[str, float]:
    zy_y, zy_a = inputs.probe("zy", "y"), inputs.probe("zy", "a")
    za_a, za_y = inputs.probe("za", "a"), inputs.probe("za", "y")
    return {
        "zy_y_specificity": zy_y["acc"] - zy_a["acc"],
        "za_a_specificity": za_a["acc"] - za_y["acc"],
        "zy_y_specificity_cc": zy_y["acc_cc"] - zy_a["acc_cc"],
        "za_a_specificity_cc": za_a["acc_cc"] - za_y["acc_cc"],
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


@register_metric("zay_activity")
def zay_activity(inputs: EvalInputs) -> dict[str, float]:
    if "zay" not in inputs.score_latents:
        return {}
    zay = inputs.score_latents["zay"]
    n_active = active_dims(zay)
    out = {
        "zay_active_dims": float(n_active),
        "zay_active_fraction": n_active / zay.shape[1],
        "zay_collapsed": float(n_active == 0),
    }
    if "zay" in inputs.kl:
        out["zay_kl"] = inputs.kl["zay"]
    return out


@register_metric("zay_interaction")
def zay_interaction(inputs: EvalInputs) -> dict[str, float]:
    if "zay" not in inputs.score_latents:
        return {}
    y_p, a_p = inputs.probe("zay", "y"), inputs.probe("zay", "a")
    out = {"zay_label_leakage": (max(0.0, y_p["acc_cc"]) + max(0.0, a_p["acc_cc"])) / 2.0}
    ci = coinformation(
        inputs.fit_latents["zay"], inputs.fit_factors["y"], inputs.fit_factors["a"],
        inputs.score_latents["zay"], inputs.score_factors["y"], inputs.score_factors["a"],
    )
    out["zay_coinformation"] = ci["coinformation"]
    out["zay_mi_y"] = ci["mi_z_y"]
    out["zay_mi_y_given_a"] = ci["mi_z_y_given_a"]
    if inputs.interaction_factor:
        content = inputs.probe("zay", inputs.interaction_factor)["acc_cc"]
    else:  # no ground truth: synergy relative to what a leaves unknown about y
        content = -ci["coinformation"] / ci["h_y_given_a"] if ci["h_y_given_a"] > 0 else 0.0
    out["zay_interaction_content"] = float(np.clip(content, 0.0, 1.0))
    return out


def combined_score(values: dict[str, float]) -> float:
    """Geometric mean of the parts that a disentangled zay must all get right.

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
    values: dict[str, float] = {}
    for name in ("specificity", "zay_activity", "zay_interaction", "nonlinear_dependence"):
        values.update(inputs.result(name))
    if "zay" not in inputs.score_latents:
        return {}
    return {"disentanglement_score": combined_score(values)}


def evaluate_latents(inputs: EvalInputs, names: list[str] | None = None) -> dict[str, float]:
    """Run the named metrics (all by default) and merge their flat dicts."""
    out: dict[str, float] = {}
    for name in names or metric_names():
        out.update(inputs.result(name))
    return {k: float(v) for k, v in out.items()}


def correlation_matrices(latents: dict[str, np.ndarray]) -> dict[str, object]:
    """Group-level mean |r| (off-diagonal within a group) and the per-dimension |r| matrix."""
    groups = list(latents)
    group_matrix = np.zeros((len(groups), len(groups)))
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            r = abs_correlation_matrix(latents[gi], latents[gj])
            if i == j:
                d = r.shape[0]
                group_matrix[i, j] = (r.sum() - np.trace(r)) / (d * d - d) if d > 1 else 0.0
            else:
                group_matrix[i, j] = r.mean()
    stacked = np.concatenate([latents[g] for g in groups], 1)
    labels = [f"{g}[{k}]" for g in groups for k in range(latents[g].shape[1])]
    return {
        "groups": groups,
        "group_matrix": group_matrix.round(6).tolist(),
        "dim_labels": labels,
        "dim_matrix": abs_correlation_matrix(stacked, stacked).round(4).tolist(),
    }

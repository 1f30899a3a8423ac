"""Probes: how well a factor is read from a latent group, fit on one split and scored on
another.

Discrete factors: a standardised logistic regression (accuracy, chance level,
chance-corrected accuracy, cross-entropy); continuous ones: a ridge regression on
standardised features (R^2). ``ProbeBackend`` names the implementation, passed in by the
caller (``EvalInputs.probes``), never set globally: ``torch`` (``_probes_torch``: the
same objectives solved by L-BFGS in float64, batched over problems, on a device; every
trial's) or ``sklearn`` (scikit-learn, the reference they agree with within 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ridge penalty of the continuous-factor probe (on standardised features)
RIDGE_ALPHA = 1.0
#: implementations of the probes
PROBE_BACKENDS = ("sklearn", "torch")


@dataclass(frozen=True)
class ProbeBackend:
    """Which implementation fits the probes, and on which torch device."""

    name: str = "torch"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.name not in PROBE_BACKENDS:
            raise ValueError(f"unknown probe backend {self.name!r}; choose "
                             f"{' or '.join(PROBE_BACKENDS)}")


def is_discrete(values: np.ndarray) -> bool:
    """Integer (or boolean) factors are discrete; float factors are continuous."""
    return bool(np.issubdtype(values.dtype, np.integer) or values.dtype == bool)


def chance_level(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent label."""
    return float(np.bincount(labels).max() / len(labels))


def chance_corrected(acc: float, chance: float) -> float:
    """(acc - chance) / (1 - chance): 0 at chance, 1 at perfect (may leave [0, 1])."""
    return (acc - chance) / (1.0 - chance) if chance < 1.0 else 0.0


def _logistic_scores(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray,
                     y_score: np.ndarray, c: float, backend: ProbeBackend
                     ) -> tuple[float, float]:
    """Accuracy and cross-entropy (nats) of a logistic probe, from ``backend``."""
    if backend.name == "torch":
        from trainer.metrics._probes_torch import logistic_scores

        return logistic_scores([(x_fit, y_fit, x_score, y_score)], c=c,
                               device=backend.device)[0]
    model = _fit_logistic(x_fit, y_fit, c)
    proba, classes = model.predict_proba(x_score), model.classes_
    return (float((classes[proba.argmax(1)] == y_score).mean()),
            cross_entropy(proba, classes, y_score))


def _fit_logistic(x_fit: np.ndarray, y_fit: np.ndarray, c: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=c))
    model.fit(x_fit, y_fit)
    return model


def cross_entropy(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(y) in nats; labels unseen when fitting get the floor probability."""
    order = np.argsort(classes, kind="stable")
    pos = np.clip(np.searchsorted(classes[order], y), 0, max(len(classes) - 1, 0))
    col = order[pos]
    seen = classes[col] == y
    p = np.where(seen, proba[np.arange(len(y)), col], 0.0)
    return float(-np.log(np.clip(p, 1e-6, 1.0)).mean())


def uninformative(x_fit: np.ndarray, y_fit: np.ndarray) -> bool:
    return len(np.unique(y_fit)) < 2 or x_fit.shape[1] == 0 or bool(
        np.all(x_fit.std(0) < 1e-12))


def probe_scores(
    x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray,
    *, c: float = 1.0, backend: ProbeBackend = ProbeBackend(),
) -> dict[str, float]:
    """Fit a standardised logistic-regression probe on one split, score it on another.

    Returns accuracy, chance level, chance-corrected accuracy and cross-entropy (nats).
    A constant target or a constant latent gives the chance-level predictor.
    """
    chance = chance_level(y_score)
    if uninformative(x_fit, y_fit):
        classes, counts = np.unique(y_fit, return_counts=True)
        prior = (counts + 1.0) / (counts.sum() + len(classes))
        pred = np.full(len(y_score), classes[counts.argmax()])
        proba = np.broadcast_to(prior, (len(y_score), len(classes)))
        acc = float((pred == y_score).mean())
        ce = cross_entropy(proba, classes, y_score)
    else:
        acc, ce = _logistic_scores(x_fit, y_fit, x_score, y_score, c, backend)
    return {"acc": acc, "chance": chance, "acc_cc": chance_corrected(acc, chance), "ce": ce}


def regression_scores(
    x_fit: np.ndarray, t_fit: np.ndarray, x_score: np.ndarray, t_score: np.ndarray,
    *, alpha: float = RIDGE_ALPHA, backend: ProbeBackend = ProbeBackend(),
) -> dict[str, float]:
    """Ridge probe on standardised features, fit on one split; R^2 on the other."""
    t_fit = t_fit.astype(np.float64)
    t_score = t_score.astype(np.float64)
    ss_tot = float(((t_score - t_score.mean()) ** 2).sum())
    if ss_tot <= 1e-12:
        return {"r2": 0.0}
    if x_fit.shape[1] == 0 or np.all(x_fit.std(0) < 1e-12):
        pred = np.full_like(t_score, t_fit.mean())
    elif backend.name == "torch":
        from trainer.metrics._probes_torch import ridge_probes

        pred = ridge_probes([(x_fit, t_fit, x_score)], alpha=alpha, device=backend.device)[0]
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
    return cross_entropy(np.broadcast_to(prior, (len(y_score), len(classes))), classes, y_score)

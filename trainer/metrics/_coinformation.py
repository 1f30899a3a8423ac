"""Co-information I(zay; y; a) from posterior samples of zay: synergy (negative) says zay
holds what y and a say only together."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from trainer.metrics._inputs import EvalInputs
from trainer.metrics._probes import (
    ProbeBackend,
    cross_entropy,
    label_entropy,
    probe_scores,
    uninformative,
)
from trainer.metrics._registry import register_metric


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
    return cross_entropy(proba, classes, lab_held)


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
    if rank < 1 or uninformative(z_fit, labels_fit) or smallest_fold <= n_classes:
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
    *, seed: int = 0, backend: ProbeBackend = ProbeBackend(),  # noqa: B008 (frozen)
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
        ce = probe_scores(t_fit, lab_fit, t_score, lab_score, backend=backend)["ce"]
        return max(0.0, label_entropy(lab_fit, lab_score) - ce)

    mi_zy, mi_za, mi_joint = mi(y_fit, y_score), mi(a_fit, a_score), mi(joint_fit, joint_score)
    onehot_fit, onehot_score = np.eye(n_dom)[a_fit], np.eye(n_dom)[a_score]
    h_y_given_a = probe_scores(onehot_fit, y_fit, onehot_score, y_score, backend=backend)["ce"]
    mi_zy_given_a = max(0.0, mi_joint - mi_za)
    return {
        "mi_z_y": mi_zy,
        "mi_z_a": mi_za,
        "mi_z_ya": mi_joint,
        "mi_z_y_given_a": mi_zy_given_a,
        "coinformation": mi_zy - mi_zy_given_a,
        "h_y_given_a": h_y_given_a,
    }


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
            backend=inputs.probes,
        )
    return {"zay_coinformation": ci["coinformation"], "zay_mi_y": ci["mi_z_y"],
            "zay_mi_y_given_a": ci["mi_z_y_given_a"], "zay_h_y_given_a": ci["h_y_given_a"]}

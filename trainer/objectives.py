"""Metric names and optimisation directions, declared once.

Plain Python (no torch): ``search`` and ``analysis`` both import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class MetricSpec:
    """A final metric of a run, and which way is better."""

    name: str
    direction: Direction
    description: str


_CKA = "debiased linear CKA (Kornblith et al. 2019; unbiased HSIC of Song et al. 2012)"

_SPECS = [
    MetricSpec("task_accuracy", "maximize", "accuracy of q(y|zy) on the validation split"),
    MetricSpec("acc_y_val", "maximize", "accuracy of q(y|zy), validation split"),
    MetricSpec("acc_y_test", "maximize", "accuracy of q(y|zy), test split (unseen sources)"),
    MetricSpec("acc_y_test_domain", "maximize",
               "accuracy of q(y|zy) on the held-out domain (its own sources)"),
    MetricSpec("acc_y_val_domain", "maximize",
               "accuracy of q(y|zy) on the validation domain (--val_domain: held out of "
               "training, its own sources; camelyon17: WILDS' OOD val hospital)"),
    MetricSpec("zy_zay_correlation", "minimize",
               f"{_CKA} of zy and zay on posterior samples, clipped to [0, 1]; sees any "
               "rotated or permuted copy, not one drowned in zay's posterior noise"),
    MetricSpec("za_zay_correlation", "minimize",
               f"{_CKA} of za and zay on posterior samples, clipped to [0, 1]"),
    MetricSpec("zay_independence_score", "maximize",
               "1 - (zy_zay_correlation + za_zay_correlation) / 2 (the method's score), "
               "on posterior samples"),
    MetricSpec("zay_independence_score_means", "maximize",
               "zay_independence_score on the encoder means (a diagnostic)"),
    MetricSpec("zy_zay_correlation_means", "minimize",
               "zy_zay_correlation on the encoder means (a diagnostic)"),
    MetricSpec("za_zay_correlation_means", "minimize",
               "za_zay_correlation on the encoder means (a diagnostic)"),
    MetricSpec("zy_zay_correlation_published", "minimize",
               "published: |Pearson r| of the flattened arrays (matched dimensions only), "
               "on posterior samples"),
    MetricSpec("za_zay_correlation_published", "minimize",
               "published: |Pearson r| of the flattened arrays (matched dimensions only)"),
    MetricSpec("zay_independence_score_published", "maximize",
               "published: 1 - mean of the two *_published correlations"),
    MetricSpec("zay_independence_score_allpairs", "maximize",
               "1 - mean |Pearson r| over all dimension pairs (dilutes a copy by ~1/d)"),
    MetricSpec("zy_zay_hsic", "minimize",
               "normalised unbiased RBF HSIC of zy and zay, on one posterior draw per input"),
    MetricSpec("za_zay_hsic", "minimize",
               "normalised unbiased RBF HSIC of za and zay, on one posterior draw per input"),
    MetricSpec("zay_nonlinear_independence", "maximize", "1 - mean of the two HSIC values"),
    MetricSpec("zay_nonlinear_independence_means", "maximize",
               "zay_nonlinear_independence on the encoder means (a diagnostic)"),
    MetricSpec("zy_y_specificity", "maximize", "probe acc(y from zy) - acc(a from zy)"),
    MetricSpec("za_a_specificity", "maximize", "probe acc(a from za) - acc(y from za)"),
    MetricSpec("zy_y_specificity_cc", "maximize",
               "chance-corrected zy_y_specificity, each accuracy clipped to [0, 1] first"),
    MetricSpec("za_a_specificity_cc", "maximize",
               "chance-corrected za_a_specificity, each accuracy clipped to [0, 1] first"),
    MetricSpec("zay_active_dims", "maximize",
               "zay dims whose signal stands above their posterior noise "
               "(var over inputs of the mean > 0.01 x mean posterior variance)"),
    MetricSpec("zay_rate", "maximize",
               "upper bound on I(x; zay), nats: sum over dims of "
               "1/2 [log(Var mu + E sigma^2) - E log sigma^2]"),
    MetricSpec("zay_kl", "maximize", "mean KL(q(zay|x) || p(zay|y,a)), nats"),
    MetricSpec("zay_collapsed", "minimize",
               "1 when zay_rate < 0.01 nats per dimension: zay transmits (almost) nothing"),
    MetricSpec("zay_label_leakage", "minimize",
               "max over y and a of the chance-corrected probe accuracy from posterior "
               "samples of zay"),
    MetricSpec("zay_interaction_content", "maximize",
               "chance-corrected probe accuracy of the interaction factor from posterior "
               "samples of zay"),
    MetricSpec("zay_coinformation", "minimize",
               "I(zay;y;a) = I(zay;y) - I(zay;y|a), nats; negative means synergy"),
    MetricSpec("dci_disentanglement", "maximize",
               "group-level DCI disentanglement (Eastwood & Williams 2018) of the factor matrix"),
    MetricSpec("dci_completeness", "maximize", "group-level DCI completeness"),
    MetricSpec("dci_informativeness", "maximize",
               "mean over factors of how well each is read from its own group"),
    MetricSpec("disentanglement_score_label_only", "maximize",
               "geometric mean of specificities, non-leakage, independence and interaction "
               "content; 0 for a collapsed zay"),
    MetricSpec("disentanglement_score", "maximize",
               "with ground truth: mean over factors of exclusivity (read from posterior "
               "samples of its own group minus the best other group); else the label-only "
               "score; 0 for a collapsed zay"),
]

METRICS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}

#: Objective metrics the search may optimise for the disentanglement side.
DISENTANGLEMENT_OBJECTIVES = (
    "zay_independence_score",
    "disentanglement_score",
    "zay_nonlinear_independence",
    "zay_label_leakage",
)
TASK_OBJECTIVE = "task_accuracy"
DEFAULT_DISENTANGLEMENT_OBJECTIVE = "zay_independence_score"
COLLAPSE_FLAG = "zay_collapsed"


def direction(name: str) -> Direction:
    """Optimisation direction of a registered metric."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name].direction

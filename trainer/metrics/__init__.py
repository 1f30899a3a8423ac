"""Disentanglement metrics, one module per family (in the spirit of disentanglement_lib's
``evaluation/metrics/``): each registered metric has the same signature,
``metric(inputs) -> dict[str, float]``, and is a thin wrapper over pure functions of
arrays.

- ``_inputs``: ``EvalInputs`` (the latents and factors of two held-out splits) and the
  probes fit on them; ``fit_probes`` fits many models' probes in one batch.
- ``_probes`` and ``_probes_torch``: the probes (``ProbeBackend`` is passed in).
- ``_dependence``: CKA, HSIC and the published correlations between groups (on
  posterior samples; ``*_means`` on the means).
- ``_activity``: information rate, active dimensions, collapse.
- ``_coinformation``: I(zay; y; a).
- ``_factor_matrix``: the factor x group matrix, exclusivity, DCI.
- ``_scores``: task accuracy, specificities, leakage, interaction content and the
  headline ``disentanglement_score``.
- ``_proxies``: the cheap per-epoch stand-ins that ASHA compares.

**What the decoder receives.** Every probe (the factor matrix, exclusivity, DCI,
specificity, leakage, interaction content, co-information) reads posterior samples
z = mu + sigma * eps, never the encoder means alone: a mean that varies far below its
posterior noise carries nothing the decoder can use, yet a probe on standardised means
reads it perfectly. A probe is fit on one draw per input of the fit split and scored on
several draws per input of the score split (``EvalInputs.score_draws``); the draws'
scores are averaged (averaging the draws themselves would shrink the noise the decoder
sees). The means-based entries stay as ``*_means`` diagnostics. Activity and collapse are
judged by information, not by the spread of the means. Latents given without posterior
scales are taken as deterministic (the samples are the means). Dependence between
groups (CKA, HSIC, the published correlations) reads posterior samples too, each group's
noise its own; the means-based values stay as ``*_means``.
"""

from __future__ import annotations

from trainer.metrics._activity import (
    ACTIVE_RELATIVE_VARIANCE,
    ACTIVE_SNR,
    COLLAPSE_RATE_PER_DIM,
    active_dims,
    information_rate,
    information_rate_torch,
    is_collapsed,
    posterior_snr,
)
from trainer.metrics._coinformation import coinformation, discriminant_projection
from trainer.metrics._dependence import (
    HSIC_MAX_SAMPLES,
    abs_correlation_matrix,
    correlation_matrices,
    linear_cka,
    linear_dependence,
    mean_abs_correlation,
    mean_squared_canonical_correlation,
    normalised_hsic,
    published_correlation,
)
from trainer.metrics._factor_matrix import exclusivity_scores, group_dci
from trainer.metrics._inputs import (
    MAX_DRAWS_PER_INPUT,
    SCORED_DRAWS,
    EvalInputs,
    fit_probes,
)
from trainer.metrics._probes import (
    RIDGE_ALPHA,
    ProbeBackend,
    chance_corrected,
    chance_level,
    cross_entropy,
    is_discrete,
    label_entropy,
    probe_scores,
    regression_scores,
)
from trainer.metrics._proxies import epoch_proxies, ridge_readout
from trainer.metrics._registry import evaluate_latents, metric_names, register_metric
from trainer.metrics._scores import (
    combined_score,
    disentanglement_score,
    probe_accuracy,
    specificity,
    task_accuracy,
    zay_interaction,
)

__all__ = [
    "ACTIVE_RELATIVE_VARIANCE", "ACTIVE_SNR", "COLLAPSE_RATE_PER_DIM", "HSIC_MAX_SAMPLES",
    "MAX_DRAWS_PER_INPUT", "RIDGE_ALPHA", "SCORED_DRAWS", "EvalInputs", "ProbeBackend",
    "abs_correlation_matrix", "active_dims", "chance_corrected", "chance_level",
    "coinformation", "combined_score", "correlation_matrices", "cross_entropy",
    "discriminant_projection", "disentanglement_score", "epoch_proxies", "evaluate_latents",
    "exclusivity_scores", "fit_probes", "group_dci", "information_rate",
    "information_rate_torch", "is_collapsed", "is_discrete", "label_entropy", "linear_cka",
    "linear_dependence", "mean_abs_correlation", "mean_squared_canonical_correlation",
    "metric_names", "normalised_hsic", "posterior_snr", "probe_accuracy", "probe_scores",
    "published_correlation", "register_metric", "regression_scores", "ridge_readout",
    "specificity",
    "task_accuracy", "zay_interaction",
]

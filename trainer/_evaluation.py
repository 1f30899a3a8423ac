"""End-of-run evaluation: posteriors of held-out splits, then the metrics.

The metrics read the encoder means and posterior scales of every group (the probes read
posterior samples drawn from them: what the decoder receives). Probes are fit on the
validation split and scored on the test split; splits are by
source instance (``trainer._data.make_splits``), so no source image is on both sides.
Task accuracy is reported on validation, test and, when a domain is held out, on that
unseen domain as its own metric ``acc_y_test_domain``; with a validation domain
(``--val_domain``) on that one too, as ``acc_y_val_domain`` (out-of-domain validation:
what honest model selection reads, never the test domain). The analysis keeps each
held-out domain's confusion matrix (``confusion``): which classes an unseen domain turns
into which. Where the data set names its factors' groups, the factor x group matrix is
measured (``trainer.metrics``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainer._config import RunConfig
from trainer._data import DataBundle
from trainer._model import StagedVAE, gaussian_kl
from trainer.metrics import (
    EvalInputs,
    ProbeBackend,
    correlation_matrices,
    evaluate_latents,
    fit_probes,
)

FIT_SPLIT, SCORE_SPLIT = "val", "test"


@torch.no_grad()
def _split_arrays(
    model: StagedVAE, data: DataBundle, split: str, max_samples: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray],
           dict[str, float], float]:
    """Posterior means and scales, factors, mean KL per group and head accuracy of a split."""
    model.eval()
    idx = data.splits[split][:max_samples]
    x, y, a = data.x[idx], data.y[idx], data.a[idx]
    latents: dict[str, np.ndarray] = {}
    stds: dict[str, np.ndarray] = {}
    kl: dict[str, float] = {}
    for g in model.groups:
        mu, logvar = model.encode(x, g)
        mu_p, logvar_p = model.prior_params(g, y, a)
        kl[g] = float(gaussian_kl(mu, logvar, mu_p, logvar_p).mean())
        latents[g] = mu.cpu().numpy().astype(np.float64)
        stds[g] = (0.5 * logvar).exp().cpu().numpy().astype(np.float64)
    acc = float((model.predict_y(x) == y).float().mean())
    idx_np = idx.cpu().numpy()
    factors = {"y": y.cpu().numpy(), "a": a.cpu().numpy()}
    for name, values in data.factors.items():  # discrete and continuous ground truth
        factors[name] = values[idx_np]
    return latents, stds, factors, kl, acc


@torch.no_grad()
def _held_out(model: StagedVAE, data: DataBundle, split: str, max_samples: int
              ) -> tuple[float, list[list[int]]]:
    """The class head's accuracy on a held-out domain split, and its confusion matrix
    (rows: true class, columns: predicted): how the model errs on an unseen domain."""
    model.eval()
    idx = data.splits[split][:max_samples]
    y, pred = data.y[idx].cpu(), model.predict_y(data.x[idx]).cpu()
    k = data.n_classes
    counts = torch.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    return float((pred == y).float().mean()), counts.tolist()


def evaluate(model: StagedVAE, data: DataBundle, cfg: RunConfig) -> dict[str, Any]:
    """All final metrics of a trained model, plus the tables the plots draw."""
    inputs = eval_inputs(model, data, cfg)
    fit_probes([inputs])
    return evaluate_inputs(inputs, data, model.groups)


def eval_inputs(model: StagedVAE, data: DataBundle, cfg: RunConfig) -> EvalInputs:
    """What the metrics read of a trained model: posteriors and factors of the two splits.

    Separate from ``evaluate_inputs`` so that several models' probes can be fit in one
    batch (``trainer.metrics.fit_probes``) before their metrics are computed.
    """
    n = cfg.eval_max_samples
    fit_latents, fit_std, fit_factors, _, acc_val = _split_arrays(model, data, FIT_SPLIT, n)
    score_latents, score_std, score_factors, kl, acc_test = _split_arrays(
        model, data, SCORE_SPLIT, n)
    task = {"acc_y_val": acc_val, "acc_y_test": acc_test}
    confusion = {}
    for split in ("test_domain", "val_domain"):
        if data.split_size(split):
            task[f"acc_y_{split}"], confusion[split] = _held_out(model, data, split, n)
    return EvalInputs(
        fit_latents=fit_latents, fit_factors=fit_factors,
        score_latents=score_latents, score_factors=score_factors,
        interaction_factor=data.interaction_factor, factor_groups=dict(data.factor_groups),
        kl=kl, task=task, confusion=confusion, seed=cfg.seed, fit_std=fit_std, score_std=score_std,
        # every trial's probes: the torch ones, on the device the model trained on
        probes=ProbeBackend("torch", str(next(model.parameters()).device)),
    )


def evaluate_inputs(inputs: EvalInputs, data: DataBundle, groups: tuple[str, ...]
                    ) -> dict[str, Any]:
    """The metrics and tables of ``evaluate`` from its inputs."""
    metrics = evaluate_latents(inputs)
    score_latents = inputs.score_latents
    fit_factors, score_factors = inputs.fit_factors, inputs.score_factors
    factors = ["y", "a"] + ([data.interaction_factor] if data.interaction_factor else [])
    analysis = {
        "metrics": metrics,
        # what the decoder receives (its first draw), as the dependence metrics read it
        "correlations": correlation_matrices(
            {g: inputs.received(g, "score")[:len(z)] for g, z in score_latents.items()}),
        "probe_accuracy": {
            g: {f: metrics[f"probe_acc_{g}_{f}"] for f in factors} for g in groups
        },
        "splits": {"probe_fit": FIT_SPLIT, "probe_score": SCORE_SPLIT,
                   "n_fit": len(fit_factors["y"]), "n_score": len(score_factors["y"])},
    }
    if inputs.confusion:  # held-out domain splits: rows true class, columns predicted
        analysis["confusion"] = inputs.confusion
    return analysis

"""The combined scores: task accuracy, specificities, what zay holds of the labels, and
the headline ``disentanglement_score``."""

from __future__ import annotations

import numpy as np

from trainer.metrics._inputs import EvalInputs
from trainer.metrics._registry import register_metric


@register_metric("task_accuracy")
def task_accuracy(inputs: EvalInputs) -> dict[str, float]:
    out = dict(inputs.task)
    if "acc_y_val" in out:
        out["task_accuracy"] = out["acc_y_val"]
    return out


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

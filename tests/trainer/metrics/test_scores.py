"""Known answers for the combined scores: the oracle at the top, copies, noise, collapse,
an untrained model and label-only data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.metrics.known import (
    FACTOR_GROUPS,
    known_inputs,
    scores,
)
from trainer import DataConfig, RunConfig, load_dataset
from trainer._evaluation import evaluate
from trainer._fit import build_model
from trainer.metrics import (
    EvalInputs,
    combined_score,
    evaluate_latents,
    probe_scores,
)


def test_oracle_latents_score_at_the_top(oracle):
    m = oracle
    assert m["disentanglement_score"] >= 0.9
    for f, g in FACTOR_GROUPS.items():
        assert m[f"factor_{f}_from_{g}"] >= 0.9
        assert m[f"exclusivity_{f}"] >= 0.85
    assert m["dci_disentanglement"] >= 0.9 and m["dci_completeness"] >= 0.9
    assert m["dci_informativeness"] >= 0.9
    assert m["zy_y_specificity_cc"] > 0.9 and m["za_a_specificity_cc"] > 0.9
    assert m["zy_zay_correlation"] < 0.05 and m["za_zay_correlation"] < 0.05
    assert m["zay_independence_score"] > 0.95
    assert m["zay_nonlinear_independence"] > 0.9
    assert m["zay_interaction_content"] > 0.95
    assert m["zay_label_leakage"] < 0.05
    assert m["zay_collapsed"] == 0.0
    assert m["task_accuracy"] == 0.9


def test_zay_holding_s_and_a_copy_of_y_scores_clearly_below_s_alone(oracle):
    leaky = scores(known_inputs("s_plus_y"))
    assert leaky["zay_label_leakage"] >= 0.9  # the max over y and a, not their mean
    assert leaky["exclusivity_y"] <= 0.1  # y is as readable from zay as from zy
    assert leaky["disentanglement_score"] <= oracle["disentanglement_score"] - 0.2


def test_label_leakage_is_the_max_over_labels():
    m = evaluate_latents(known_inputs("y_only"), ["zay_interaction"])
    assert m["zay_label_leakage"] >= 0.9  # a mean over y and a would read 0.5


def test_never_trained_model_scores_low(untrained):
    _, m = untrained
    assert m["disentanglement_score"] == 0.0  # zay collapsed (below)
    # its encoder means hold colour (s) in every latent, but under posterior noise of unit
    # scale (log-variances start near 0): the decoder receives nothing of it
    assert min(m[f"factor_s_from_{g}_means"] for g in ("zy", "za", "zay", "zx")) > 0.5
    assert max(m[f"factor_s_from_{g}"] for g in ("zy", "za", "zay", "zx")) < 0.1
    for g in ("zy", "za", "zay", "zx"):
        assert m[f"{g}_collapsed"] == 1.0 and m[f"{g}_active_dims"] == 0.0
        assert m[f"{g}_rate"] < 0.01 * 16


def test_four_groups_the_same_random_projection_of_x_score_low(digits):
    _, data = digits
    proj = np.random.default_rng(0).normal(size=(int(np.prod(data.input_shape)), 16))

    def split(name):
        idx = data.splits[name].numpy()
        z = data.x[idx].flatten(1).numpy() @ proj
        f = {"y": data.y[idx].numpy(), "a": data.a[idx].numpy()}
        f.update({k: v[idx] for k, v in data.factors.items()})
        return {g: z for g in ("zy", "za", "zay", "zx")}, f

    (fl, ff), (sl, sf) = split("val"), split("test")
    m = evaluate_latents(EvalInputs(fl, ff, sl, sf, interaction_factor="s",
                                    factor_groups=data.factor_groups),
                         ["factor_matrix", "disentanglement_score"])
    # four identical groups: each factor is read as well from another group as from its
    # own, so no factor is exclusive to one
    assert m["disentanglement_score"] == m["factor_exclusivity"] == 0.0
    assert m["factor_s_from_zay"] > 0.5  # s is there, just not only there


def test_posterior_noise_far_below_the_signal_keeps_the_oracle_scores(oracle):
    inputs = known_inputs()
    for split in ("fit", "score"):
        latents = inputs.fit_latents if split == "fit" else inputs.score_latents
        std = {g: np.full_like(v, 1e-3) for g, v in latents.items()}
        (inputs.fit_std if split == "fit" else inputs.score_std).update(std)
    m = scores(inputs)
    for key in ("disentanglement_score", "exclusivity_s", "factor_s_from_zay",
                "zay_interaction_content", "zay_label_leakage"):
        assert m[key] == pytest.approx(oracle[key], abs=0.01)
    assert m["zay_collapsed"] == 0.0


def test_collapsed_zay_cannot_win():
    collapsed = scores(known_inputs("zeros"))
    assert collapsed["zay_collapsed"] == 1.0
    assert collapsed["zay_independence_score"] == pytest.approx(1.0)  # trivially
    assert collapsed["disentanglement_score"] == 0.0
    assert collapsed["disentanglement_score_label_only"] == 0.0


def test_noise_zay_holds_no_interaction_and_does_not_win(oracle):
    noise = scores(known_inputs("noise"))
    assert noise["zay_collapsed"] == 0.0
    assert noise["zay_interaction_content"] < 0.1
    assert noise["exclusivity_s"] < 0.1
    assert noise["disentanglement_score"] <= oracle["disentanglement_score"] - 0.2


def test_label_only_data_keeps_the_combined_score():
    m = scores(known_inputs(factor_groups={}))
    assert "factor_exclusivity" not in m
    assert m["disentanglement_score"] == m["disentanglement_score_label_only"] > 0.8


def test_chance_corrected_specificity_never_exceeds_one():
    rng = np.random.default_rng(2)
    n = 600
    y_fit, y_score = rng.integers(0, 4, n), rng.integers(0, 4, n)
    # a's majority class differs between the splits: the a-probe is worse than chance
    a_fit = np.where(rng.random(n) < 0.8, 0, 1)
    a_score = np.where(rng.random(n) < 0.8, 1, 0)
    zy_fit, zy_score = np.eye(4)[y_fit] * 3, np.eye(4)[y_score] * 3
    zy_fit[:, 0] += 2.0 * a_fit  # zy reads a "perfectly" on fit, backwards on score
    zy_score[:, 0] += 2.0 * (1 - a_score)
    a_probe = probe_scores(zy_fit, a_fit, zy_score, a_score)
    # every a read backwards: accuracy 0, far below chance (the majority class, 80%)
    assert a_probe["acc"] == 0.0 and a_probe["acc_cc"] < -4  # the old bug: 1 - (-4.1)
    lat = lambda z: {"zy": z, "za": z, "zay": z, "zx": z}  # noqa: E731
    inputs = EvalInputs(lat(zy_fit), {"y": y_fit, "a": a_fit},
                        lat(zy_score), {"y": y_score, "a": a_score})
    m = evaluate_latents(inputs, ["specificity"])
    # y is read perfectly (chance-corrected 1) and a's negative score is clipped to 0
    # before the difference: zy's specificity is 1 - 0, za's (the same latents) 0 - 1
    assert m["zy_y_specificity"] == m["zy_y_specificity_cc"] == 1.0
    assert m["za_a_specificity"] == m["za_a_specificity_cc"] == -1.0


def test_combined_score_zero_when_any_part_fails():
    parts = dict(zy_y_specificity_cc=0.9, za_a_specificity_cc=0.9, zay_label_leakage=0.0,
                 zay_nonlinear_independence=0.9, zay_interaction_content=0.9, zay_collapsed=0.0)
    assert combined_score(parts) == pytest.approx(0.9 ** 0.8, rel=1e-9)
    assert combined_score(parts | {"zay_interaction_content": 0.0}) == 0.0
    assert combined_score(parts | {"zay_collapsed": 1.0}) == 0.0


def test_held_out_domain_accuracy_is_its_own_metric():
    """A class head that always answers class k is right on exactly the held-out domain's
    images of class k, and on the other splits' likewise (k: the held-out domain's most
    frequent class)."""
    cfg = RunConfig().replace(max_samples=120, test_domain=3, device="cpu")
    data = load_dataset(DataConfig(max_samples=120, test_domain=3), 0)

    def labels(split: str) -> torch.Tensor:
        return data.y[data.splits[split][:cfg.eval_max_samples]]

    k = int(torch.bincount(labels("test_domain")).argmax())
    torch.manual_seed(0)
    model = build_model(cfg, data)
    with torch.no_grad():
        model.head_y.weight.zero_()
        model.head_y.bias.copy_(torch.eye(data.n_classes)[k])
    m = evaluate(model, data, cfg)["metrics"]
    share = {split: float((labels(split) == k).float().mean())
             for split in ("test_domain", "val", "test")}
    assert 0 < share["test_domain"] < 1
    assert m["acc_y_test_domain"] == share["test_domain"]
    assert m["acc_y_val"] == m["task_accuracy"] == share["val"]
    assert m["acc_y_test"] == share["test"]

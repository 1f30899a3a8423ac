"""Known answers for the evaluation metrics.

Latents are built with known content (an oracle holding exactly its factor, copies,
noise, constants), or come from a never-trained model, and expected scores follow from
that construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer import DataConfig, RunConfig, load_dataset
from trainer._epoch_metrics import epoch_proxies
from trainer._evaluation import evaluate
from trainer._fit import build_model, validate_epoch
from trainer._metrics import (
    EvalInputs,
    abs_correlation_matrix,
    coinformation,
    combined_score,
    evaluate_latents,
    exclusivity_scores,
    group_dci,
    mean_abs_correlation,
    metric_names,
    probe_scores,
)

N = 800
FACTOR_GROUPS = {"y": "zy", "a": "za", "s": "zay", "hue_residual": "zx"}


def _scores(inputs, names=None):
    """Every metric but the (slower) co-information, which has its own tests."""
    return evaluate_latents(inputs, names or [n for n in metric_names() if n != "coinformation"])


def _factors(rng, n=N):
    y = rng.integers(0, 10, n)
    a = rng.integers(0, 6, n)
    return {"y": y, "a": a, "s": (y % 2) ^ (a % 2),
            "hue_residual": rng.normal(0.0, 0.05, n).astype(np.float32)}


def _latents(rng, f, zay_mode="interaction"):
    """zy holds y, za holds a, zay holds s (or a given pattern), zx holds the residual."""
    n = len(f["y"])
    noise = lambda d: 0.3 * rng.normal(size=(n, d))  # noqa: E731
    lat = {
        "zy": np.eye(10)[f["y"]] * 3 + noise(10),
        "za": np.eye(6)[f["a"]] * 3 + noise(6),
        "zx": np.concatenate([f["hue_residual"][:, None] / 0.05 + 0.1 * rng.normal(size=(n, 1)),
                              rng.normal(size=(n, 3))], 1),
    }
    s_dim = f["s"] * 3.0 + 0.3 * rng.normal(size=n)
    if zay_mode == "interaction":
        # one informative dimension; the other nearly constant
        lat["zay"] = np.stack([s_dim, 0.05 * rng.normal(size=n)], 1)
    elif zay_mode == "s_plus_y":
        lat["zay"] = np.concatenate([s_dim[:, None], lat["zy"]], 1)
    elif zay_mode == "y_only":
        lat["zay"] = lat["zy"].copy()
    elif zay_mode == "zeros":
        lat["zay"] = np.zeros((n, 4))
    elif zay_mode == "constant":
        lat["zay"] = np.full((n, 4), 3.7)
    elif zay_mode == "tiny_s":  # carries s at a scale of 1e-4: active, whatever its size
        lat["zay"] = 1e-4 * np.stack([s_dim, rng.normal(size=n)], 1) + 0.2
    elif zay_mode == "permuted_zy":
        lat["zay"] = lat["zy"][:, [3, 7, 0, 9, 1, 8, 2, 6, 4, 5]]
    elif zay_mode == "noise":
        lat["zay"] = rng.normal(size=(n, 4))
    return lat


def _inputs(zay_mode="interaction", seed=0, factor_groups=None, kl=None):
    rng = np.random.default_rng(seed)
    ff, sf = _factors(rng), _factors(rng)
    return EvalInputs(
        fit_latents=_latents(rng, ff, zay_mode), fit_factors=ff,
        score_latents=_latents(rng, sf, zay_mode), score_factors=sf,
        interaction_factor="s",
        factor_groups=FACTOR_GROUPS if factor_groups is None else factor_groups,
        task={"acc_y_val": 0.9, "acc_y_test": 0.88}, seed=seed, kl=kl or {},
    )


@pytest.fixture(scope="module")
def oracle():
    return _scores(_inputs())


@pytest.fixture(scope="module")
def digits():
    cfg = RunConfig().replace(max_samples=300, device="cpu", write_plots=False)
    return cfg, load_dataset(cfg.data, 0)


@pytest.fixture(scope="module")
def untrained(digits):
    cfg, data = digits
    torch.manual_seed(0)
    model = build_model(cfg, data)
    return model, evaluate(model, data, cfg)["metrics"]


def test_correlation_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 3))
    b = a @ rng.normal(size=(3, 4)) + rng.normal(size=(300, 4))
    expected = np.abs(np.corrcoef(a.T, b.T)[:3, 3:])
    assert np.allclose(abs_correlation_matrix(a, b), expected)
    assert mean_abs_correlation(a, b) == pytest.approx(expected.mean())


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
    leaky = _scores(_inputs("s_plus_y"))
    assert leaky["zay_label_leakage"] >= 0.9  # the max over y and a, not their mean
    assert leaky["exclusivity_y"] <= 0.1  # y is as readable from zay as from zy
    assert leaky["disentanglement_score"] <= oracle["disentanglement_score"] - 0.2


def test_label_leakage_is_the_max_over_labels():
    m = evaluate_latents(_inputs("y_only"), ["zay_interaction"])
    assert m["zay_label_leakage"] >= 0.9  # a mean over y and a would read 0.5


def test_never_trained_model_scores_low(untrained):
    _, m = untrained
    assert m["disentanglement_score"] <= 0.1
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
    assert m["disentanglement_score"] <= 0.3
    assert m["factor_s_from_zay"] > 0.5  # s is there, just not only there


def test_collapse_of_deterministic_latents_is_scale_free():
    for mode in ("zeros", "constant"):
        m = evaluate_latents(_inputs(mode), ["activity"])
        assert m["zay_collapsed"] == 1.0 and m["zay_active_dims"] == 0.0
    # latents given without posterior scales are what the decoder receives: carrying s at
    # a scale of 1e-4 is carrying it
    tiny = evaluate_latents(_inputs("tiny_s"), ["activity", "zay_interaction"])
    assert tiny["zay_collapsed"] == 0.0 and tiny["zay_interaction_content"] > 0.9


def _two_level(ratio, n=4000, sigma=1.0, seed=0, draws=None):
    """z = m (2s - 1) + sigma eps, s balanced exactly (chance 0.5), m = ratio * sigma."""
    s = np.arange(n) % 2
    mu = {"z": (ratio * sigma * (2 * s - 1.0))[:, None]}
    std = {"z": np.full((n, 1), sigma)}
    return EvalInputs(mu, {"s": s}, {"z": mu["z"].copy()}, {"s": s.copy()},
                      factor_groups={"s": "z"}, fit_std=std, score_std=dict(std),
                      seed=seed, draws=draws)


def _bayes_cc(ratio):
    """Best chance-corrected accuracy of s from z = m (2s - 1) + sigma eps: 2 Phi(m/sigma) - 1."""
    return math.erf(ratio / math.sqrt(2))


@pytest.mark.parametrize("ratio", [0.01, 0.1, 1.0, 3.0])
def test_probe_on_samples_reaches_the_bayes_accuracy_and_no_more(ratio):
    m = evaluate_latents(_two_level(ratio), ["factor_matrix", "activity"])
    # 4,000 scored inputs x 10 draws, all read right with the same chance p: the
    # chance-corrected accuracy has sd 2 sqrt(p (1 - p) / 40,000) <= 0.005, plus the fit's
    # threshold error, second order at the optimum; 0.02 is four sd
    assert m["factor_s_from_z"] == pytest.approx(max(_bayes_cc(ratio), 0.0), abs=0.02)
    assert m["factor_s_from_z_means"] == 1.0  # the means alone always separate s
    assert m["z_rate"] == pytest.approx(0.5 * math.log1p(ratio**2), rel=1e-9)
    # active when var(mu) / E[sigma^2] = ratio^2 is above 0.01 (0.1 sits on the line)
    if ratio != 0.1:
        assert m["z_active_dims"] == float(ratio > 0.1)
    assert m["z_collapsed"] == float(0.5 * math.log1p(ratio**2) < 0.01)


def test_means_far_below_unit_noise_are_collapsed():
    rng = np.random.default_rng(5)
    f = _factors(rng, 1000)
    fit = _latents(rng, f)
    score = _latents(rng, f)
    fit["zay"], score["zay"] = 1e-3 * fit["zay"], 1e-3 * score["zay"]  # s at 1e-3 scale
    unit = {g: np.ones_like(v) for g, v in score.items()}
    inputs = EvalInputs(fit, f, score, {k: v.copy() for k, v in f.items()},
                        interaction_factor="s", factor_groups=FACTOR_GROUPS,
                        fit_std={g: np.ones_like(v) for g, v in fit.items()}, score_std=unit,
                        kl={"zay": 0.5 * float((score["zay"] ** 2).sum(1).mean())})
    m = evaluate_latents(inputs, ["activity", "factor_matrix", "disentanglement_score"])
    assert m["zay_kl"] < 1e-4
    assert m["zay_collapsed"] == 1.0 and m["zay_active_dims"] == 0.0
    assert m["factor_s_from_zay_means"] > 0.9  # a standardised probe on means still reads it
    assert m["factor_s_from_zay"] < 0.05
    assert m["disentanglement_score"] == 0.0
    # the other groups carry their factors at 3 / 1 = 3 posterior sd: alive
    assert m["zy_collapsed"] == 0.0 and m["zy_active_dims"] >= 10


def test_rate_survives_a_conditional_prior_that_follows_the_posterior():
    # KL to a learned prior p(zay | y, a) can be ~0 while zay carries s: the flag must
    # not read that as collapse (what the rate bound is for)
    inputs = _two_level(3.0)
    inputs.kl["z"] = 0.0
    m = evaluate_latents(inputs, ["activity"])
    assert m["z_collapsed"] == 0.0 and m["z_kl"] == 0.0


def test_draw_noise_has_the_binomial_variance_and_falls_with_draws():
    # at m / sigma = 1 every input is read right with p = Phi(1): over seeds, the
    # accuracy of R draws on n inputs has sd sqrt(p (1 - p) / (n R)) (the fit's threshold
    # error adds a second-order term)
    n, p = 1000, 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert _two_level(1.0, n=n).score_draws == 40  # n R >= 40,000 by default
    assert _two_level(1.0, n=5000).score_draws == 8
    for draws in (1, 16):
        accs = [_two_level(1.0, n=n, seed=seed, draws=draws).probe("z", "s")["acc"]
                for seed in range(40)]
        expected = math.sqrt(p * (1 - p) / (n * draws))
        # 40 seeds: the sample sd is within [0.7, 1.3] x the true one with ~99% chance
        assert 0.7 * expected <= float(np.std(accs, ddof=1)) <= 1.3 * expected
        assert float(np.mean(accs)) == pytest.approx(p, abs=4 * expected)


def test_posterior_noise_far_below_the_signal_keeps_the_oracle_scores(oracle):
    inputs = _inputs()
    for split in ("fit", "score"):
        latents = inputs.fit_latents if split == "fit" else inputs.score_latents
        std = {g: np.full_like(v, 1e-3) for g, v in latents.items()}
        (inputs.fit_std if split == "fit" else inputs.score_std).update(std)
    m = _scores(inputs)
    for key in ("disentanglement_score", "exclusivity_s", "factor_s_from_zay",
                "zay_interaction_content", "zay_label_leakage"):
        assert m[key] == pytest.approx(oracle[key], abs=0.01)
    assert m["zay_collapsed"] == 0.0


def test_collapsed_zay_cannot_win():
    collapsed = _scores(_inputs("zeros"))
    assert collapsed["zay_collapsed"] == 1.0
    assert collapsed["zay_independence_score"] == pytest.approx(1.0)  # trivially
    assert collapsed["disentanglement_score"] == 0.0
    assert collapsed["disentanglement_score_label_only"] == 0.0


def test_noise_zay_holds_no_interaction_and_does_not_win(oracle):
    noise = _scores(_inputs("noise"))
    assert noise["zay_collapsed"] == 0.0
    assert noise["zay_interaction_content"] < 0.1
    assert noise["exclusivity_s"] < 0.1
    assert noise["disentanglement_score"] <= oracle["disentanglement_score"] - 0.2


def test_permuted_copy_of_zy_inside_zay_is_caught():
    m = _scores(_inputs("permuted_zy"), ["correlation", "nonlinear_dependence"])
    assert m["zy_zay_correlation"] >= 0.9
    assert m["zy_zay_correlation_published"] < 0.2  # matched dimensions miss it
    assert m["zy_zay_hsic"] > 0.8
    assert m["zay_independence_score"] <= 0.55


def test_label_only_data_keeps_the_combined_score():
    m = _scores(_inputs(factor_groups={}))
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
    assert probe_scores(zy_fit, a_fit, zy_score, a_score)["acc_cc"] < 0  # the old bug
    lat = lambda z: {"zy": z, "za": z, "zay": z, "zx": z}  # noqa: E731
    inputs = EvalInputs(lat(zy_fit), {"y": y_fit, "a": a_fit},
                        lat(zy_score), {"y": y_score, "a": a_score})
    m = evaluate_latents(inputs, ["specificity"])
    assert m["zy_y_specificity_cc"] <= 1.0 and m["za_a_specificity_cc"] <= 1.0


def test_coinformation_of_a_16d_zay_holding_only_s_is_minus_ln2():
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]

    def draw(n=1500):
        y, a = rng.integers(0, 10, n), rng.integers(0, 6, n)
        s = (y % 2) ^ (a % 2)
        z = np.concatenate([(2 * s - 1)[:, None] + 0.3 * rng.normal(size=(n, 1)),
                            rng.normal(size=(n, 15))], 1) @ rotation
        return z, y, a

    # I(z;y) = 0 (s says nothing of y alone); I(z;y|a) = ln 2 (with a, s fixes y's parity)
    ci = coinformation(*draw(), *draw())
    assert ci["coinformation"] == pytest.approx(-math.log(2), abs=0.2)
    assert ci["mi_z_y"] < 0.05


def test_xor_and_redundancy_have_opposite_signs():
    rng = np.random.default_rng(0)

    def xor(n=2000):
        y, a = rng.integers(0, 2, n), rng.integers(0, 2, n)
        return ((y ^ a) + 0.1 * rng.normal(size=n))[:, None], y, a

    ci = coinformation(*xor(), *xor())
    assert ci["mi_z_y"] < 0.05
    assert ci["coinformation"] == pytest.approx(-math.log(2), abs=0.1)

    def redundant(n=2000):
        y = rng.integers(0, 2, n)
        return (y + 0.1 * rng.normal(size=n))[:, None], y, y.copy()

    assert coinformation(*redundant(), *redundant())["coinformation"] == pytest.approx(
        math.log(2), abs=0.1)


def test_group_dci_and_exclusivity_on_hand_made_matrices():
    f, g = ["y", "a", "s", "r"], ["zy", "za", "zay", "zx"]
    fg = dict(zip(f, g, strict=True))
    ideal = group_dci(np.eye(4), f, g, fg)
    assert ideal == {"dci_disentanglement": 1.0, "dci_completeness": 1.0,
                     "dci_informativeness": 1.0}
    flat = group_dci(np.full((4, 4), 0.7), f, g, fg)
    assert flat["dci_disentanglement"] == pytest.approx(0.0, abs=1e-12)
    assert flat["dci_completeness"] == pytest.approx(0.0, abs=1e-12)
    assert flat["dci_informativeness"] == pytest.approx(0.7)
    # DCI cannot see *which* group holds a factor; exclusivity can
    swapped = np.eye(4)[[1, 0, 2, 3]]  # y in za, a in zy
    assert group_dci(swapped, f, g, fg)["dci_disentanglement"] == 1.0
    excl = exclusivity_scores(swapped, f, g, fg)
    assert excl["y"] == 0.0 and excl["a"] == 0.0 and excl["s"] == 1.0
    m = np.eye(4) * 0.9
    m[0, 2] = 0.4
    assert exclusivity_scores(m, f, g, fg)["y"] == pytest.approx(0.5)


def test_probes_never_score_on_their_own_training_split():
    rng = np.random.default_rng(3)
    x_fit = rng.normal(size=(200, 300))
    y_fit = rng.integers(0, 2, 200)  # labels are pure noise: memorisable, not learnable
    x_score = rng.normal(size=(200, 300))
    y_score = rng.integers(0, 2, 200)
    held_out = probe_scores(x_fit, y_fit, x_score, y_score)
    on_train = probe_scores(x_fit, y_fit, x_fit, y_fit)
    assert on_train["acc"] > 0.8  # what scoring on the training split would report
    assert held_out["acc"] < 0.65 and held_out["acc_cc"] < 0.25


def test_combined_score_zero_when_any_part_fails():
    parts = dict(zy_y_specificity_cc=0.9, za_a_specificity_cc=0.9, zay_label_leakage=0.0,
                 zay_nonlinear_independence=0.9, zay_interaction_content=0.9, zay_collapsed=0.0)
    assert combined_score(parts) == pytest.approx(0.9 ** 0.8, rel=1e-9)
    assert combined_score(parts | {"zay_interaction_content": 0.0}) == 0.0
    assert combined_score(parts | {"zay_collapsed": 1.0}) == 0.0


def test_epoch_proxies_follow_the_final_metrics_on_known_latents():
    rng = np.random.default_rng(4)
    f = _factors(rng, 1000)
    half = torch.arange(1000) % 2 == 0
    factors = {"y": (torch.from_numpy(f["y"]), 10), "a": (torch.from_numpy(f["a"]), 6),
               "s": (torch.from_numpy(f["s"]), 2),
               "hue_residual": (torch.from_numpy(f["hue_residual"]), None)}

    def proxies(mode):
        lat = {k: torch.from_numpy(v) for k, v in _latents(rng, f, mode).items()}
        return {k: float(v) for k, v in epoch_proxies(lat, factors, FACTOR_GROUPS, half).items()}

    good, copy, leaky = proxies("interaction"), proxies("permuted_zy"), proxies("s_plus_y")
    assert good["val_disentanglement_score"] >= 0.8
    assert good["val_zay_independence"] >= 0.95 and good["val_zay_label_leakage"] <= 0.05
    assert copy["val_zay_independence"] <= 0.55
    assert copy["val_zay_nonlinear_independence"] <= 0.6
    assert leaky["val_zay_label_leakage"] >= 0.9
    assert leaky["val_disentanglement_score"] <= good["val_disentanglement_score"] - 0.2
    zeros = {k: torch.from_numpy(v) for k, v in _latents(rng, f, "zeros").items()}
    assert float(epoch_proxies(zeros, factors, FACTOR_GROUPS, half)[
        "val_disentanglement_score"]) == 0.0


def test_epoch_proxies_read_posterior_samples():
    rng = np.random.default_rng(6)
    f = _factors(rng, 1000)
    half = torch.arange(1000) % 2 == 0
    factors = {"y": (torch.from_numpy(f["y"]), 10), "a": (torch.from_numpy(f["a"]), 6),
               "s": (torch.from_numpy(f["s"]), 2)}
    groups = {"y": "zy", "a": "za", "s": "zay"}
    lat = {k: torch.from_numpy(v) for k, v in _latents(rng, f, "y_only").items()}
    lat["zay"] = 1e-3 * lat["zay"]  # a copy of y, far below unit posterior noise
    unit = {g: torch.ones_like(v) for g, v in lat.items()}
    on_means = epoch_proxies(lat, factors, groups, half)
    on_samples = epoch_proxies(lat, factors, groups, half, std=unit)
    assert float(on_means["val_zay_label_leakage"]) >= 0.9
    assert float(on_samples["val_zay_label_leakage"]) <= 0.05
    assert float(on_samples["val_disentanglement_score"]) == 0.0  # zay transmits nothing
    # the oracle under noise a tenth of its signal: alive, and scored as on its means
    good = {k: torch.from_numpy(v) for k, v in _latents(rng, f).items()}
    small = {g: torch.full_like(v, 0.01) for g, v in good.items()}
    good_samples = epoch_proxies(good, factors, groups, half, std=small)
    assert float(good_samples["val_disentanglement_score"]) == pytest.approx(
        float(epoch_proxies(good, factors, groups, half)["val_disentanglement_score"]),
        abs=0.02)
    assert float(good_samples["val_disentanglement_score"]) >= 0.8


def test_validate_epoch_reports_every_proxy(digits, untrained):
    cfg, data = digits
    model, _ = untrained
    row = validate_epoch(model, data, cfg, capacity=1.0, beta=1.0)
    for key in ("val_zay_independence", "val_zay_nonlinear_independence",
                "val_zay_label_leakage", "val_disentanglement_score"):
        assert 0.0 <= float(row[key]) <= 1.0
    assert float(row["val_disentanglement_score"]) <= 0.3  # untrained


def test_held_out_domain_accuracy_is_its_own_metric():
    cfg = RunConfig().replace(max_samples=120, test_domain=3, device="cpu")
    data = load_dataset(DataConfig(max_samples=120, test_domain=3), 0)
    torch.manual_seed(0)
    m = evaluate(build_model(cfg, data), data, cfg)["metrics"]
    assert 0.0 <= m["acc_y_test_domain"] <= 1.0

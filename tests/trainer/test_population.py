"""Population training reproduces solo training member by member.

The members share data, seed and model shape, and differ in stage lengths, λ, the
penalty switch, learning rate and patience; each is compared with ``fit`` of its own
config.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.trainer.conftest import interrupted_population, tiny_config
from trainer import (
    ConfigError,
    DivergenceError,
    FitResult,
    fit,
    fit_population,
    group_population,
    load_dataset,
)
from trainer._evaluation import evaluate
from trainer._fit import build_model
from trainer._population import POPULATION_CHECKPOINT, load_population_checkpoint

#: float32 unit roundoff
U32 = 2.0**-24
#: columns that are pure schedule or counting: the population must reproduce them exactly
EXACT = ("epoch", "stage", "capacity", "beta_scale", "penalty_active", "lr", "bad_batches",
         "stopped_early")
#: the run's bookkeeping in ``final``: counted from the rows, equal exactly
FINAL_EXACT = ("epochs_run", "best_epoch", "stopped_early", "final_stage")
#: wall-clock columns: the only ones a population may not reproduce
TIMING = ("epoch_time_s", "samples_per_s")
LOSSES = ("train_loss", "train_recon", "train_ce_y", "train_ce_a", "train_penalty",
          "train_kl_zy", "train_kl_za", "train_kl_zay", "train_kl_zx", "val_loss")


pytestmark = pytest.mark.usefixtures("one_thread")


class Interrupt(Exception):
    pass


def solo_history(cfg, **kwargs) -> list[dict[str, float]]:
    """``fit``'s per-epoch rows, stopped before its final evaluation (not compared here)."""
    rows: list[dict[str, float]] = []

    def keep(row):
        rows.append(row)
        if row["epoch"] == cfg.optim.epochs - 1 or row["stopped_early"]:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(cfg, report=keep, **kwargs)
    return rows


def reassociation_tolerance(cfg, n_train: int) -> float:
    """Relative tolerance for results that differ only by float reassociation.

    A float32 dot product of length n has a relative forward error of at most
    gamma_n ~ n * u (Higham, Accuracy and Stability, 3.1). A batched matmul (vmap) sums
    the same products in another order, so one layer's outputs may differ by up to that
    bound; a training step goes through the DEPTH = 3 layers of an encoder or the decoder
    forward and again backward (2 * DEPTH reductions of length at most n_max, the widest
    fan-in). Those differences enter the weights at every optimiser step and, to first
    order, add up over the S steps of a run (Adam's step is bounded by lr per element,
    so a perturbed gradient does not amplify a weight difference beyond its own size).
    """
    d_in = 3 * cfg.data.image_size**2
    n_max = max(d_in, cfg.model.hidden_dim)
    steps = cfg.optim.epochs * math.ceil(n_train / min(cfg.optim.batch_size, n_train))
    return 2 * 3 * n_max * U32 * steps


MEMBERS = [
    dict(stage1_epochs=2, stage2_epochs=2, independence_penalty=10.0),
    dict(stage1_epochs=1, stage2_epochs=3, independence_penalty=1.0, penalty_in_stage3=True),
    dict(stage1_epochs=3, stage2_epochs=1, use_independence_penalty=False, lr=2e-3),
]


def assert_close(pop: float, solo: float, tol: float, what) -> float:
    """``pop`` within relative ``tol`` of ``solo`` (a zero or non-finite ``solo`` exactly);
    the relative difference."""
    if solo == 0.0 or not math.isfinite(solo):
        assert pop == solo or (math.isnan(pop) and math.isnan(solo)), (what, pop, solo)
        return 0.0
    rel = abs(pop - solo) / abs(solo)
    assert rel <= tol, (what, pop, solo)
    return rel


def assert_same_history(pop: list[dict], solo: list[dict], tol: float) -> float:
    """Per-epoch rows agree: schedule columns exactly, every measured one (losses,
    accuracies, validation proxies) within relative ``tol``; wall times are not compared."""
    assert len(pop) == len(solo)
    worst = 0.0
    for rp, rs in zip(pop, solo, strict=True):
        assert set(rp) == set(rs)
        assert set(LOSSES) <= set(rs)
        for key in EXACT:
            assert rp[key] == rs[key], (key, rp["epoch"])
        for key in set(rs) - set(EXACT) - set(TIMING):
            worst = max(worst, assert_close(rp[key], rs[key], tol, (key, rp["epoch"])))
    return worst


def assert_same_run(pop: FitResult, solo: FitResult, tol: float) -> float:
    """Per-epoch rows and final metrics agree: counted values exactly, computed ones within
    relative ``tol``.

    The population's final evaluation is the solo one (``eval_inputs``, the same probes,
    ``evaluate_inputs``) on weights that differ by float reassociation alone: each metric
    moves by a relative amount of the weights' own order, whatever its scale (the
    rates and KLs of an idle group are about 0.001-0.02, probe accuracies 0.1-1). For the
    counted metrics (accuracies, active dimensions, collapse flags) ``tol`` is below one
    count: they must agree exactly (a prediction flips only if it lies within the
    weights' difference, about 1e-6 relative, of a decision boundary).
    """
    worst = assert_same_history(pop.history, solo.history, tol)
    assert set(pop.final) == set(solo.final)
    for key in FINAL_EXACT:
        assert pop.final[key] == solo.final[key], key
    for key, value in solo.final.items():
        worst = max(worst, assert_close(pop.final[key], value, tol, key))
    assert pop.best_epoch == solo.best_epoch and pop.stopped_early == solo.stopped_early
    return worst


def test_population_reproduces_each_member_trained_alone(tmp_path):
    # both sides evaluate with the torch probes (their agreement with scikit-learn
    # is tests/trainer/metrics/test_probes_torch.py's)
    configs = [tiny_config(**m) for m in MEMBERS]
    rows: dict[int, list[dict[str, float]]] = {0: [], 1: [], 2: []}
    pop = fit_population(configs, report=lambda k, row: rows[k].append(row),
                         checkpoint_dir=tmp_path)
    entries = load_population_checkpoint(tmp_path / POPULATION_CHECKPOINT, configs)
    data = load_dataset(configs[0].data, configs[0].seed)
    tol = reassociation_tolerance(configs[0], data.split_size("train"))
    for k, cfg in enumerate(configs):
        solo = fit(cfg)
        assert isinstance(pop[k], FitResult)
        assert rows[k] == pop[k].history  # each member reported separately
        assert_same_run(pop[k], solo, tol)
        # the evaluation itself is the solo one: on the member's own weights (its best
        # stage-3 state, as fit keeps it) fit's evaluate gives every metric bit for bit
        state = entries[k]["best_state"]
        assert entries[k]["best_epoch"] == pop[k].best_epoch >= cfg.stage3_start
        model = build_model(cfg, data)
        model.load_state_dict(state)
        metrics = evaluate(model, data, cfg)["metrics"]
        assert metrics == {key: v for key, v in pop[k].final.items() if key not in FINAL_EXACT}
    # the members really differ: their schedules and losses are not one run's copies
    assert [r["penalty_active"] for r in rows[1]] == [0, 1, 1, 1, 1, 1]
    assert [r["penalty_active"] for r in rows[2]] == [0] * 6


def test_stage1_gate_freezes_only_that_members_zay_encoder(tmp_path):
    # member 0 spends its one epoch in stage 1 (gate: zay cut out), member 1 in stage 3
    configs = [tiny_config(epochs=1, stage1_epochs=1, stage2_epochs=0),
               tiny_config(epochs=1, stage1_epochs=0, stage2_epochs=0)]
    fit_population(configs, checkpoint_dir=tmp_path, evaluate=False)
    entries = load_population_checkpoint(tmp_path / POPULATION_CHECKPOINT, configs)
    torch.manual_seed(configs[0].seed)
    data = load_dataset(configs[0].data, configs[0].seed)
    initial = build_model(configs[0], data).state_dict()  # both members start here
    frozen, free = entries[0]["model"], entries[1]["model"]
    zay_encoder = [k for k in initial if k.startswith("encoders.zay.")]
    assert zay_encoder
    for k in initial:
        assert torch.equal(frozen[k], initial[k]) == (k in zay_encoder), k
        assert not torch.equal(free[k], initial[k]), k
    # and Adam keeps no state for them, as a solo run's Adam skips gradient-less params
    names = list(initial)
    opt_state = entries[0]["optimizer"]["state"]
    assert {names[i] for i in opt_state} == set(names) - set(zay_encoder)


def test_a_diverging_member_fails_alone_and_the_others_match_solo():
    # member 0 is clipped at every step and decays its weights: per-member clipping and
    # weight decay must match the solo run's
    configs = [tiny_config(epochs=4, stage1_epochs=1, stage2_epochs=1, grad_clip=0.05,
                           weight_decay=1e-3),
               tiny_config(epochs=4, stage1_epochs=1, stage2_epochs=1, lr=1e30),
               tiny_config(epochs=5, stage1_epochs=1, stage2_epochs=1, lr=1e-9, patience=1)]
    pop = fit_population(configs, evaluate=False)
    with pytest.raises(DivergenceError) as solo_error:
        fit(configs[1])
    assert isinstance(pop[1], DivergenceError)
    assert str(pop[1]) == str(solo_error.value)
    n_train = load_dataset(configs[0].data, configs[0].seed).split_size("train")
    for k in (0, 2):
        assert_same_history(pop[k].history, solo_history(configs[k]),
                            reassociation_tolerance(configs[k], n_train))
    assert pop[2].stopped_early and len(pop[2].history) < 5  # left the population early


def test_resume_equals_an_uninterrupted_population(tmp_path):
    configs = [tiny_config(**m) for m in MEMBERS]
    whole = fit_population(configs, checkpoint_dir=tmp_path / "whole", evaluate=False)

    interrupted_population(configs, tmp_path / "cut", stop_epoch=2)
    # each member's entry is a solo checkpoint: fit(resume=True) continues it
    entry = load_population_checkpoint(tmp_path / "cut" / POPULATION_CHECKPOINT, configs)[1]
    (tmp_path / "solo").mkdir()
    torch.save(entry, tmp_path / "solo" / "checkpoint.pt")
    solo_resumed = solo_history(configs[1], checkpoint_dir=tmp_path / "solo", resume=True)
    resumed = fit_population(configs, checkpoint_dir=tmp_path / "cut", resume=True,
                             evaluate=False)
    timing = ("epoch_time_s", "samples_per_s")
    for a, b in zip(whole, resumed, strict=True):
        assert [{k: v for k, v in r.items() if k not in timing} for r in a.history] == [
            {k: v for k, v in r.items() if k not in timing} for r in b.history]
        assert a.final == b.final
    n_train = load_dataset(configs[0].data, configs[0].seed).split_size("train")
    assert_same_history(whole[1].history[3:], solo_resumed,
                        reassociation_tolerance(configs[1], n_train))
    with pytest.raises(ConfigError, match="member 0 .*another configuration.*lr"):
        fit_population([c.replace(lr=0.5) for c in configs], checkpoint_dir=tmp_path / "cut",
                       resume=True)


def test_group_population_splits_what_cannot_share_a_model():
    base = tiny_config()
    configs = [base, base.replace(independence_penalty=3.0), base.replace(arch="conv"),
               base.replace(zay_suppression="kl_weight"), base.replace(seed=1),
               base.replace(stage1_epochs=0, lr=1e-2)]
    assert group_population(configs) == [[0, 1, 5], [2], [3], [4]]
    # with one data set passed in, another seed may join (its data no longer differs)
    assert group_population(configs, shared_data=True) == [[0, 1, 4, 5], [2], [3]]
    with pytest.raises(ConfigError, match="cannot share one model.*zay_suppression"):
        fit_population([configs[0], configs[3]])


def test_members_with_their_own_seeds_see_their_own_batches():
    data = load_dataset(tiny_config().data, 0)
    configs = [tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=0, seed=s) for s in (3, 4)]
    pop = fit_population(configs, data=data, evaluate=False)
    tol = reassociation_tolerance(configs[0], data.split_size("train"))
    for k, cfg in enumerate(configs):
        assert_same_history(pop[k].history, solo_history(cfg, data=load_dataset(cfg.data, 0)),
                            tol)
    assert pop[0].history[0]["train_loss"] != pop[1].history[0]["train_loss"]


def test_members_differing_only_in_kl_weights_share_a_population_and_match_solo():
    # beta_x (zx's KL weight) enters each member's loss as its own 0-d tensor, as λ does
    configs = [tiny_config(epochs=3, stage1_epochs=1, stage2_epochs=1, beta_x=b)
               for b in (1.0, 0.3)]
    assert group_population(configs) == [[0, 1]]
    pop = fit_population(configs, evaluate=False)
    n_train = load_dataset(configs[0].data, configs[0].seed).split_size("train")
    tol = reassociation_tolerance(configs[0], n_train)
    for k, cfg in enumerate(configs):
        assert_same_history(pop[k].history, solo_history(cfg), tol)
    # the members really differ: zx's KL is weighted differently from the first step on
    assert pop[0].history[0]["train_loss"] != pop[1].history[0]["train_loss"]
    assert pop[0].history[0]["train_kl_zx"] != pop[1].history[0]["train_kl_zx"]


def test_the_other_kl_weights_are_per_member_and_the_penalty_pairs_shared():
    base = tiny_config()
    configs = [base, base.replace(beta_y=0.5, beta_a=2.0, beta_ay=0.25),
               base.replace(penalty_pairs="zy_za_zx")]
    assert group_population(configs) == [[0, 1], [2]]
    with pytest.raises(ConfigError, match="cannot share one model.*penalty_pairs"):
        fit_population([configs[0], configs[2]])


def test_a_population_penalising_zay_with_zx_too_matches_solo():
    # the vmap path of the penalty (one switch per member) measures the same pairs as fit
    configs = [tiny_config(epochs=3, stage1_epochs=0, stage2_epochs=2, penalty_pairs="zy_za_zx",
                           independence_penalty=lam, penalty_measure="hsic")
               for lam in (10.0, 1.0)]
    pop = fit_population(configs, evaluate=False)
    n_train = load_dataset(configs[0].data, configs[0].seed).split_size("train")
    for k, cfg in enumerate(configs):
        assert_same_history(pop[k].history, solo_history(cfg),
                            reassociation_tolerance(cfg, n_train))
    assert all(r["train_penalty"] > 0 for r in pop[0].history[:2])


def test_members_stopping_on_the_val_domain_match_solo():
    """``--val_domain`` and ``--early_stopping_metric``: each member's per-epoch
    ``val_acc_y_val_domain``, the epoch it stops at and its final ``acc_y_val_domain``
    are what ``fit`` gives it alone; one member follows the val-domain proxy, the other
    the validation loss."""
    configs = [tiny_config(epochs=5, stage1_epochs=1, stage2_epochs=1, val_domain=2,
                           early_stopping_metric=m, patience=1, lr=lr)
               for m, lr in (("val_acc_y_val_domain", 3e-3), ("val_loss", 1e-3))]
    assert group_population(configs) == [[0, 1]]
    pop = fit_population(configs)
    n_train = load_dataset(configs[0].data, configs[0].seed).split_size("train")
    for k, cfg in enumerate(configs):
        solo = fit(cfg)
        assert "acc_y_val_domain" in solo.final
        assert all("val_acc_y_val_domain" in r for r in solo.history)
        assert_same_run(pop[k], solo, reassociation_tolerance(cfg, n_train))
        assert pop[k].final["acc_y_val_domain"] == solo.final["acc_y_val_domain"]

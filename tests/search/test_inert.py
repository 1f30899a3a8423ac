"""The space offers nothing inert, and trials that train alike are one setting.

A parameter that cannot change a run (the independence penalty where stage 2 is empty
and it does not run in stage 3, λ with the penalty off, the suppression where gate and
kl_weight coincide, β_zay in kl_target mode) is not drawn, and
``trainer.params.effective_config`` drops it, so that two trials differing only in it
are one setting. The training checks run ``trainer.fit`` itself: configurations with one
effective configuration train to the same epoch rows, and the controls (which differ in
a field that acts) do not.
"""

from __future__ import annotations

import optuna
import pytest

from search.db.study import make_sampler
from search.space import SearchSpace, build_space
from trainer import RunConfig, params
from trainer.params import effective_config, setting_key, stage_lengths

from .conftest import TINY_TRIAL

optuna.logging.set_verbosity(optuna.logging.ERROR)

PENALTY = ("use_independence_penalty", "independence_penalty", "penalty_measure",
           "penalty_pairs")


def _draws(space: SearchSpace, n: int = 30, sampler: str = "tpe") -> list[tuple[dict, dict]]:
    """``n`` samples of ``space`` told back to the study: (what the trial trains with,
    what Optuna recorded as its parameters)."""
    study = optuna.create_study(sampler=make_sampler(sampler, 0))
    out = []
    for i in range(n):
        trial = study.ask()
        drawn = space.sample(trial)
        out.append((drawn, dict(trial.params)))
        study.tell(trial, float(i % 7))
    return out


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp"])
def test_a_space_with_stage2_fixed_to_0_never_suggests_the_penalty(sampler):
    space = build_space(6, fixes=["stage2=0"], ranges=["measure=corr,hsic"])
    for drawn, recorded in _draws(space, 8 if sampler == "gp" else 30, sampler):
        assert drawn["stage2_epochs"] == 0
        assert not set(PENALTY) & set(drawn), drawn
        assert not set(PENALTY) & set(recorded), recorded


def test_the_penalty_is_drawn_where_it_runs_in_stage3():
    space = build_space(6, fixes=["stage2=0"]).with_base(
        RunConfig().replace(epochs=6, penalty_in_stage3=True).to_dict())
    seen = {drawn["use_independence_penalty"] for drawn, _ in _draws(space)
            if drawn["stage1_epochs"] < 6}  # stage 3 not empty: the penalty acts there
    assert seen == {True, False}
    # ... but not where stage 1 takes every epoch (stages 2 and 3 are empty)
    whole = build_space(6, fixes=["stage1=6", "stage2=0"]).with_base(
        RunConfig().replace(epochs=6, penalty_in_stage3=True).to_dict())
    assert all("use_independence_penalty" not in d for d, _ in _draws(whole, 5))


def test_the_penalty_is_drawn_wherever_stage2_has_epochs():
    draws = _draws(build_space(6), 40, "random")
    assert {d["use_independence_penalty"] for d, _ in draws if d["stage2_epochs"] > 0} \
        == {True, False}
    assert all(not set(PENALTY) & set(d) for d, _ in draws if d["stage2_epochs"] == 0)


def test_a_model_without_zay_draws_nothing_that_acts_on_zay():
    space = build_space(6, ranges=["suppression=gate,kl_weight,kl_target",
                                   "beta_ay=0.5:2"]).with_base(
        RunConfig().replace(epochs=6, variant="diva", zay_dim=0).to_dict())
    for drawn, recorded in _draws(space, 15):
        assert not {*PENALTY, "zay_suppression", "beta_ay"} & set(recorded), recorded
        assert "stage1_epochs" in drawn  # the stages still set when early stopping starts


def test_the_suppression_is_drawn_where_gate_and_kl_weight_differ():
    # stages 1 and 2 empty: gate and kl_weight train alike, kl_target does not
    empty = build_space(6, fixes=["stage1=0", "stage2=0"],
                        ranges=["suppression=gate,kl_weight"])
    assert all("zay_suppression" not in d for d, _ in _draws(empty, 10))
    with_target = build_space(6, fixes=["stage1=0", "stage2=0"],
                              ranges=["suppression=gate,kl_weight,kl_target"])
    assert {d["zay_suppression"] for d, _ in _draws(with_target, 30, "random")} == {
        "gate", "kl_weight", "kl_target"}
    # stage 1 empty but stage 2 not: gate scales zay's input on the ramp, kl_weight its KL
    ramp = build_space(6, fixes=["stage1=0", "stage2=3"], ranges=["suppression=gate,kl_weight"])
    assert {d["zay_suppression"] for d, _ in _draws(ramp, 30, "random")} == {"gate",
                                                                              "kl_weight"}


def test_beta_zay_is_not_drawn_in_kl_target_mode():
    space = build_space(6, ranges=["suppression=gate,kl_target", "beta_ay=0.5:2", "stage1=1:3"])
    draws = _draws(space, 30, "random")
    assert all(("beta_ay" in d) == (d["zay_suppression"] == "gate") for d, _ in draws)
    assert {d["zay_suppression"] for d, _ in draws} == {"gate", "kl_target"}


@pytest.mark.parametrize("epochs", [1, 2, 3, 6, 7, 30])
def test_the_baseline_stays_the_methods_default_where_its_penalty_is_inert(epochs):
    # at 1 or 2 epochs stage 2 is empty (epochs // 3 = 0): the default still names its
    # penalty, exactly as before, and the space admits it
    space = build_space(epochs)
    assert space.baseline() == {"stage1_epochs": epochs // 3, "stage2_epochs": epochs // 3,
                                "use_independence_penalty": True,
                                "independence_penalty": 10.0}
    assert space.admits(space.baseline())


def test_a_space_admits_the_default_whose_penalty_cannot_act():
    # penalty fixed off: at 2 epochs the default's penalty acts in no epoch, so the default
    # trains as a setting of this space does; at 6 epochs it acts, and the space lacks it
    assert build_space(2, fixes=["penalty=off"]).admits(params.baseline(2))
    assert not build_space(6, fixes=["penalty=off"]).admits(params.baseline(6))


# ---------------------------------------------------------------- effective configuration


def _config(**flat) -> dict:
    return RunConfig().replace(**{**TINY_TRIAL, **flat}).to_dict()


@pytest.mark.parametrize(("one", "other"), [
    # stage 2 empty, no stage-3 penalty: the switch and λ (and measure, pairs) do nothing
    ({"stage2_epochs": 0, "independence_penalty": 15.9},
     {"stage2_epochs": 0, "use_independence_penalty": False}),
    ({"stage2_epochs": 0, "penalty_measure": "hsic", "penalty_pairs": "zy_za_zx"},
     {"stage2_epochs": 0}),
    # λ with the penalty off
    ({"use_independence_penalty": False, "independence_penalty": 3.0},
     {"use_independence_penalty": False}),
    # thirds and their explicit lengths (4 epochs: 1 + 1)
    ({}, {"stage1_epochs": 1, "stage2_epochs": 1}),
    # stages 1 and 2 empty: gate and kl_weight coincide
    ({"stage1_epochs": 0, "stage2_epochs": 0, "zay_suppression": "kl_weight"},
     {"stage1_epochs": 0, "stage2_epochs": 0}),
    # kl_target's zay term does not read beta_ay
    ({"zay_suppression": "kl_target", "beta_ay": 2.0}, {"zay_suppression": "kl_target"}),
    # where the run goes is not what it trains
    ({"device": "cuda", "write_plots": True}, {}),
    # penalty_in_stage3 only matters where the penalty can act
    ({"use_independence_penalty": False, "penalty_in_stage3": True},
     {"use_independence_penalty": False}),
])
def test_configurations_that_train_alike_are_one_setting(one, other):
    assert effective_config(_config(**one)) == effective_config(_config(**other))
    assert setting_key(_config(**one)) == setting_key(_config(**other))


@pytest.mark.parametrize(("one", "other"), [
    ({"independence_penalty": 15.9}, {"use_independence_penalty": False}),  # stage 2 of 1
    ({"stage2_epochs": 0, "independence_penalty": 15.9, "penalty_in_stage3": True},
     {"stage2_epochs": 0, "use_independence_penalty": False, "penalty_in_stage3": True}),
    ({"stage1_epochs": 0, "zay_suppression": "kl_weight"}, {"stage1_epochs": 0}),  # ramp
    ({"stage1_epochs": 0, "stage2_epochs": 0, "zay_suppression": "kl_target"},
     {"stage1_epochs": 0, "stage2_epochs": 0}),
    ({"beta_ay": 2.0}, {}),
    ({"epochs": 6}, {}),
    ({"seed": 1}, {}),
])
def test_configurations_that_differ_in_what_acts_are_two(one, other):
    assert setting_key(_config(**one)) != setting_key(_config(**other))


def test_the_effective_configuration_keeps_what_acts():
    off = effective_config(_config(stage2_epochs=0, independence_penalty=15.9))
    assert not set(PENALTY) & set(off) and "penalty_in_stage3" not in off
    assert off["stage1_epochs"] == 1 and off["stage2_epochs"] == 0 and off["epochs"] == 4
    on = effective_config(_config())
    assert on["independence_penalty"] == 10.0 and on["stage2_epochs"] == 1
    assert stage_lengths(params.flat_config(_config(staged_training=False))) == (0, 0, 4)
    assert stage_lengths({"epochs": 9}) == (3, 3, 3)


def test_the_defaults_the_conditions_assume_are_runconfigs():
    # Acts reads a missing stage-3 flag as off and a missing variant as a model with zay
    assert RunConfig().stages.penalty_in_stage3 is False
    assert RunConfig().model.variant != params.NO_ZAY_VARIANT


# ------------------------------------------------------------------ the same training


class _Stop(Exception):
    """Raised after the last epoch's row: the final evaluation is not what is compared."""


@pytest.fixture(scope="module")
def tiny_data():
    from trainer import load_dataset

    cfg = RunConfig().replace(**TINY_TRIAL)
    return load_dataset(cfg.data, cfg.data_seed)


def _rows(config: dict, data) -> list[dict[str, float]]:
    """The epoch rows ``trainer.fit`` reports for ``config`` (training losses, validation
    loss and accuracies), the final evaluation skipped."""
    from trainer import fit

    cfg = RunConfig.from_dict(config)
    rows: list[dict[str, float]] = []

    def report(row: dict[str, float]) -> None:
        rows.append({k: v for k, v in row.items()  # the clock's columns differ run to run
                     if not any(w in k for w in ("time", "seconds", "per_s"))})
        if row["epoch"] >= cfg.optim.epochs - 1:
            raise _Stop

    with pytest.raises(_Stop):
        fit(cfg, report=report, data=data)
    return rows


def test_trials_differing_only_in_an_inert_penalty_train_alike(tiny_data):
    # the trials 2 and 4: stage 2 of 0 epochs, penalty on with λ 15.9 or off
    on = _config(stage2_epochs=0, independence_penalty=15.9)
    off = _config(stage2_epochs=0, use_independence_penalty=False)
    assert setting_key(on) == setting_key(off)
    # (the control, where the penalty acts and the two train apart, is the slow check's)
    assert _rows(on, tiny_data) == _rows(off, tiny_data)


@pytest.mark.slow  # 12 runs of the tiny model
@pytest.mark.parametrize(("one", "other", "alike"), [
    # with a stage 2 the penalty acts: on (λ 15.9) and off train apart
    ({"stage1_epochs": 1, "stage2_epochs": 2, "independence_penalty": 15.9},
     {"stage1_epochs": 1, "stage2_epochs": 2, "use_independence_penalty": False}, False),
    ({"stage1_epochs": 0, "stage2_epochs": 0, "zay_suppression": "kl_weight"},
     {"stage1_epochs": 0, "stage2_epochs": 0}, True),
    ({"zay_suppression": "kl_target", "beta_ay": 2.5}, {"zay_suppression": "kl_target"}, True),
    ({}, {"stage1_epochs": 1, "stage2_epochs": 1}, True),
    ({"stage1_epochs": 0, "stage2_epochs": 3, "zay_suppression": "kl_weight"},
     {"stage1_epochs": 0, "stage2_epochs": 3}, False),
    ({"stage1_epochs": 0, "stage2_epochs": 0, "zay_suppression": "kl_target"},
     {"stage1_epochs": 0, "stage2_epochs": 0}, False),
])
def test_one_effective_configuration_is_one_training(tiny_data, one, other, alike):
    a, b = _config(**one), _config(**other)
    assert (setting_key(a) == setting_key(b)) is alike
    assert (_rows(a, tiny_data) == _rows(b, tiny_data)) is alike

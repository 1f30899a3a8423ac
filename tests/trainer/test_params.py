"""The parameter registry (``trainer.params``): consistent, the source of RunConfig's
defaults, plain Python, and enough on its own to add a parameter to the trainer's CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import params
from trainer._config import (
    PENALTY_MEASURES,
    PENALTY_PAIRS,
    ZAY_SUPPRESSION_MODES,
    ConfigError,
    OptimConfig,
    RunConfig,
    StageConfig,
    flat_field_index,
)
from trainer.params import Choices, Param, Range, RegistryError

ROOT = Path(__file__).resolve().parents[2]

#: a parameter the registry does not hold today: the KL target's gamma, searched only
#: where the suppression mode is kl_target (its RunConfig default is 10.0 already)
GAMMA = Param("kl_target_gamma", float, 10.0, "gamma of the Burgess-style KL target",
              search=Range(1.0, 100.0, log=True), aliases=("gamma",),
              when=(("zay_suppression", "kl_target"),), baseline=False, label="KL γ",
              symbol="γ")


def _value(cfg: RunConfig, name: str):
    section = flat_field_index()[name]
    return getattr(getattr(cfg, section) if section else cfg, name)


def test_the_registry_is_consistent():
    params.check()
    assert len(set(params.names())) == len(params.PARAMS)


def test_every_default_is_the_one_runconfig_holds():
    cfg = RunConfig()
    index = flat_field_index()
    for p in params.PARAMS:
        assert p.name in index, f"{p.name} is not a RunConfig field"
        assert _value(cfg, p.name) == p.default, p.name
        assert type(_value(cfg, p.name)) is type(p.default), p.name
    # the tuples other modules import are the registry's allowed values
    assert params.get("zay_suppression").allowed is ZAY_SUPPRESSION_MODES
    assert params.get("penalty_measure").allowed is PENALTY_MEASURES
    assert params.get("penalty_pairs").allowed is PENALTY_PAIRS


def test_the_method_default_resolves_as_runconfig_does():
    for epochs in (1, 7, 60):
        cfg = RunConfig(optim=OptimConfig(epochs=epochs))
        assert cfg.stage1_epochs == params.get("stage1_epochs").method_value(epochs)
        assert cfg.stage2_epochs == params.get("stage2_epochs").method_value(epochs)
    assert params.baseline(60) == {"stage1_epochs": 20, "stage2_epochs": 20,
                                   "use_independence_penalty": True,
                                   "independence_penalty": 10.0}
    assert params.method_default_text() == "thirds, λ=10"
    assert params.pinned() == {"staged_training": True}


def test_names_and_aliases_as_users_know_them():
    assert params.searched_names() == (
        "stage1_epochs", "stage2_epochs", "use_independence_penalty", "independence_penalty",
        "penalty_measure", "penalty_pairs", "zay_suppression", "beta_y", "beta_a", "beta_ay",
        "beta_x")
    assert params.aliases() == {"stage1": "stage1_epochs", "stage2": "stage2_epochs",
                                "penalty": "use_independence_penalty",
                                "lambda": "independence_penalty",
                                "measure": "penalty_measure", "pairs": "penalty_pairs",
                                "suppression": "zay_suppression", "beta_zy": "beta_y",
                                "beta_za": "beta_a", "beta_zay": "beta_ay",
                                "beta_zx": "beta_x"}
    assert params.canonical("lambda") == "independence_penalty"
    assert params.canonical("epochs") == "epochs"


def test_choice_parameters_are_validated_from_the_registry(monkeypatch):
    with pytest.raises(ConfigError, match="unknown penalty_measure 'x'; choose one of corr, "
                                          "hsic, hsic_labels"):
        RunConfig(stages=StageConfig(penalty_measure="x"))
    narrowed = dataclasses.replace(params.get("zay_suppression"), allowed=("gate",))
    monkeypatch.setattr(params, "PARAMS", tuple(
        narrowed if p.name == "zay_suppression" else p for p in params.PARAMS))
    with pytest.raises(ConfigError, match="unknown zay_suppression 'kl_weight'"):
        RunConfig(stages=StageConfig(zay_suppression="kl_weight"))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (Param("lr", float, 1e-3, "x", aliases=("lambda",)), "'lambda' is taken"),
        (Param("lr", float, 1e-3, "x", when=(("weight_decay", True),)), "not an earlier"),
        (Param("arch", str, "auto", "x", allowed=("mlp",)), "default 'auto' is not allowed"),
        (Param("arch", str, "auto", "x", search=Choices(("cnn",)), allowed=("auto",)),
         "not allowed"),
        (Param("lr", float, 1e-3, "x", search=Range(0.0, 1.0, log=True)), "positive"),
        (Param("lr", float, 1e-3, "x", search=Range(0.0)), "only an epoch count"),
        (Param("lr", float, 1e-3, "x", share=3), "epoch counts"),
        (Param("lr", float, 1e-3, "x", opt_in=True), "needs a search range"),
    ],
)
def test_an_inconsistent_entry_is_named(entry, message):
    with pytest.raises(RegistryError, match=message):
        params.check((*params.PARAMS, entry))


def test_the_registry_imports_neither_torch_nor_ray():
    code = ("import sys\nimport trainer.params, trainer._config\n"
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]\nassert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_one_entry_gives_the_trainer_a_flag(monkeypatch):
    from trainer.cli import build_parser, config_from_args

    monkeypatch.setattr(params, "PARAMS", (*params.PARAMS, GAMMA))
    params.check()
    text = build_parser().format_help()
    assert "--kl_target_gamma" in text and "--kl-target-gamma" in text
    assert "gamma of the Burgess-style KL target" in text
    argv = ["--kl_target_gamma", "3.5", "--zay_suppression", "kl_target"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert cfg.stages.kl_target_gamma == 3.5 and cfg.stages.zay_suppression == "kl_target"
    default = config_from_args(build_parser().parse_args([]), [])
    assert default.stages.kl_target_gamma == GAMMA.default


def test_the_kl_weights_are_opt_in_levers_at_the_method_value():
    cfg = RunConfig()
    for name, alias in (("beta_y", "beta_zy"), ("beta_a", "beta_za"), ("beta_ay", "beta_zay"),
                        ("beta_x", "beta_zx")):
        p = params.get(name)
        assert p.default == 1.0 == getattr(cfg.model, name)
        assert p.opt_in and p.searched and params.canonical(alias) == name
        assert p.search == Range(0.25, 4.0, log=True)
        assert name not in params.baseline(30)  # pinned unless a space ranges it
    with pytest.raises(ConfigError, match="beta_x must be a non-negative number"):
        RunConfig().replace(beta_x=-0.5)
    with pytest.raises(ConfigError, match="unknown penalty_pairs 'zx'"):
        RunConfig().replace(penalty_pairs="zx")


def test_the_trainer_takes_the_levers_as_flags():
    from trainer.cli import build_parser, config_from_args

    text = build_parser().format_help()
    for flag in ("--beta_x", "--beta_ay", "--beta_y", "--beta_a", "--penalty_pairs"):
        assert flag in text
    argv = ["--beta_x", "0.5", "--beta-ay", "2", "--penalty_pairs", "zy_za_zx"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert (cfg.model.beta_x, cfg.model.beta_ay, cfg.model.beta_y) == (0.5, 2.0, 1.0)
    assert cfg.stages.penalty_pairs == "zy_za_zx"

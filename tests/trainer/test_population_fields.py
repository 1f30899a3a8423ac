"""Which fields members of one population may differ in is declared beside each field
(``trainer._config.per_member``); every other field is shared, and ``fit_population``
refuses members that differ in one, so a new field cannot silently take the first
member's value."""

from __future__ import annotations

import dataclasses

import pytest

from tests.trainer.conftest import tiny_config
from tests.trainer.test_population import (
    assert_same_history,
    reassociation_tolerance,
    solo_history,
)
from trainer import (
    ConfigError,
    RunConfig,
    StageConfig,
    fit_population,
    group_population,
    load_dataset,
)
from trainer._config import member_variable_fields, per_member

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass(frozen=True)
class StagesWithANewLossWeight(StageConfig):
    """A new loss weight, added the way a new field is: with a default, nothing more."""

    new_loss_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class StagesWithAPerMemberKnob(StageConfig):
    """The same field, declared member-variable."""

    new_loss_weight: float = per_member(1.0)


def _with_stages(cfg: RunConfig, kind: type, **values: float) -> RunConfig:
    return dataclasses.replace(cfg, stages=kind(**dataclasses.asdict(cfg.stages), **values))


def test_a_new_field_is_shared_unless_declared_per_member():
    base = tiny_config(epochs=1, stage1_epochs=0, stage2_epochs=0)
    new = [_with_stages(base, StagesWithANewLossWeight, new_loss_weight=w) for w in (1.0, 2.0)]
    assert group_population(new) == [[0], [1]]
    with pytest.raises(ConfigError, match=r"cannot share one model \(they differ in "
                                          r"stages\.new_loss_weight, .*per_member"):
        fit_population(new, evaluate=False)
    declared = [_with_stages(base, StagesWithAPerMemberKnob, new_loss_weight=w)
                for w in (1.0, 2.0)]
    assert group_population(declared) == [[0, 1]]


@pytest.mark.parametrize("flat", [dict(alpha_y=50.0), dict(alpha_a=50.0),
                                  dict(recon_weight=0.5), dict(kl_target_gamma=2.0),
                                  dict(kl_target_max=3.0), dict(heads_read_zay=True),
                                  dict(batch_size=32), dict(device="cuda")])
def test_members_differing_in_a_field_the_step_reads_from_the_template_are_refused(flat):
    # the batch step reads these from the first member's config alone
    base = tiny_config()
    [(name, _)] = flat.items()
    other = base.replace(**flat)
    assert group_population([base, other]) == [[0], [1]]
    with pytest.raises(ConfigError, match=rf"cannot share one model \(they differ in "
                                          rf"(\w+\.)?{name}, "):
        fit_population([base, other], evaluate=False)


def test_the_declared_fields_are_the_schedule_weights_optimiser_stopping_seeds_evaluation():
    assert member_variable_fields() == {
        "seed", "eval_max_samples", "write_plots", "data.split_seed",
        "model.beta_y", "model.beta_a", "model.beta_ay", "model.beta_x",
        "stages.staged_training", "stages.stage1_epochs", "stages.stage2_epochs",
        "stages.stage1_capacity", "stages.use_independence_penalty",
        "stages.independence_penalty", "stages.penalty_in_stage3",
        "optim.epochs", "optim.lr", "optim.weight_decay", "optim.warmup_epochs",
        "optim.beta_annealing", "optim.beta_anneal_epochs", "optim.grad_clip",
        "optim.patience", "optim.early_stopping_metric", "optim.max_bad_batch_fraction",
        "optim.max_bad_epochs",
    }


def test_members_differing_in_capacity_annealing_warmup_and_staging_match_solo():
    """Declared fields the other population tests leave unvaried: each member's rows are
    what ``fit`` gives it alone (kl_weight mode, where ``stage1_capacity`` enters the loss)."""
    base = tiny_config(epochs=3, stage1_epochs=1, stage2_epochs=1, zay_suppression="kl_weight")
    configs = [base,
               base.replace(stage1_capacity=0.3, beta_annealing=True, beta_anneal_epochs=2),
               base.replace(warmup_epochs=2, staged_training=False)]
    assert group_population(configs) == [[0, 1, 2]]
    pop = fit_population(configs, evaluate=False)
    n_train = load_dataset(base.data, base.seed).split_size("train")
    for k, cfg in enumerate(configs):
        assert_same_history(pop[k].history, solo_history(cfg),
                            reassociation_tolerance(cfg, n_train))
    # the members really differ where their fields act
    assert pop[1].history[0]["capacity"] == 0.3 != pop[0].history[0]["capacity"]
    assert pop[1].history[0]["beta_scale"] < pop[0].history[0]["beta_scale"] == 1.0
    assert [r["stage"] for r in pop[2].history] == [3.0, 3.0, 3.0]
    assert pop[2].history[0]["lr"] < pop[0].history[0]["lr"]

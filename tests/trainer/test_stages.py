from __future__ import annotations

import pytest

from tests.trainer.conftest import tiny_config
from trainer import penalty_active, stage_of, zay_capacity


def schedule(cfg):
    return [(stage_of(e, cfg), round(zay_capacity(e, cfg), 6)) for e in range(cfg.optim.epochs)]


def test_default_thirds_and_linear_ramp():
    cfg = tiny_config(epochs=9, stage1_epochs=None, stage2_epochs=None, zay_suppression="kl_weight")
    assert cfg.stage1_epochs == 3 and cfg.stage2_epochs == 3
    assert schedule(cfg) == [
        (1, 0.01), (1, 0.01), (1, 0.01),
        (2, 0.0), (2, 0.5), (2, 1.0),
        (3, 1.0), (3, 1.0), (3, 1.0),
    ]


def test_gate_cuts_zay_exactly_in_stage1():
    cfg = tiny_config(epochs=5, stage1_epochs=2, stage2_epochs=2)
    assert schedule(cfg) == [(1, 0.0), (1, 0.0), (2, 0.0), (2, 1.0), (3, 1.0)]


def test_stage3_gets_the_rest_when_epochs_do_not_divide():
    cfg = tiny_config(epochs=10, stage1_epochs=None, stage2_epochs=None)
    assert [stage_of(e, cfg) for e in range(10)] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]


def test_stage2_of_zero_epochs_goes_straight_to_stage3():
    cfg = tiny_config(epochs=4, stage1_epochs=2, stage2_epochs=0)
    assert schedule(cfg) == [(1, 0.0), (1, 0.0), (3, 1.0), (3, 1.0)]


def test_stage2_of_one_epoch_has_capacity_zero():
    # progress = stage_epoch / max(1, stage2_epochs - 1) = 0 / 1
    cfg = tiny_config(epochs=4, stage1_epochs=2, stage2_epochs=1, zay_suppression="kl_weight")
    assert schedule(cfg) == [(1, 0.01), (1, 0.01), (2, 0.0), (3, 1.0)]


def test_stage3_of_zero_epochs():
    cfg = tiny_config(epochs=4, stage1_epochs=1, stage2_epochs=3)
    assert schedule(cfg) == [(1, 0.0), (2, 0.0), (2, 0.5), (2, 1.0)]


def test_unstaged_training_is_all_stage3():
    cfg = tiny_config(epochs=3, staged_training=False)
    assert schedule(cfg) == [(3, 1.0)] * 3


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        ({}, [False, False, True, True, False, False]),
        ({"penalty_in_stage3": True}, [False, False, True, True, True, True]),
        ({"use_independence_penalty": False}, [False] * 6),
        ({"independence_penalty": 0.0}, [False] * 6),
    ],
)
def test_penalty_only_where_configured(flat, expected):
    cfg = tiny_config(**flat)
    assert [penalty_active(e, cfg) for e in range(6)] == expected

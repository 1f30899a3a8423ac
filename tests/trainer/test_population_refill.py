"""Populations that refill: members at different epochs share one model, a freed slot
takes the next configuration at epoch 0, and every member still gets what ``fit`` would
give it alone."""

from __future__ import annotations

import pytest

from tests.trainer.conftest import tiny_config
from tests.trainer.test_population import (
    assert_same_history,
    assert_same_run,
    reassociation_tolerance,
    solo_history,
)
from trainer import ConfigError, FitResult, Pruned, fit, fit_population, load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _tolerance(cfg) -> float:
    data = load_dataset(cfg.data, cfg.seed)
    return reassociation_tolerance(cfg, data.split_size("train"))


class Queue:
    """A refill that hands out queued configurations and records every ask."""

    def __init__(self, configs) -> None:
        self.configs, self.asked = list(configs), []

    def __call__(self, free: int):
        self.asked.append(free)
        got, self.configs = self.configs[:free], self.configs[free:]
        return got


def test_a_freed_slot_takes_the_next_config_and_every_member_matches_its_solo_run():
    # capacity 2: member 0 has 2 epochs, member 1 six; 2 (four epochs, another lambda) and
    # 3 (three epochs, the first's seed and schedule) wait for slots
    configs = [tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=1),
               tiny_config(epochs=6, independence_penalty=1.0),
               tiny_config(epochs=4, stage1_epochs=1, stage2_epochs=1,
                           independence_penalty=30.0, lr=2e-3),
               tiny_config(epochs=3, stage1_epochs=0, stage2_epochs=1)]
    queue = Queue(configs[2:])
    ticks: list[dict[int, int]] = []
    got = fit_population(configs[:2], refill=queue,
                         report_epoch=lambda rows: ticks.append(
                             {k: int(r["epoch"]) for k, r in rows.items()}))
    # member 0 ends after tick 2 and 2 joins at epoch 0 beside member 1 at its epoch 2;
    # 1 and 2 both end after tick 6 and 3 takes one of the two slots
    assert ticks == [{0: 0, 1: 0}, {0: 1, 1: 1}, {1: 2, 2: 0}, {1: 3, 2: 1}, {1: 4, 2: 2},
                     {1: 5, 2: 3}, {3: 0}, {3: 1}, {3: 2}]
    # asked after every epoch that left a slot free: 1 after tick 2, 2 after tick 6 (one
    # config left), 1 after ticks 7 and 8 and 2 after tick 9 (none left)
    assert queue.asked == [1, 2, 1, 1, 2]
    assert len(got) == 4 and all(isinstance(r, FitResult) for r in got)
    tol = _tolerance(configs[0])
    for k, cfg in enumerate(configs):
        assert_same_run(got[k], fit(cfg), tol)


def test_a_member_joining_later_with_a_running_members_seed_draws_its_own_stream():
    # both seed 0: had the joining member shared the running one's generator, its first
    # epoch would draw where the other's third left off, not where a fresh run starts
    first = tiny_config(epochs=1, stage1_epochs=0, stage2_epochs=0)
    running = tiny_config(epochs=4, stage1_epochs=0, stage2_epochs=1)
    late = tiny_config(epochs=3, stage1_epochs=0, stage2_epochs=1, independence_penalty=3.0)
    rows: dict[int, list] = {0: [], 1: [], 2: []}
    fit_population([first, running], refill=Queue([late]),
                   report=lambda k, row: rows[k].append(row), evaluate=False)
    assert [int(r["epoch"]) for r in rows[2]] == [0, 1, 2]
    tol = _tolerance(late)
    assert_same_history(rows[2], solo_history(late), tol)
    assert_same_history(rows[1], solo_history(running), tol)


def test_a_member_the_caller_stops_is_pruned_keeps_its_rows_and_frees_its_slot():
    configs = [tiny_config(epochs=6), tiny_config(epochs=6, independence_penalty=1.0)]
    waiting = tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=1)
    queue = Queue([waiting])

    def stop_member_1_at_epoch_2(rows):
        return [1] if rows.get(1, {}).get("epoch") == 2 else None

    got = fit_population(configs, refill=queue, report_epoch=stop_member_1_at_epoch_2)
    assert isinstance(got[1], Pruned) and got[1].epochs_run == 3
    assert [int(r["epoch"]) for r in got[1].history] == [0, 1, 2]
    tol = _tolerance(configs[1])
    assert_same_history(got[1].history, solo_history(configs[1])[:3], tol)
    assert queue.asked[0] == 1  # its slot, freed after epoch 2
    assert isinstance(got[2], FitResult) and got[2].final["epochs_run"] == 2
    assert_same_run(got[0], fit(configs[0]), tol)
    assert_same_run(got[2], fit(waiting), tol)


def test_a_refill_that_cannot_share_the_model_is_refused_naming_the_field():
    short = dict(stage1_epochs=0, stage2_epochs=1)
    other = tiny_config(epochs=2, hidden_dim=16, **short)
    with pytest.raises(ConfigError, match="hidden_dim"):
        fit_population([tiny_config(epochs=1, **short), tiny_config(epochs=3, **short)],
                       refill=Queue([other]), evaluate=False)


def test_a_refilling_population_does_not_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="cannot refill with checkpoint_dir"):
        fit_population([tiny_config(epochs=1, stage1_epochs=0, stage2_epochs=0)],
                       refill=Queue([]), checkpoint_dir=tmp_path)

"""Populations that refill: members at different epochs share one model, a freed slot
takes the next configuration at epoch 0, and every member still gets what ``fit`` would
give it alone."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import Interrupt, interrupted_population, tiny_config
from tests.trainer.test_population import (
    assert_same_history,
    assert_same_run,
    reassociation_tolerance,
    solo_history,
)
from trainer import ConfigError, FitResult, Pruned, fit, fit_population, load_dataset
from trainer._population import POPULATION_CHECKPOINT, load_population_checkpoint

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


def test_on_result_gives_each_member_its_result_in_the_epoch_it_ends():
    # member 0 ends after tick 2, while 1 trains on to tick 5 and 2 takes 0's slot and
    # ends after tick 5 too: 0's result comes before any later epoch, and every result,
    # given early or with the others, is the member's solo run and the one returned
    configs = [tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=1),
               tiny_config(epochs=5, independence_penalty=1.0)]
    late = tiny_config(epochs=3, stage1_epochs=0, stage2_epochs=1, lr=2e-3)
    events: list = []
    got = fit_population(configs, refill=Queue([late]),
                         report_epoch=lambda rows: events.append(("tick", sorted(rows))),
                         on_result=lambda k, r: events.append(("result", k, r)))
    assert [e[:2] for e in events] == [("tick", [0, 1]), ("tick", [0, 1]), ("result", 0),
                                       ("tick", [1, 2]), ("tick", [1, 2]), ("tick", [1, 2]),
                                       ("result", 1), ("result", 2)]
    given = {e[1]: e[2] for e in events if e[0] == "result"}
    assert all(given[k] is got[k] for k in range(3))
    tol = _tolerance(configs[0])
    for k, cfg in enumerate([*configs, late]):
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


TIMING = ("epoch_time_s", "samples_per_s")


def _rows(result) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in result.history]


def _refilling(queue, tmp_path, *, report=None, resume=False):
    """Capacity 2: member 0 ends after tick 2 and 2 takes its slot beside member 1 (at its
    epoch 2); 1 is stopped at its epoch 3 and 3 (member 0's seed and config) takes it."""
    configs = [tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=1),
               tiny_config(epochs=6, independence_penalty=1.0)]
    return fit_population(configs, refill=queue, checkpoint_dir=tmp_path, resume=resume,
                          report=report, evaluate=False,
                          report_epoch=lambda rows: [1] if rows.get(1, {}).get("epoch") == 3
                          else None)


REFILLS = [tiny_config(epochs=4, stage1_epochs=1, stage2_epochs=1, lr=2e-3),
           tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=1)]


@pytest.mark.parametrize("stop", [(0, 1), (2, 0), (3, 0)],
                         ids=["slot-freed-not-yet-refilled", "refilled-member-mid-run",
                              "refilled-after-a-stop"])
def test_a_resumed_refilling_population_equals_an_uninterrupted_one(tmp_path, stop):
    whole_queue = Queue(REFILLS)
    whole = _refilling(whole_queue, tmp_path / "whole")
    assert isinstance(whole[1], Pruned) and whole[1].epochs_run == 4
    assert [type(r) for r in whole] == [FitResult, Pruned, FitResult, FitResult]

    def interrupt(k, row):
        if (k, int(row["epoch"])) == stop:
            raise Interrupt

    queue = Queue(REFILLS)  # one caller across the interruption: what it handed out is out
    with pytest.raises(Interrupt):
        _refilling(queue, tmp_path / "cut", report=interrupt)
    resumed = _refilling(queue, tmp_path / "cut", resume=True)
    assert queue.asked == whole_queue.asked  # no slot offered twice, none forgotten
    assert len(resumed) == len(whole)
    for a, b in zip(whole, resumed, strict=True):
        assert type(a) is type(b)
        assert _rows(a) == _rows(b)  # float-exact
        if isinstance(a, FitResult):
            assert a.final == b.final
    # the stopped member's entry says so, and the refilled members' configs are stored
    entries = load_population_checkpoint(tmp_path / "cut" / POPULATION_CHECKPOINT,
                                         [tiny_config(epochs=2, stage1_epochs=0,
                                                      stage2_epochs=1),
                                          tiny_config(epochs=6, independence_penalty=1.0)])
    assert [bool(e.get("pruned")) for e in entries] == [False, True, False, False]


def test_resume_refuses_other_initial_configs_and_reads_an_old_checkpoint(tmp_path):
    configs = [tiny_config(epochs=3, stage1_epochs=0, stage2_epochs=1),
               tiny_config(epochs=3, stage1_epochs=0, stage2_epochs=1, lr=2e-3)]
    whole = fit_population(configs, checkpoint_dir=tmp_path / "whole", evaluate=False)

    interrupted_population(configs, tmp_path / "cut", stop_epoch=1)
    path = tmp_path / "cut" / POPULATION_CHECKPOINT
    # a checkpoint written before refills: its members' entries alone
    torch.save({"members": torch.load(path, weights_only=True)["members"]}, path)
    with pytest.raises(ConfigError, match="holds 2 members, not 1"):
        fit_population(configs[:1], checkpoint_dir=tmp_path / "cut", resume=True)
    resumed = fit_population(configs, checkpoint_dir=tmp_path / "cut", resume=True,
                             evaluate=False)
    assert [_rows(r) for r in resumed] == [_rows(r) for r in whole]
    # a checkpoint that holds refills knows which members were the initial ones
    with pytest.raises(ConfigError, match="started with other members than these 1"):
        fit_population(configs[:1], checkpoint_dir=tmp_path / "cut", resume=True)

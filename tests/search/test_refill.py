"""Populations that refill and stop member by member: the driver's coordinator, the
population searcher's refills and how it tells pruned members."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from search.contract import (
    Failure,
    Outcome,
    Pruned,
    Setting,
    answer_message,
    population_final,
    read_answer,
    refill_message,
)
from search.db.storage import read_epochs
from search.driver.coordinator import Coordinator, actor_name, start_coordinator
from search.driver.moasha import CONTINUE, STOP, RungBook

OBJECTIVES = ("task_accuracy", "disentanglement_score")


def _row(acc: float, dis: float, *, epoch: int = 3, stage: int = 3):
    return {"epoch": float(epoch), "stage": float(stage), "val_acc_y": acc,
            "val_disentanglement_score": dis, "val_zay_collapsed": 0.0}


def test_the_coordinator_holds_posted_settings_until_taken_and_decides_by_its_book():
    book = RungBook((4,), OBJECTIVES, ("maximize", "maximize"), reduction_factor=2)
    c = Coordinator(book)
    assert c.take("ray1") is None  # nothing posted yet: the worker polls again
    c.put("ray1", [Setting({"lambda": 1.0}, 7).encode()])
    assert [Setting.decode(s) for s in c.take("ray1")] == [Setting({"lambda": 1.0}, 7)]
    assert c.take("ray1") is None  # taken once
    c.put("ray2", [])
    assert c.take("ray2") == []  # an empty list: there are no more
    # the book's decisions: trial 0 alone continues; trial 1, dominated, is cut (n 2 keep 1)
    assert c.decide(0, _row(0.5, 0.5)) == CONTINUE
    assert c.decide(1, _row(0.4, 0.4)) == STOP
    assert c.decide(2, _row(0.1, 0.1, epoch=1)) == CONTINUE  # off the rungs
    assert c.pruned() == 1
    assert Coordinator(None).decide(3, _row(0.0, 0.0)) == CONTINUE  # refill only: no book


def _searcher(tmp_path, *, size: int, total: int | None = None, experiment: str = "e"):
    from search.db.study import open_study
    from search.driver.population import PopulationSearcher
    from search.objective import Objective
    from search.space import SearchSpace

    opened = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", Objective(), sampler="random",
                        seed=0)
    return PopulationSearcher(opened.study, SearchSpace(epochs=6, stage1_epochs=(0, 6),
                                                        stage2_epochs=(0, 6)),
                              Objective(), base_config={}, trial_options={"refill": True},
                              experiment=experiment, engine=opened.storage.engine, size=size,
                              total=total)


FINAL = {"task_accuracy": 0.9, "zay_independence_score": 0.95, "zay_collapsed": 0.0,
         "epoch": 5.0, "stage": 3.0}


def test_a_population_refills_through_the_coordinator_and_tells_every_member(tmp_path,
                                                                             local_ray):
    import ray

    coordinator = start_coordinator("refill-test", None)
    try:
        s = _searcher(tmp_path, size=2, total=5, experiment="refill-test")
        config = s.suggest("ray1")
        assert [m["optuna_number"] for m in config["members"]] == [0, 1]
        # member 0 stopped: the worker (holding 2) asks for one setting, Optuna is asked
        s.on_trial_result("ray1", refill_message(1, 2))
        got = ray.get(coordinator.take.remote("ray1"))
        assert [Setting.decode(g).optuna_number for g in got] == [2]
        # three more asked, but the study's total (5) leaves room for two in all
        s.on_trial_result("ray1", refill_message(3, 3))
        assert [g["optuna_number"] for g in ray.get(coordinator.take.remote("ray1"))] == [3, 4]
        s.on_trial_result("ray1", refill_message(1, 5))
        assert ray.get(coordinator.take.remote("ray1")) == []  # no more
        # a retried attempt (its worker was lost) asks again from its third setting on: it
        # gets the same trials back, and nothing new is asked
        s.on_trial_result("ray1", refill_message(2, 2))
        assert [g["optuna_number"] for g in ray.get(coordinator.take.remote("ray1"))] == [2, 3]
        trials = s.study.get_trials()
        assert [t.user_attrs["population_member"] for t in trials] == [0, 1, 2, 3, 4]
        assert {t.user_attrs["population_id"] for t in trials} == {0}
        # the worker's answers, in the order the members came: one pruned at its rung
        s.on_trial_result("ray1", {"epoch": 3.0, "stage": 3.0, "member": 1.0,
                                   "val_acc_y": 0.2, "final": 0.0})
        answers = [Outcome(FINAL | {"task_accuracy": 0.5}, config={}),
                   Pruned(_row(0.1, 0.1) | {"member": 1.0}),
                   Outcome(FINAL, config={}),
                   Failure({"reason": "DivergenceError: diverged (epoch 2, stage 2)"}),
                   Outcome(FINAL | {"task_accuracy": 0.7}, config={})]
        s.on_trial_complete("ray1", population_final(answers, 5))
    finally:
        ray.kill(coordinator)
    trials = s.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE]
    assert [t.values for t in trials if t.state == TrialState.COMPLETE] == [
        [0.5, 0.95], [0.9, 0.95], [0.7, 0.95]]
    pruned = trials[1]
    assert pruned.user_attrs["epochs_run"] == 4.0  # its rung row (epoch 3) is its last
    assert [r["epoch"] for r in read_epochs(s._engine, pruned._trial_id)] == [3.0]
    assert "member" not in read_epochs(s._engine, pruned._trial_id)[0]
    assert s.outcomes == {"complete": 3, "prune": 1, "fail": 1}


def test_a_member_answered_as_it_ends_is_told_then_and_only_once(tmp_path):
    s = _searcher(tmp_path, size=2)
    s.suggest("ray1")
    # member 0 ends while member 1 trains on: its trial is COMPLETE at once, 1 is running
    s.on_trial_result("ray1", answer_message(0, Outcome(FINAL | {"task_accuracy": 0.5},
                                                        config={})))
    s.on_trial_result("ray1", answer_message(1, Pruned(_row(0.1, 0.1) | {"member": 1.0})))
    assert [t.state for t in s.study.get_trials()] == [TrialState.COMPLETE,
                                                       TrialState.PRUNED]
    assert s.study.get_trials()[0].values == [0.5, 0.95]
    # the population's final result holds both answers again (one of them different, as
    # a retried attempt's could be): nothing is told twice
    s.on_trial_complete("ray1", population_final(
        [Outcome(FINAL | {"task_accuracy": 0.9}, config={}), Outcome(FINAL, config={})], 2))
    trials = s.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[0].values == [0.5, 0.95]
    assert s.outcomes == {"complete": 1, "prune": 1, "fail": 0}


def test_a_stopping_driver_refills_nothing(tmp_path, local_ray):
    import ray

    coordinator = start_coordinator("refill-stop", None)
    try:
        s = _searcher(tmp_path, size=2, experiment="refill-stop")
        s.suggest("ray1")
        s.request_stop()
        s.on_trial_result("ray1", refill_message(2, 2))
        assert ray.get(coordinator.take.remote("ray1")) == []
        assert len(s.study.get_trials()) == 2
    finally:
        ray.kill(coordinator)


def test_the_coordinators_name_is_the_experiments():
    assert actor_name("digits-20261207-120000-42") == (
        "stagetune-coordinator-digits-20261207-120000-42")


@pytest.mark.parametrize("flags, message", [
    (dict(population=2, asha=True, objective="scalar"), "--asha in a scalar study"),
    (dict(population=2, asha=True, lodo=True), "--population and --lodo"),
])
def test_what_a_population_cannot_honour_is_refused(flags, message):
    from search.driver.population import check_population

    with pytest.raises(ValueError, match=message):
        check_population(flags["population"], asha=flags["asha"], replicates=1,
                         pareto=flags.get("objective", "pareto") == "pareto",
                         lodo=flags.get("lodo", False))
    check_population(2, asha=True, replicates=2, pareto=True)  # MO-ASHA with populations


class _Driver:
    """The driver's side as a worker sees it, in-process: a queue of settings to hand out
    and a rule for which trial a rung stops (the RungBook's decisions are
    tests/search/test_moasha.py's; Ray's transport is the sweep test's)."""

    def __init__(self, pending: list[Setting], stop: set[int]) -> None:
        self.pending, self.stop = list(pending), stop
        self.asked: list[int] = []
        self.given: list[Setting] = []
        self.decided: list[tuple[int, float]] = []

    def client(self, name: str, trial_id: str, report):
        driver = self

        class Client:
            def refill(self, settings: int, start: int) -> list[Setting]:
                assert start == 2 + len(driver.given)  # the worker's next index
                driver.asked.append(settings)
                got, driver.pending = driver.pending[:settings], driver.pending[settings:]
                driver.given += got
                return got

            def stops(self, number: int, row) -> bool:
                driver.decided.append((number, row["epoch"]))
                return number in driver.stop

        return Client()


@pytest.mark.usefixtures("one_thread")
def test_a_worker_fills_freed_slots_with_the_next_settings_and_stops_pruned_ones(
        monkeypatch):
    from search.contract import Request
    from search.worker.population import run_population
    from tests.search.conftest import TINY_TRIAL
    from trainer import RunConfig

    def setting(number: int, epochs: int) -> Setting:
        return Setting({"epochs": epochs, "stage1_epochs": 0, "stage2_epochs": 0,
                        "patience": 10}, number)

    # slots 2; trial 0 ends after 2 epochs, 1 after 4; 2 and 3 wait; 2 is pruned at rung 2
    driver = _Driver([setting(2, 4), setting(3, 2)], stop={2})
    monkeypatch.setattr("search.worker.population.CoordinatorClient", driver.client)
    base = RunConfig().replace(**TINY_TRIAL).to_dict()
    request = Request(base=base, settings=(setting(0, 2), setting(1, 4)), population=True,
                      objective={"mode": "pareto", "disentanglement": "zay_independence_score"},
                      coordinator="test", refill=True, rungs=(2,))
    reported: list[dict] = []
    answers = run_population(request, reported.append, trial_id="ray1")
    assert [type(a).__name__ for a in answers] == ["Outcome", "Outcome", "Pruned", "Outcome"]
    # each setting's answer went to the driver as the setting ended, in that order, and
    # is the one the population's final result holds
    early = [read_answer(r) for r in reported if read_answer(r) is not None]
    assert [k for k, _ in early] == [0, 2, 1, 3]
    assert all(a == answers[k] for k, a in early)
    rows = [r for r in reported if read_answer(r) is None]
    # tick by tick (members at their own epochs): 0 and 1; 0 ends at tick 2, 2 joins at
    # tick 3 and is pruned at its rung (epoch 1, tick 4), 1 ends at tick 4; 3 joins at tick 5
    by_member = {k: [int(r["epoch"]) for r in rows if int(r["member"]) == k] for k in range(4)}
    assert by_member == {0: [0], 1: [0, 1, 2], 2: [0, 1], 3: [0]}  # ends travel as finals
    # a slot freed after tick 2, two after tick 4 (one setting left to give), one after 5
    # (nothing left: the worker asks no more)
    assert driver.asked == [1, 2, 1]
    assert driver.decided == [(1, 1.0), (2, 1.0)]  # rung 2 = epoch index 1, once each
    assert answers[2].row["epoch"] == 1.0  # the pruned setting's row at its rung
    # how full the population ran until each setting ended: 0 after 2 ticks (2 + 2
    # member-epochs), 1 after 4 (4 + 2 + 2 pruned), 3 after 6 (all 10 over 6 ticks)
    for k, ticks, member_epochs in ((0, 2.0, 4.0), (1, 4.0, 8.0), (3, 6.0, 10.0)):
        assert answers[k].metrics["population_slots"] == 2.0
        assert answers[k].metrics["population_ticks"] == ticks
        assert answers[k].metrics["population_member_epochs"] == member_epochs
    assert answers[3].last_epoch["epoch"] == 1.0 and answers[3].metrics["epochs_run"] == 2.0


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_population_sweep_with_moasha_prunes_members_and_refills_their_slots(
        tmp_path, local_ray):
    """Through Ray: MO-ASHA decides member by member in populations of 2, pruned members
    keep their rows, and the freed slots take the next trials until the total is done."""
    from dataclasses import replace

    import optuna

    from search.driver.sweep import run_sweep
    from search.space import SearchSpace
    from tests.search.conftest import tiny_options

    url = f"sqlite:///{tmp_path / 'p.db'}"
    # every trial is past stage 1 at rung 2 (stage 1 at most one epoch); with a reduction
    # factor of 100 only the best point so far continues at the rung
    opts = replace(tiny_options(url, "p", 6, tmp_path, population=2, asha=True, rungs=(2,),
                                reduction_factor=100.0),
                   space=SearchSpace(epochs=4, stage1_epochs=(0, 1), stage2_epochs=(0, 2)))
    run_sweep(opts)
    study = optuna.load_study(study_name="p", storage=url)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 6 and all(s.is_finished() for s in states)
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1
    from search.db.study import study_engine

    engine = study_engine(study)
    for t in trials:
        epochs = [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)]
        assert epochs == ([0, 1] if t.state == optuna.trial.TrialState.PRUNED
                          else [0, 1, 2, 3]), (t.number, t.state, epochs)
    # slots were refilled: some population ran more members than its two slots
    members = {}
    for t in trials:
        members.setdefault(t.user_attrs["population_id"], []).append(
            t.user_attrs["population_member"])
    assert max(len(m) for m in members.values()) > 2, members
    assert all(sorted(m) == list(range(len(m))) for m in members.values())


def test_a_population_that_ended_before_a_handed_out_member_fails_that_member(tmp_path,
                                                                           local_ray):
    import ray

    coordinator = start_coordinator("refill-short", None)
    try:
        s = _searcher(tmp_path, size=2, experiment="refill-short")
        s.suggest("ray1")
        s.on_trial_result("ray1", refill_message(1, 2))  # handed out, never trained
        ray.get(coordinator.take.remote("ray1"))
        s.on_trial_complete("ray1", population_final(
            [Outcome(FINAL, config={}), Outcome(FINAL, config={})], 2))
    finally:
        ray.kill(coordinator)
    trials = s.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                         TrialState.FAIL]
    assert trials[2].user_attrs["fail_reason"].startswith("not trained")


def test_a_rung_decision_is_the_same_when_a_retried_population_asks_again():
    book = RungBook((4,), OBJECTIVES, ("maximize", "maximize"), reduction_factor=2)
    assert book.on_row(0, _row(0.5, 0.5)) == CONTINUE
    assert book.on_row(1, _row(0.4, 0.4)) == STOP
    assert book.on_row(1, _row(0.9, 0.9)) == STOP  # its first row at the rung decided it
    assert book.on_row(0, _row(0.1, 0.1)) == CONTINUE

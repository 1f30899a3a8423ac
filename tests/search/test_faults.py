"""Faults without Ray: concurrent drivers, failure reasons, resume checks, bad input,
checkpoints, driver liveness. Each test names a row of the fault table in docs/faults.md."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.cli import main
from search.contract import Outcome
from search.db.storage import beat, drivers, read_epochs, redact, study_lock
from search.db.study import StudyError, open_study, recover_orphans, trial_seed
from search.driver.searcher import StudySearcher
from search.objective import Objective
from search.space import SearchSpace
from search.worker.solo import failure_result
from tests.search.conftest import checksum
from tests.tampered import RunsCode

optuna.logging.set_verbosity(optuna.logging.ERROR)
METRICS = {"task_accuracy": 0.9, "zay_independence_score": 0.95, "zay_collapsed": 0.0,
           "epoch": 5.0, "stage": 3.0}
FINAL = Outcome(METRICS, config={}).encode()  # a trial's final result, as a worker sends it
#: the penalty always on and stage 2 never empty (where the penalty acts), so every trial
#: samples a continuous lambda: two trials share it only if their samplers shared a
#: random stream
LAMBDA_SPACE = dict(epochs=6, stage1_epochs=(0, 5), stage2_epochs=(1, 6),
                    fixed={"use_independence_penalty": True})


def _url(kind: str, tmp_path: Path, request) -> str:
    return (f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite"
            else request.getfixturevalue("pg_url"))


def _searcher(opened, experiment="e", **kw) -> StudySearcher:
    events: list[tuple[str, dict]] = []
    s = StudySearcher(opened.study, SearchSpace(**LAMBDA_SPACE), Objective(), base_config={},
                      trial_options={}, experiment=experiment, engine=opened.storage.engine,
                      on_event=lambda kind, info: events.append((kind, info)), **kw)
    s.events = events
    return s


# -- item 1: the total holds across drivers ---------------------------------------------


def _driver(url: str, study: str, total: int, barrier, results) -> None:
    """One driver process: open the study, then ask and tell until the searcher stops."""
    from ray.tune.search import Searcher

    barrier.wait()  # every driver opens the (new) study at the same moment
    opened = open_study(url, study, Objective(), sampler="random", seed=0)
    s = _searcher(opened, experiment=f"driver-{os.getpid()}", total=total,
                  sampler="random", seed=0)
    told = 0
    for i in range(total):  # without a limit of its own a driver would run `total`
        if s.suggest(f"t{i}") == Searcher.FINISHED:
            break
        time.sleep(0.02)
        s.on_trial_complete(f"t{i}", FINAL)
        told += 1
    results.put((opened.created, told))


@pytest.mark.parametrize("kind", [pytest.param("sqlite", marks=pytest.mark.slow),
                                  pytest.param("pg", marks=pytest.mark.postgres)])
def test_three_drivers_on_one_new_study_hold_the_total(tmp_path, request, kind):
    url = _url(kind, tmp_path, request)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_driver, args=(url, "s", 6, barrier, results))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    outcome = [results.get(timeout=5) for _ in procs]
    assert sum(created for created, _ in outcome) == 1  # one made it, two loaded it
    assert sum(told for _, told in outcome) == 6
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)
    lambdas = [t.params["independence_penalty"] for t in study.trials]
    assert len(set(lambdas)) == 6  # no two drivers proposed the same setting


def _open(url: str, study: str, at: float) -> bool:
    while time.time() < at:
        time.sleep(0.001)
    return open_study(url, study, Objective(), sampler="random", seed=0).created


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
def test_a_new_study_opened_by_four_processes_at_once(tmp_path, request, kind):
    url = _url(kind, tmp_path, request)
    open_study(url, "warm", Objective(), sampler="random", seed=0)  # the schema exists
    with mp.get_context("spawn").Pool(4) as pool:
        pool.apply(time.sleep, (0,))
        for round_ in range(4):
            at = time.time() + 1.0
            created = pool.starmap(_open, [(url, f"s{round_}", at)] * 4)
            assert sorted(created) == [False, False, False, True]


def test_trial_seeds_differ_by_trial_and_repeat_by_seed():
    seeds = [trial_seed(0, n) for n in range(500)]
    assert len(set(seeds)) == 500
    assert seeds == [trial_seed(0, n) for n in range(500)]
    assert trial_seed(1, 0) != trial_seed(0, 0) and trial_seed(None, 3) is None


# -- item 2: failures carry their reason -------------------------------------------------


@pytest.fixture
def searcher(tmp_path):
    opened = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", Objective(),
                        sampler="random", seed=0)
    return _searcher(opened)


def test_a_raised_exception_is_stored_with_type_message_traceback_epoch_stage(searcher):
    searcher.suggest("t")
    try:
        raise FloatingPointError("loss exploded")
    except FloatingPointError as exc:
        result = failure_result(exc, {"phase": "training", "epoch": 4, "stage": 2}).encode()
    searcher.on_trial_complete("t", result)
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.FAIL
    assert t.user_attrs["fail_reason"] == "FloatingPointError: loss exploded (epoch 4, stage 2)"
    assert t.user_attrs["fail_type"] == "FloatingPointError"
    assert t.user_attrs["fail_message"] == "loss exploded"
    assert (t.user_attrs["fail_epoch"], t.user_attrs["fail_stage"]) == (4, 2)
    assert "raise FloatingPointError" in t.user_attrs["fail_traceback"]
    assert searcher.events[-1] == ("fail", {"number": 0, "reason": t.user_attrs["fail_reason"]})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_objective_is_a_failure(searcher, bad):
    searcher.suggest("t")
    searcher.on_trial_complete("t", FINAL | {"task_accuracy": bad})
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.FAIL and t.values is None
    assert t.user_attrs["fail_reason"] == "non-finite objective"
    assert searcher.events[-1][0] == "fail"
    assert searcher.outcomes == {"complete": 0, "prune": 0, "fail": 1}


def test_a_lost_worker_is_a_failure_with_its_reason(searcher):
    searcher.suggest("t")
    searcher.on_trial_complete("t", None, error=True)  # Tune: retries exhausted
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("worker lost")


# -- item 5: ASHA states ----------------------------------------------------------------


def test_a_pruned_trial_keeps_the_epoch_it_was_stopped_on(searcher):
    searcher.suggest("t")
    rows = [{"epoch": float(e), "stage": 3.0, "val_acc_y": 0.1 * e, "final": 0.0}
            for e in range(3)]
    for row in rows[:2]:
        searcher.on_trial_result("t", row)
    searcher.on_trial_complete("t", rows[2])  # the stopping result goes here only
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.PRUNED and t.user_attrs["epochs_run"] == 3.0
    assert [r["epoch"] for r in read_epochs(searcher._engine, t._trial_id)] == [0.0, 1.0, 2.0]


def test_a_trial_stopped_on_its_final_result_is_complete_with_every_epoch(searcher):
    searcher.suggest("t")
    searcher.on_trial_result("t", {"epoch": 0.0, "stage": 3.0, "final": 0.0})
    last = {"epoch": 1.0, "stage": 3.0, "val_acc_y": 0.5}
    searcher.on_trial_complete("t", Outcome(METRICS, config={}, last_epoch=last).encode())
    t = searcher.study.get_trials()[0]
    assert t.state == TrialState.COMPLETE
    assert [r["epoch"] for r in read_epochs(searcher._engine, t._trial_id)] == [0.0, 1.0]


# -- item 1: the total, counted at every ask ---------------------------------------------


def test_asking_stops_at_the_total_and_orphans_do_not_count(searcher):
    from ray.tune.search import Searcher

    searcher.total = 2
    searcher.suggest("a")
    searcher.suggest("b")  # running trials count: a third would overshoot
    assert searcher.suggest("c") == Searcher.FINISHED
    recover_orphans(searcher.study)  # both re-queued (no live driver): they no longer count
    assert searcher.suggest("d") != Searcher.FINISHED


# -- item 4: resume compares the whole objective ------------------------------------------


def test_resume_refuses_another_weight_mode_or_metric(tmp_path, capsys):
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    open_study(url, "scalar", Objective(mode="scalar", weight=0.5), sampler="random", seed=0)
    open_study(url, "pareto", Objective(), sampler="random", seed=0)
    with pytest.raises(StudyError, match=r"weight 0\.5 \(this run: 0\.7\)"):
        open_study(url, "scalar", Objective(mode="scalar", weight=0.7), sampler="random",
                   seed=0)
    # the weight is no part of a pareto study's values: any weight resumes it
    assert not open_study(url, "pareto", Objective(weight=0.9), sampler="random",
                          seed=0).created
    before = checksum(db)
    for argv in (["--objective", "scalar", "--weight", "0.7"],
                 ["--objective", "scalar", "--disentanglement-metric", "zay_label_leakage"],
                 ["--objective", "pareto"]):
        code = main(["run", "--storage", url, "--study", "scalar", "--epochs", "6",
                     "--n-trials", "1", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "exists with other objectives" in err[0]
    assert checksum(db) == before


# -- item 7: bad input, one line, nothing stored ------------------------------------------


@pytest.mark.parametrize(
    ("space_text", "suffix", "message"),
    [
        ("stage1_epochs: [1, 3\nlambda: {", ".yaml", "is not valid YAML"),
        ("stage1_epochs: 5\n", ".yaml", "stage1_epochs must be a range [lo, hi] (got 5)"),
        ("lambda: [1, 2, 3]\n", ".yaml", "must be a range of two numbers"),
        ('{"stage1_epochs": [1,', ".json", "is not valid JSON"),
    ],
)
def test_a_bad_space_file_is_one_line(tmp_path, capsys, space_text, suffix, message):
    space = tmp_path / f"space{suffix}"
    space.write_text(space_text)
    code = main(["run", "--storage", f"sqlite:///{tmp_path / 'new.db'}", "--epochs", "6",
                 "--space", str(space)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "new.db").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--import", "no_such_module_xyz"], "cannot import --import module 'no_such_module_xyz'"),
        (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
        (["--dataset", "digits", "--data-root", "/no/such/folder"],
         "data root /no/such/folder does not exist"),
    ],
)
def test_a_bad_trial_config_is_refused_before_launch(tmp_path, capsys, argv, message):
    db = tmp_path / "s.db"
    open_study(f"sqlite:///{db}", "stagetune", Objective(), sampler="random", seed=0)
    before = checksum(db)
    code = main(["run", "--storage", f"sqlite:///{db}", "--epochs", "6", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert checksum(db) == before


def test_status_never_creates_or_changes_a_database(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    code = main(["status", "--storage", f"sqlite:///{missing}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no study database" in err[0]
    assert not missing.exists()
    # a database plain Optuna wrote (none of our tables): status reads it, adds nothing
    plain = tmp_path / "plain.db"
    optuna.create_study(storage=f"sqlite:///{plain}", study_name="stagetune")
    before = checksum(plain)
    assert main(["status", "--storage", f"sqlite:///{plain}"]) == 0
    assert checksum(plain) == before
    tables = {r[0] for r in sqlite3.connect(plain).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(t.startswith("stagetune_") for t in tables)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    before = checksum(junk)
    code = main(["status", "--storage", f"sqlite:///{junk}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and checksum(junk) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u@db/x?password=Hunter2&sslmode=require",
         "postgresql://u@db/x?password=***&sslmode=require"),
        ("postgresql://db/x?sslmode=require&password=Hunter2",
         "postgresql://db/x?sslmode=require&password=***"),
        ("postgresql://u:Hunter2@db/x?PASSWORD=Hunter2", "postgresql://u:***@db/x?PASSWORD=***"),
        ("mysql://u@h/d?passwd=Hunter2", "mysql://u@h/d?passwd=***"),
    ],
)
def test_query_parameter_passwords_are_redacted(text, expected):
    assert redact(text) == expected


def test_an_unreachable_url_with_a_query_password_never_shows_it(capsys):
    url = "postgresql://stagetune@127.0.0.1:1/sweeps?password=Hunter2Secret"
    for argv in (["run", "--storage", url, "--epochs", "6"], ["status", "--storage", url]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and "Hunter2Secret" not in out + err and "password=***" in err


# -- item 8: checkpoints, liveness, tagging, driver rows ----------------------------------


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    from trainer import ConfigError, RunConfig
    from trainer._fit import load_checkpoint

    marker = tmp_path / "pwned"
    cfg = RunConfig()
    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as fh:
        pickle.dump({"config_json": cfg.to_json(), "model": RunsCode(marker)}, fh,
                    protocol=2)
    with pytest.raises(ConfigError, match="refusing checkpoint"):
        load_checkpoint(path, cfg)
    assert not marker.exists()
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="cannot read checkpoint|refusing checkpoint"):
        load_checkpoint(path, cfg)


def test_a_written_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    import torch

    from tests.search.conftest import TINY_TRIAL
    from trainer import RunConfig, fit
    from trainer._fit import load_checkpoint

    cfg = RunConfig().replace(**(TINY_TRIAL | {"epochs": 2}))

    class Stop(Exception):
        pass

    def stop_after_first_epoch(row):
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, checkpoint_dir=tmp_path, report=stop_after_first_epoch)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no error: plain
    assert RunConfig.from_dict(json.loads(raw["config_json"])) == cfg
    assert load_checkpoint(tmp_path / "checkpoint.pt", cfg)["epoch"] == 0


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
def test_liveness_uses_the_server_clock(tmp_path, request, kind, monkeypatch):
    url = _url(kind, tmp_path, request)
    opened = open_study(url, "s", Objective(), sampler="random", seed=0)
    s = _searcher(opened, experiment="skewed")
    s.suggest("t")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # this host is an hour behind
    beat(opened.storage.engine, "skewed")
    monkeypatch.setattr(time, "time", real)
    assert recover_orphans(opened.study, opened.storage.engine) == []  # alive: not orphaned
    with opened.storage.engine.begin() as conn:
        conn.execute(drivers.update().values(heartbeat_at=drivers.c.heartbeat_at - 3600))
    assert recover_orphans(opened.study, opened.storage.engine) == [0]
    with opened.storage.engine.connect() as conn:  # the dead driver's row is gone
        assert conn.execute(sa.select(sa.func.count()).select_from(drivers)).scalar() == 0


def test_a_trial_is_never_an_orphan_before_it_is_tagged(tmp_path):
    opened = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", Objective(),
                        sampler="random", seed=0)
    engine = opened.storage.engine
    result: list[list[int]] = []
    with study_lock(engine, "s"):
        trial = opened.study.ask()  # created, not yet tagged with its driver
        other = threading.Thread(target=lambda: result.append(
            recover_orphans(optuna.load_study(study_name="s", storage=opened.storage),
                            engine)))
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive()  # another driver's resume waits for the tag
        trial.set_user_attr("tune_experiment", "alive")
        beat(engine, "alive")
    other.join(timeout=30)
    assert result == [[]]
    assert opened.study.get_trials()[0].state == TrialState.RUNNING

"""Faults in real sweeps (local Ray, tiny configs): deterministic errors, pre-launch
checks, ASHA's last epoch, graceful stops, concurrent drivers. Rows of the fault table
in docs/faults.md name these tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.cli import main
from search.db.storage import drivers, read_epochs
from search.driver.sweep import run_sweep
from search.objective import Objective
from search.space import SearchSpace
from tests.search.conftest import TINY_TRIAL, tiny_options
from trainer import RunConfig, stage_of

ROOT = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _config_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(RunConfig().replace(**(TINY_TRIAL | changes)).to_json())
    return path


def _sweep_argv(url: str, study: str, n: int, tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--storage", url, "--study", study, "--n-trials", str(n),
            "--base-config", str(_config_file(tmp_path)), "--sampler", "random",
            "--num-cpus", "2", "--tune-dir", str(tmp_path / "tune"), *extra]


def _driver_rows(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(drivers)).scalar_one()
    finally:
        engine.dispose()


def test_a_deterministic_error_fails_once_with_its_reason(tmp_path, local_ray, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = _sweep_argv(url, "nan", 2, tmp_path, "--dataset", "nan_digits", "--data-root",
                       str(tmp_path), "--import", "tests.search.fault_plugins",
                       "--retries", "2", "--set", "stage1_epochs=1", "--set", "stage2_epochs=1")
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and "all 2 trials of this run failed" in err
    # every pixel NaN: every batch is non-finite, and the trainer gives up after
    # max_bad_epochs (3) such epochs, i.e. in epoch 2, which stage_of places in stage 3
    cfg = RunConfig().replace(**(TINY_TRIAL | {"stage1_epochs": 1, "stage2_epochs": 1}))
    epoch = cfg.optim.max_bad_epochs - 1
    loads = (tmp_path / "loads.txt").read_text().split()
    assert len(loads) == 2  # one run per trial: a deterministic error is not retried
    study = optuna.load_study(study_name="nan", storage=url)
    engine = sa.create_engine(url)
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_type"] == "DivergenceError"
        assert (t.user_attrs["fail_epoch"], t.user_attrs["fail_stage"]) == (
            epoch, stage_of(epoch, cfg))
        assert t.user_attrs["fail_reason"].startswith("DivergenceError: training diverged")
        assert "raise DivergenceError" in t.user_attrs["fail_traceback"]
        assert [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)] == list(range(epoch))
    engine.dispose()
    assert out.count("FAILED (DivergenceError") == 2
    assert _driver_rows(url) == 0  # a finished driver removes its row
    code = main(["status", "--storage", url, "--study", "nan"])
    assert code == 0 and "failed 2x: DivergenceError" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gpus-per-trial", "1"], "--gpus-per-trial 1: the Ray cluster has"),
        (["--cpus-per-trial", "3"], "no node can run a trial with --cpus-per-trial 3"),
    ],
)
def test_resources_no_node_holds_are_refused_before_launch(tmp_path, local_ray, capsys,
                                                            extra, message):
    db = tmp_path / "study.db"
    code = main(_sweep_argv(f"sqlite:///{db}", "r", 2, tmp_path, *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not db.exists()  # nothing stored, no RUNNING trial left behind


@pytest.mark.slow
def test_asha_stores_full_budget_trials_complete_and_every_epoch(tmp_path, local_ray):
    # stages 1 and 2 empty: stage 3 spans the whole budget, so ASHA's clock (epochs since
    # stage 3 began) reaches max_t on every trial's last epoch
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "asha", 2, tmp_path, asha=True, max_concurrent=1)
    opts.objective = Objective(mode="scalar")  # ASHA on one score (MO-ASHA: test_moasha)
    opts.space = SearchSpace(epochs=4, fixed={"stage1_epochs": 0, "stage2_epochs": 0})
    run_sweep(opts)
    study = optuna.load_study(study_name="asha", storage=url)
    engine = sa.create_engine(url)
    assert len(study.trials) == 2
    # one at a time: the first trial is alone at every rung, so ASHA never cuts it
    assert study.trials[0].state == TrialState.COMPLETE
    for t in study.trials:
        epochs = [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)]
        if t.state == TrialState.COMPLETE:
            assert epochs == [0, 1, 2, 3]
        else:
            assert t.state == TrialState.PRUNED
            assert epochs == list(range(int(t.user_attrs["epochs_run"])))
            assert len(epochs) < 4  # pruned means stopped before the budget
    engine.dispose()
    assert _driver_rows(url) == 0


def _wait_mid_trial(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Return once a trial is RUNNING with at least one epoch stored."""
    engine = sa.create_engine(url)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                with engine.connect() as conn:
                    n = conn.execute(sa.text(
                        "SELECT COUNT(*) FROM trials t JOIN stagetune_epoch_metrics e ON "
                        "e.trial_id = t.trial_id WHERE t.state = 'RUNNING'")).scalar_one()
            except sa.exc.SQLAlchemyError:
                continue  # tables not there yet
            if n:
                return
    finally:
        engine.dispose()
    raise AssertionError(f"no trial got going (driver exit {proc.poll()}):\n"
                         + log.read_text()[-3000:])


def _signal_mid_trial(tmp_path: Path, url: str, display_url: str, sig: int
                      ) -> tuple[int, str, list[optuna.trial.FrozenTrial]]:
    config = _config_file(tmp_path, epochs=8, max_samples=300)
    argv = ["run", "--storage", display_url, "--study", "stop", "--n-trials", "4",
            "--base-config", str(config), "--sampler", "random", "--num-cpus", "2",
            "--max-concurrent", "1", "--tune-dir", str(tmp_path / "tune")]
    log = tmp_path / "driver.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "search", *argv], cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait_mid_trial(proc, url, log)
        os.kill(proc.pid, sig)  # the driver alone, as `kill` or a scheduler would
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text(), optuna.load_study(study_name="stop", storage=url).trials


def _check_stopped(code: int, text: str, trials, sig: int) -> None:
    assert code == 128 + sig, text[-3000:]
    stopped = [t for t in trials if t.user_attrs.get("fail_reason") == "driver stopped"]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for t in stopped:  # each one's settings are queued to run again
        again = [w for w in trials if w.user_attrs.get("requeued_from") == t.number]
        assert len(again) == 1 and again[0].state == TrialState.WAITING
    assert "resume with: stagetune sweep " in text and "--study stop" in text
    assert "Tuner.restore" not in text


@pytest.mark.postgres
@pytest.mark.slow
def test_sigint_marks_running_trials_stopped_and_prints_the_resume_command(tmp_path,
                                                                          pg_url):
    # trust authentication accepts any password: the one in the URL must never show
    with_password = pg_url.replace("postgres@", "postgres:Hunter2Secret@")
    code, text, trials = _signal_mid_trial(tmp_path, pg_url, with_password, signal.SIGINT)
    _check_stopped(code, text, trials, signal.SIGINT)
    assert "Hunter2Secret" not in text and "postgres:***@" in text
    assert _driver_rows(pg_url) == 0


@pytest.mark.slow
def test_sigterm_marks_running_trials_stopped_and_the_sweep_resumes(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code, text, trials = _signal_mid_trial(tmp_path, url, url, signal.SIGTERM)
    _check_stopped(code, text, trials, signal.SIGTERM)
    opts = tiny_options(url, "stop", 4, tmp_path)
    opts.base_config = json.loads(_config_file(tmp_path, epochs=8, max_samples=300)
                                  .read_text())
    opts.space = SearchSpace(epochs=8, stage1_epochs=(0, 8), stage2_epochs=(0, 8))
    summary = run_sweep(opts)
    assert summary["counts"]["complete"] == 4 and summary["counts"]["running"] == 0
    assert summary["counts"]["waiting"] == 0  # the re-queued settings ran


@pytest.mark.postgres
@pytest.mark.slow
def test_two_real_drivers_on_one_postgresql_study_store_the_total(tmp_path, pg_url):
    procs = []
    for k in range(2):
        (tmp_path / f"d{k}").mkdir()
        argv = _sweep_argv(pg_url, "two", 4, tmp_path / f"d{k}", "--max-concurrent", "1")
        procs.append(subprocess.Popen([sys.executable, "-m", "search", *argv], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = optuna.load_study(study_name="two", storage=pg_url).trials
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == 4 and len(trials) == 4
    settings = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(settings)) == 4

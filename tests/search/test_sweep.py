"""Real sweeps: local Ray, tiny trainer configs, SQLite and PostgreSQL."""

from __future__ import annotations

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

from search.db.storage import read_epochs
from search.driver.progress import front_trials
from search.driver.sweep import run_sweep
from search.objective import Objective
from tests.search.conftest import tiny_options

ROOT = Path(__file__).resolve().parents[2]


def _check_study(url: str, name: str, n: int, epochs: int = 4
                 ) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)  # plain Optuna opens it
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == n
    tune_ids = [t.user_attrs["tune_trial_id"] for t in done]
    assert len(set(tune_ids)) == len(tune_ids)  # nothing duplicated
    engine = sa.create_engine(url)
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            rows = read_epochs(engine, t._trial_id)
            assert [int(r["epoch"]) for r in rows] == list(range(epochs))
            assert len(t.values) == 2 and "zay_independence_score" in t.user_attrs
            cfg = t.user_attrs["config"]
            assert cfg["stages"]["stage1_epochs"] == t.params.get("stage1_epochs", 1)
    engine.dispose()
    return study.trials


def test_sweep_on_sqlite_then_resume_runs_only_what_is_missing(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    summary = run_sweep(tiny_options(url, "s", 3, tmp_path))
    assert summary["counts"]["complete"] == 3
    trials = _check_study(url, "s", 3)
    first = trials[0]
    assert first.user_attrs.get("baseline") is True  # the method's default goes first
    assert (first.params["stage1_epochs"], first.params["stage2_epochs"]) == (1, 1)
    assert first.params["independence_penalty"] == 10.0
    # --n-trials is the study's total: asking for 4 runs exactly one more
    summary = run_sweep(tiny_options(url, "s", 4, tmp_path))
    assert summary["counts"]["complete"] == 4
    _check_study(url, "s", 4)
    # and asking for 4 again runs nothing
    again = run_sweep(tiny_options(url, "s", 4, tmp_path))
    assert again["counts"] == summary["counts"]


def test_a_gp_sweep_searches_a_ranged_kl_weight_end_to_end(tmp_path, local_ray):
    import dataclasses

    from search.space import build_space

    url = f"sqlite:///{tmp_path / 'gp.db'}"
    space = build_space(4, ranges=["beta_zx=0.25:4", "pairs=zy_za,zy_za_zx",
                                   "suppression=kl_weight,gate"],
                        fixes=["stage1=1", "stage2=1"])
    opts = dataclasses.replace(tiny_options(url, "g", 2, tmp_path), sampler="gp", space=space)
    assert run_sweep(opts)["counts"]["complete"] == 2
    trials = _check_study(url, "g", 2)
    # trial 0 is the method's default whole: no sampler draws any part of it, the choices
    # the space offers included
    assert trials[0].user_attrs["baseline"] is True
    assert trials[0].params["beta_x"] == 1.0
    assert trials[0].params["penalty_pairs"] == "zy_za"
    assert trials[0].params["zay_suppression"] == "gate"
    stages = trials[0].user_attrs["config"]["stages"]
    assert (stages["penalty_pairs"], stages["zay_suppression"]) == ("zy_za", "gate")
    for t in trials:
        assert 0.25 <= t.params["beta_x"] <= 4.0
        assert t.user_attrs["config"]["model"]["beta_x"] == t.params["beta_x"]
        assert t.user_attrs["config"]["model"]["beta_y"] == 1.0  # not ranged: pinned
        assert "zay_collapsed" in t.constraints


@pytest.mark.postgres
def test_sweep_on_postgresql(tmp_path, local_ray, pg_url):
    summary = run_sweep(tiny_options(pg_url, "pg", 2, tmp_path))
    assert summary["counts"]["complete"] == 2
    _check_study(pg_url, "pg", 2)


def test_worker_failure_is_retried_and_told_once(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "retry", 2, tmp_path, retries=2,
                        imports=("tests.search.flaky_plugin",))
    opts.base_config["data"]["dataset"] = "flaky_digits"
    opts.base_config["data"]["data_root"] = str(tmp_path)
    summary = run_sweep(opts)
    assert (tmp_path / "crashed-once").exists()  # a worker really died
    assert summary["counts"]["complete"] == 2 and summary["counts"]["failed"] == 0
    _check_study(url, "retry", 2)


def test_asha_never_prunes_before_stage3(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "asha", 4, tmp_path, asha=True)
    opts.objective = Objective(mode="scalar")
    run_sweep(opts)
    study = optuna.load_study(study_name="asha", storage=url)
    assert len([t for t in study.trials if t.state.is_finished()]) == 4
    front = {t.number for t in front_trials(study)}
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["final_stage"] == 3.0
            # Optuna keeps a pruned scalar trial's last reported score as its value; it
            # never enters the front with that truncated value
            assert t.number not in front


@pytest.mark.slow  # a Ray sweep of six trials; RungBook's decisions have fast tests
def test_mo_asha_stops_trials_at_its_rungs_never_in_stage_1(tmp_path, local_ray):
    """A Pareto sweep with --asha --rungs 1 2 3 (of 4 epochs), one trial at a time: the
    first trial is alone at every rung and completes; a pruned trial was stopped at a
    rung's epoch, past its stage 1, with every epoch row up to it kept."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = tiny_options(url, "mo", 6, tmp_path, asha=True, rungs=(1, 2, 3),
                        max_concurrent=1)
    run_sweep(opts)
    study = optuna.load_study(study_name="mo", storage=url)
    engine = sa.create_engine(url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 6 and study.trials[0].state == TrialState.COMPLETE
    assert any(t.state == TrialState.PRUNED for t in finished)  # it did stop some
    for t in finished:
        epochs = [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)]
        if t.state == TrialState.COMPLETE:
            assert epochs == [0, 1, 2, 3]
        else:
            assert t.state == TrialState.PRUNED and t.values is None
            stop = int(t.user_attrs["epochs_run"])
            assert stop in (1, 2, 3) and epochs == list(range(stop))
            assert t.user_attrs["final_stage"] >= 2.0


def test_killed_driver_resumes_to_the_exact_total(tmp_path, local_ray):
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\n"
        "from tests.search.conftest import tiny_options\n"
        "from search.driver.sweep import run_sweep\n"
        f"opts = tiny_options({url!r}, 'k', 8, Path({str(tmp_path)!r}), max_concurrent=2)\n"
        "opts.base_config['optim']['epochs'] = 8\n"
        "opts.base_config['data']['max_samples'] = 300\n"  # trials of a few seconds
        "opts.space = opts.space.__class__(epochs=8, stage1_epochs=(0, 8), "
        "stage2_epochs=(0, 8))\n"
        "run_sweep(opts)\n"
    )
    log = tmp_path / "driver.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                                start_new_session=True, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    killed_with = None
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not db.exists():
                continue
            # plain read-only SQL: the test must not race the driver creating the schema
            try:
                engine = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
                with engine.connect() as conn:
                    rows = conn.execute(sa.text(
                        "SELECT t.trial_id, t.state, (SELECT COUNT(*) FROM "
                        "stagetune_epoch_metrics e WHERE e.trial_id = t.trial_id) "
                        "FROM trials t")).all()
                engine.dispose()
            except sa.exc.OperationalError:
                continue  # tables not there yet
            states = [state for _, state, _ in rows]
            if "COMPLETE" not in states:
                continue
            # kill while a trial is mid-training (some epochs written, several to go), so
            # it cannot finish between this read and the signal
            mid = [tid for tid, state, n in rows if state == "RUNNING" and 1 <= n <= 4]
            if mid:
                killed_with = states
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_with is not None, (
        f"driver exited (code {proc.returncode}) before it could be killed:\n"
        + log.read_text()[-3000:])
    study = optuna.load_study(study_name="k", storage=url)
    orphans = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    assert orphans
    complete_before = {t.number for t in study.trials if t.state == TrialState.COMPLETE}

    opts = tiny_options(url, "k", 8, tmp_path)
    opts.base_config["optim"]["epochs"] = 8
    opts.base_config["data"]["max_samples"] = 300
    opts.space = opts.space.__class__(epochs=8, stage1_epochs=(0, 8), stage2_epochs=(0, 8))
    summary = run_sweep(opts)
    assert sorted(summary["requeued"]) == sorted(orphans)
    trials = _check_study(url, "k", 8, epochs=8)
    by_number = {t.number: t for t in trials}
    assert complete_before <= {n for n, t in by_number.items() if t.state == TrialState.COMPLETE}
    for n in orphans:  # failed, and their settings ran again
        assert by_number[n].state == TrialState.FAIL
        rerun = [t for t in trials if t.user_attrs.get("requeued_from") == n]
        assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
        assert {k: rerun[0].params[k] for k in by_number[n].params} == by_number[n].params
    assert not [t for t in trials if t.state == TrialState.RUNNING]

"""A sweep on a real two-node Ray cluster (``ray start`` on loopback) and PostgreSQL.

Each node has one CPU and each trial asks for one, so two trials run at once, one per
node. Every trial stores the id of the Ray node it ran on.
"""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.db.storage import read_epochs
from tests.cluster._loopback import RAY, LoopbackCluster
from tests.cluster.conftest import ROOT, run_stagetune, sweep_args
from tests.test_docker import healthcheck_argv

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EPOCHS = 4

# the submitted jobs, through Ray's job client (an HTTP client of the dashboard)
_LIST_JOBS = """
import json, sys
from ray.job_submission import JobSubmissionClient
jobs = JobSubmissionClient(sys.argv[1]).list_jobs()
print(json.dumps([{"status": str(j.status.value), "runtime_env": j.runtime_env or {}}
                  for j in jobs if j.submission_id]))
"""


def _finished(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials; each must be COMPLETE with all its epochs in the database."""
    trials = optuna.load_study(study_name=study, storage=url).trials
    engine = sa.create_engine(url)
    try:
        for t in trials:
            assert t.state == TrialState.COMPLETE, (t.number, t.state, t.user_attrs)
            assert len(t.values) == 2
            assert [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)] == \
                list(range(EPOCHS))
    finally:
        engine.dispose()
    ids = [t.user_attrs["tune_trial_id"] for t in trials]
    assert len(set(ids)) == len(ids)  # each Tune trial told once
    return trials


def _healthcheck(cluster: LoopbackCluster) -> subprocess.CompletedProcess:
    argv = [a.replace("http://127.0.0.1:8265", cluster.dashboard_url)
            for a in healthcheck_argv()]
    assert argv[0] == "python"
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, timeout=30)


def _placement(trials, names: dict[str, str]) -> str:
    return ", ".join(f"#{t.number}->{names.get(t.user_attrs.get('node_id'), '?')}"
                     for t in trials)


def test_two_node_sweep_uses_both_nodes_and_resumes_after_a_restart(
        loopback: LoopbackCluster, pg_url, tiny_config, tmp_path):
    head = loopback.start_head(num_cpus=1, resources={"head_slot": 1}, dashboard=True)
    node2 = loopback.add_node("node2", num_cpus=1, resources={"node2_slot": 1})
    first = {head.node_id: "head", node2.node_id: "node2"}

    run = run_stagetune(loopback, sweep_args(pg_url, "two-node", 4, tiny_config,
                                             tmp_path / "tune", loopback.address))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trials = _finished(pg_url, "two-node")
    assert len(trials) == 4
    print("placement, first cluster:", _placement(trials, first))
    # both nodes ran trials, and nothing ran anywhere else
    assert {t.user_attrs["node_id"] for t in trials} == set(first)

    # The head image's HEALTHCHECK, run against this head (its address put in): healthy
    # while the head runs, unhealthy once it is stopped.
    assert _healthcheck(loopback).returncode == 0

    # Stop the whole cluster, start a new one, and submit the rest as a Ray job.
    loopback.stop()
    assert _healthcheck(loopback).returncode != 0
    head = loopback.start_head(num_cpus=1, resources={"head_slot": 1}, dashboard=True)
    node2 = loopback.add_node("node2", num_cpus=1, resources={"node2_slot": 1})
    second = {head.node_id: "head (restarted)", node2.node_id: "node2 (restarted)"}
    assert not set(second) & set(first)

    runtime_env = ROOT / "docker" / "ray-runtime-env.yaml"
    submit = [RAY, "job", "submit", "--address", loopback.dashboard_url,
              "--working-dir", ".", "--runtime-env", str(runtime_env), "--",
              "stagetune", *sweep_args(pg_url, "two-node", 6, tiny_config, tmp_path / "tune2",
                                       "auto")]
    job = subprocess.run(submit, env=loopback.env(), cwd=ROOT, capture_output=True,
                         text=True, timeout=400)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "resumed, 4 of 6 trials done" in job.stdout, job.stdout[-3000:]
    info = json.loads(subprocess.run(
        [sys.executable, "-c", _LIST_JOBS, loopback.dashboard_url], env=loopback.env(),
        capture_output=True, text=True, timeout=60, check=True).stdout)
    # the job's runtime environment ships the working directory and installs nothing
    assert len(info) == 1 and info[0]["status"] == "SUCCEEDED", info
    env_keys = set(info[0]["runtime_env"])
    assert not env_keys & {"pip", "uv", "conda", "container", "image_uri", "py_executable"}
    assert "working_dir" in env_keys

    resumed = _finished(pg_url, "two-node")
    assert len(resumed) == 6
    for before, after in zip(trials, resumed[:4], strict=True):  # stored results kept
        assert (after.values, after.user_attrs["node_id"]) == \
            (before.values, before.user_attrs["node_id"])
    assert {t.user_attrs["node_id"] for t in resumed[4:]} <= set(second)
    print("placement, after restart:", _placement(resumed[4:], second))

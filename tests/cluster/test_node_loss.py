"""Losing a node mid-trial: the trial is retried on the node that is left, and the sweep
still completes to its total, each trial told once."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.cluster._loopback import STAGETUNE, LoopbackCluster, RayNode
from tests.cluster.conftest import ROOT, sweep_args

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _trial_actor_running(node: RayNode) -> bool:
    """Whether a Tune trial (a function trainable's actor) runs on ``node``."""
    for pid in node.pids():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::ImplicitFunc"):
            return True
    return False


def test_killed_node_mid_trial_is_retried_on_the_head_and_the_sweep_completes(
        loopback: LoopbackCluster, pg_url, tiny_config, tmp_path):
    head = loopback.start_head(num_cpus=1, resources={"head_slot": 1}, dashboard=True)
    node2 = loopback.add_node("node2", num_cpus=1, resources={"node2_slot": 1})
    tune_dir = tmp_path / "tune"
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        sweep = subprocess.Popen(
            [STAGETUNE, *sweep_args(pg_url, "node-loss", 3, tiny_config, tune_dir,
                                    loopback.address), "--retries", "2"],
            env=loopback.env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not _trial_actor_running(node2):
            assert sweep.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial was placed on node2"
            time.sleep(0.1)
        time.sleep(2.0)  # into the trial: a trial here takes several seconds
        assert sweep.poll() is None
        node2.kill()  # the node is lost: raylet, its workers, all at once
        code = sweep.wait(timeout=400)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    output = log.read_text()
    assert code == 0, output[-3000:]

    trials = optuna.load_study(study_name="node-loss", storage=pg_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, output[-3000:]
    # every trial ended on the head, the one that was on node2 included
    assert {t.user_attrs["node_id"] for t in trials} == {head.node_id}
    ids = [t.user_attrs["tune_trial_id"] for t in trials]
    assert len(set(ids)) == 3  # told once each: no duplicate, no extra FAIL row
    # Tune recorded the lost attempt of exactly one trial, and that trial then completed
    failed_attempts = {p.parent.name for p in tune_dir.rglob("error.txt")}
    assert len(failed_attempts) == 1, failed_attempts
    lost = next(iter(failed_attempts))
    assert sum(tid in lost for tid in ids) == 1, (lost, ids)
    print("lost attempt:", lost, "->", [(t.number, t.user_attrs["tune_trial_id"])
                                        for t in trials])

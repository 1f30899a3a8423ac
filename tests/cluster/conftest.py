"""Fixtures of the multi-node tests: a loopback Ray cluster that is always torn down."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster._loopback import STAGETUNE, LoopbackCluster
from tests.search.conftest import TINY_TRIAL
from trainer import RunConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loopback() -> Iterator[LoopbackCluster]:
    """An empty cluster record; the test starts its nodes. Every process it started is
    ended afterwards, whatever happened, and none may survive."""
    cluster = LoopbackCluster()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A trainer configuration small enough for a few seconds per trial on one CPU."""
    path = tmp_path / "tiny.json"
    # 80 samples: the evaluation's probes need more samples than classes in every split
    path.write_text(json.dumps(RunConfig().replace(**{**TINY_TRIAL, "max_samples": 80})
                               .to_dict()))
    return path


def sweep_args(storage: str, study: str, n_trials: int, config: Path, tune_dir: Path,
               address: str) -> list[str]:
    """``stagetune sweep`` arguments of a tiny sweep: one CPU per trial, random sampler."""
    return ["sweep", "--address", address, "--storage", storage, "--study", study,
            "--n-trials", str(n_trials), "--base-config", str(config), "--epochs", "4",
            "--sampler", "random", "--cpus-per-trial", "1", "--work-dir", str(tune_dir)]


def run_stagetune(cluster: LoopbackCluster, args: list[str], *, timeout: float = 300
                  ) -> subprocess.CompletedProcess:
    """Run the ``stagetune`` command as a user would, against the loopback cluster."""
    return subprocess.run([STAGETUNE, *args], env=cluster.env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)

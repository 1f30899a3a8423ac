"""The ``stagetune`` command dispatches to the trainer, the search and the analysis."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from search.console import main
from tests.analysis.conftest import make_study


def test_dispatch(tmp_path, capsys):
    db = tmp_path / "s.db"
    make_study(f"sqlite:///{db}")
    assert main(["analyze", "rank", "--storage", f"sqlite:///{db}", "--study", "known",
                 "--out", str(tmp_path)]) == 0
    assert "5 trials ranked" in capsys.readouterr().out  # feasible and complete
    assert main(["status", "--storage", f"sqlite:///{db}", "--study", "known"]) == 0
    assert "Pareto front (3 trials)" in capsys.readouterr().out
    # bare flags and "train" both reach the trainer, whose errors are one line
    for argv in (["--epochs", "0", "--out", str(tmp_path / "r")],
                 ["train", "--epochs", "0", "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        assert "epochs must be at least 1" in capsys.readouterr().err
    assert main(["sweep", "--n-trials", "-3"]) == 2


@pytest.mark.skipif(shutil.which("stagetune") is None, reason="package not installed")
def test_console_script_is_installed():
    proc = subprocess.run(["stagetune", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--staged_training" in proc.stdout

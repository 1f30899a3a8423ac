from __future__ import annotations

import pytest

from search.cli import main
from search.objective import Objective
from search.study import open_study
from tests.search.conftest import checksum


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def existing(tmp_path):
    """A study database holding a pareto study named 's'."""
    db = tmp_path / "s.db"
    opened = open_study(f"sqlite:///{db}", "s", Objective(), sampler="random", seed=0)
    opened.study.enqueue_trial({"stage1_epochs": 1})
    opened.storage.engine.dispose()
    return db


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-trials", "-1"], "--n-trials must not be negative"),
        (["--range", "stage1_epochs=20:30", "--range", "stage2_epochs=20:30"],
         "no valid configuration"),
        (["--objective", "scalar", "--weight", "2"], "--weight must lie in [0, 1]"),
        (["--storage", "nonsense://"], "database"),
    ],
)
def test_bad_sweep_input_gives_one_line_and_stores_nothing(tmp_path, capsys, argv, message):
    args = ["run", "--storage", f"sqlite:///{tmp_path / 'new.db'}", "--epochs", "30", *argv]
    code, _, err = _run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not (tmp_path / "new.db").exists()


def test_study_with_other_directions_is_refused_unchanged(existing, capsys):
    before = checksum(existing)
    code, _, err = _run(capsys, "run", "--storage", f"sqlite:///{existing}", "--study", "s",
                        "--objective", "scalar", "--epochs", "6")
    assert code == 2 and "exists with other objectives" in err
    code, _, err = _run(capsys, "run", "--storage", f"sqlite:///{existing}", "--study", "s",
                        "--disentanglement-metric", "zay_label_leakage", "--epochs", "6")
    assert code == 2 and "exists with other objectives" in err
    assert checksum(existing) == before


def test_unreachable_database_never_shows_the_password(capsys):
    url = "postgresql://stagetune:Hunter2Secret@127.0.0.1:1/sweeps"
    code, out, err = _run(capsys, "run", "--storage", url, "--epochs", "6")
    assert code == 2 and "cannot reach database" in err
    assert "Hunter2Secret" not in out + err
    assert "postgresql://stagetune:***@127.0.0.1:1/sweeps" in err


def test_status_lists_studies_when_the_name_is_unknown(existing, capsys):
    code, _, err = _run(capsys, "status", "--storage", f"sqlite:///{existing}",
                        "--study", "nope")
    assert code == 2 and "no study 'nope'" in err and "studies there: s" in err
    code, out, _ = _run(capsys, "status", "--storage", f"sqlite:///{existing}", "--study", "s")
    assert code == 0 and "0 complete" in out and "1 waiting" in out

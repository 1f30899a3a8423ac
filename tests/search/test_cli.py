from __future__ import annotations

import pytest

from search.cli import main
from search.db.study import open_study
from search.objective import Objective
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
        (["--n-trials", "-1"], "--n-trials must be at least 1 (got -1)"),
        (["--n-trials", "0"], "--n-trials must be at least 1 (got 0)"),
        # a range written with a dash: the message shows how it is written
        (["--range", "stage1_epochs=5-15"],
         "stage1_epochs must be an integer (got '5-15'); a range is written LO:HI: "
         "--range stage1_epochs=5:15"),
        (["--range", "lambda=0.1-10"], "--range lambda=0.1:10"),
        # a mistyped name: the name is wrong, not the syntax
        (["--range", "lamda=1:50"],
         "--range lamda=1:50: unknown search parameter 'lamda'; did you mean lambda "
         "(independence_penalty)?"),
        (["--set", "stage_1_epochs=4"], "did you mean stage1_epochs?"),
        (["--set", "stage1=3:5"], "--set fixes one value, --range NAME=LO:HI"),
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


def test_a_sqlite_file_in_a_missing_folder_names_the_folder(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    code, _, err = _run(capsys, "run", "--storage", f"sqlite:///{missing / 'x.db'}",
                        "--epochs", "6")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0] == (f"error: cannot open SQLite database sqlite:///{missing / 'x.db'}: "
                        f"the folder {missing} does not exist; create it or choose another "
                        "--storage")
    assert not (tmp_path / "no").exists()  # nothing created, not even the folder
    (tmp_path / "plain").write_text("")
    code, _, err = _run(capsys, "run", "--storage", f"sqlite:///{tmp_path / 'plain' / 'x.db'}",
                        "--epochs", "6")
    assert code == 2 and f"{tmp_path / 'plain'} is a file, not a folder" in err
    assert (tmp_path / "plain").read_text() == ""


@pytest.mark.parametrize(
    ("argv", "command"),
    [(["sweep", "--bogus"], "sweep"), (["status", "--bogus"], "status"),
     (["confirm", "--top"], "confirm"), (["sweep", "--n-trials", "x"], "sweep")],
)
def test_a_bad_option_is_one_line_naming_the_command_as_typed(tmp_path, capsys, monkeypatch,
                                                               argv, command):
    # argparse's own error printed the top parser's usage, "{run,status,confirm}": a
    # command 'stagetune --help' does not list, and several lines before the error
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        _console(capsys, *argv)
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert stop.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"stagetune {command}: error: ")
    assert lines[0].endswith(f"(see 'stagetune {command} --help')")
    assert "run" not in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_the_usage_line_lists_the_commands_stagetune_lists():
    from search.cli import build_parser
    from search.console import COMMANDS

    usage = build_parser().format_usage()
    listed = usage.split("{")[1].split("}")[0].split(",")
    assert "run" not in listed and "sweep" in listed
    assert set(listed) <= set(COMMANDS)
    # 'run' still parses, as the sweep, for scripts that call 'python -m search run'
    assert build_parser().parse_args(["run"]).command == build_parser().parse_args(
        ["sweep"]).command


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


def _console(capsys, *argv):
    """``stagetune ARGV`` through the installed entry point, in this process."""
    from search.console import main as stagetune

    code = stagetune(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("notaurl:/x", "'notaurl:/x'"),
        ("postgres:/stagetune:Hunter2Secret@db/sweeps", "'postgres:***@db/sweeps'"),
        ("stagetune:Hunter2Secret@db/sweeps", "'stagetune:***@db/sweeps'"),
    ],
)
def test_a_malformed_storage_url_is_one_line_from_every_command(tmp_path, capsys,
                                                                 monkeypatch, url, shown):
    monkeypatch.chdir(tmp_path)  # nothing may appear here (no database, no work dir)
    lines = {}
    for argv in (["sweep", "--storage", url, "--smoke-test"],
                 ["status", "--storage", url],
                 ["analyze", "rank", "--storage", url, "--out", str(tmp_path / "out")]):
        code, out, err = _console(capsys, *argv)
        assert code == 2 and out == "", (argv, out)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert "Hunter2Secret" not in err
        lines[argv[0]] = err
    # one check for all three commands: the same line, naming the URL and what is wrong
    assert len(set(lines.values())) == 1
    line = lines["sweep"]
    assert line.startswith(f"error: malformed database URL {shown}; expected a SQLAlchemy "
                           "URL such as sqlite:///stagetune.db")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def three_objectives(tmp_path):
    """A study plain Optuna made with three objectives, three trials complete."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path / "three.db"
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                storage=f"sqlite:///{db}", study_name="three")
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0, 2.0), n_trials=3)
    return db


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_status_refuses_a_study_it_cannot_summarise_before_printing(three_objectives, capsys,
                                                                     json_flag):
    before = checksum(three_objectives)
    code, out, err = _console(capsys, "status", "--storage", f"sqlite:///{three_objectives}",
                              "--study", "three", *json_flag)
    assert code == 2
    assert out == ""  # not a line of the summary: no counts, no front
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot summarise study 'three': "
                                                   "it has 3 objectives "
                                                   "(maximize/minimize/maximize)")
    assert "stagetune analyze rank" in lines[0]
    assert checksum(three_objectives) == before


def test_status_summarises_a_single_objective_study_plain_optuna_made(tmp_path, capsys):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path / "one.db"
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="one")
    study.optimize(lambda t: t.suggest_float("x", 0.5, 1.0), n_trials=3)
    best = study.best_trial.number
    code, out, err = _console(capsys, "status", "--storage", f"sqlite:///{db}", "--study",
                              "one")
    assert code == 0 and err == ""
    assert out.splitlines()[:2] == ["study 'one': 3 complete, 0 pruned, 0 failed, 0 running, "
                                    "0 waiting", "best scalar_score:"]
    assert out.splitlines()[2].startswith(f"  #{best:<4d} scalar_score=")

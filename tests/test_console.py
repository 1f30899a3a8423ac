"""The ``stagetune`` command: dispatch, help, typos, and what sweeps and runs print."""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import subprocess

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.console import COMMANDS, main
from search.driver.progress import (
    Progress,
    default_work_dir,
    print_summary,
    quiet_ray_logs,
    summarize,
)
from search.objective import Objective
from tests.analysis.conftest import make_study


def test_dispatch(tmp_path, capsys):
    db = tmp_path / "s.db"
    make_study(f"sqlite:///{db}")
    assert main(["analyze", "rank", "--storage", f"sqlite:///{db}", "--study", "known",
                 "--out", str(tmp_path)]) == 0
    assert "5 trials ranked" in capsys.readouterr().out  # feasible and complete
    assert main(["status", "--storage", f"sqlite:///{db}", "--study", "known"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (3 trials)" in out
    # six complete trials, one of them infeasible (#5: zay collapsed), one pruned
    assert "6 complete (1 infeasible: zay collapsed), 1 pruned" in out
    assert "task_accuracy=0.95" in out  # values carry their objective's name
    # bare flags and "train" both reach the trainer, whose errors are one line
    for argv in (["--epochs", "0", "--out", str(tmp_path / "r")],
                 ["train", "--epochs", "0", "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        assert "epochs must be at least 1" in capsys.readouterr().err
    assert main(["sweep", "--n-trials", "-3"]) == 2


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: stagetune ")
    for name in ("train", "sweep", "status", "analyze"):
        assert f"\n  {name} " in out


@pytest.mark.parametrize(("typo", "meant"), [("swep", "sweep"), ("analyse", "analyze"),
                                             ("trian", "train"), ("stauts", "status")])
def test_a_mistyped_command_names_the_right_one(capsys, typo, meant):
    assert main([typo, "--n-trials", "3"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"did you mean {meant!r}" in lines[0]
    assert "python -m" not in lines[0]


def test_an_unrelated_word_lists_the_commands(capsys):
    assert main(["xyzzy"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in COMMANDS)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from analysis.cli import build_parser as analysis_parser
    from search.cli import build_parser as search_parser
    from trainer.cli import build_parser as trainer_parser

    found = {"stagetune train": trainer_parser()}
    for top in (search_parser(), analysis_parser()):
        for action in top._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found[sub.prog] = sub
    return found


def test_every_option_has_help_and_every_help_shows_defaults():
    parsers = _parsers()
    assert {"stagetune sweep", "stagetune status", "stagetune analyze rank",
            "stagetune analyze report", "stagetune analyze importance"} <= set(parsers)
    for prog, parser in parsers.items():
        assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), prog
        text = parser.format_help()
        assert text.startswith(f"usage: {prog}"), prog
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{prog} {action.option_strings} has no help text"
            if action.option_strings and action.default is not argparse.SUPPRESS:
                # the formatter appends the default to each option's help
                assert "%(default)" in parser.formatter_class(prog)._get_help_string(action)


def test_sweep_help_shows_the_work_dir_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_work_dir() == tmp_path / "cache" / "stagetune" / "runs"
    from search.cli import build_parser

    args = build_parser().parse_args(["run"])
    assert args.tune_dir == str(tmp_path / "cache" / "stagetune" / "runs")
    assert build_parser().parse_args(["run", "--work-dir", "w"]).tune_dir == "w"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(default_work_dir()).endswith(".cache/stagetune/runs")


def test_ray_warnings_are_quiet_unless_verbose():
    token_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    quiet_ray_logs(verbose=False)
    assert not token_logger.isEnabledFor(logging.WARNING)
    assert not logging.getLogger("ray.tune.tune").isEnabledFor(logging.WARNING)
    quiet_ray_logs(verbose=True)
    assert token_logger.isEnabledFor(logging.WARNING)
    quiet_ray_logs(verbose=False)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _study(objective: Objective, values: list[list[float]]) -> optuna.Study:
    study = optuna.create_study(directions=objective.directions)
    for v in values:
        study.add_trial(create_trial(values=v, params={}, distributions={},
                                     system_attrs={"constraints": [-0.5]}))
    return study


def test_progress_lines_in_a_log_name_objectives_settings_and_eta():
    objective = Objective()
    study = _study(objective, [[0.9, 0.8]])
    out = io.StringIO()
    progress = Progress(3, 1, objective, study, stream=out)
    assert not progress.live
    progress("start", {"number": 1, "params": {"stage1_epochs": 10, "independence_penalty":
                                                3.16227, "use_independence_penalty": True}})
    study.add_trial(create_trial(values=[0.8, 0.95], params={}, distributions={},
                                 system_attrs={"constraints": [-0.5]}))
    progress("complete", {"number": 1, "values": [0.8, 0.95], "feasible": True})
    progress("start", {"number": 2, "params": {"stage1_epochs": 3}})
    progress("fail", {"number": 2, "reason": "CUDA out of memory"})
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == ("trial 1 started: stage1_epochs=10, independence_penalty=3.16, "
                        "use_independence_penalty=True")
    assert lines[1].startswith("[2/3] trial 1 complete after ")
    assert "task_accuracy=0.8, zay_independence_score=0.95" in lines[1]
    assert "running 0, failed 0, pruned 0, front 2" in lines[1] and "ETA" in lines[1]
    assert "trial 2 FAILED (CUDA out of memory)" in lines[3] and "failed 1" in lines[3]


def test_progress_on_a_terminal_draws_a_live_bar_and_scalar_says_best():
    objective = Objective(mode="scalar")
    study = _study(objective, [[0.7]])
    out = _Tty()
    progress = Progress(4, 1, objective, study, stream=out)
    assert progress.live
    progress("start", {"number": 1, "params": {"stage1_epochs": 4}})
    progress("complete", {"number": 1, "values": [0.99996], "feasible": True})
    progress.close()
    text = out.getvalue()
    assert "trial 1 started: stage1_epochs=4" in text
    assert "scalar_score=0.99996" in text  # not rounded to 1
    assert "2/4" in text and "running 0, failed 0, pruned 0, best" in text
    assert "front" not in text


def test_status_of_a_scalar_study_says_best(capsys):
    objective = Objective(mode="scalar")
    study = _study(objective, [[0.5], [0.75], [0.6]])
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "OOM"}))
    print_summary(summarize(study, objective))
    out = capsys.readouterr().out
    assert "best scalar_score:" in out and "Pareto" not in out
    assert "#1    scalar_score=0.75" in out
    assert "failed 1x: OOM" in out


def test_trainer_draws_a_batch_bar_on_a_terminal_and_plain_lines_otherwise():
    from trainer import RunConfig
    from trainer.cli import EpochProgress

    cfg = RunConfig().replace(epochs=6, staged_training=True)  # stage 1: epochs 1-2
    row = {"epoch": 0.0, "stage": 1.0, "capacity": 0.0, "train_loss": 1.0, "val_loss": 2.0,
           "val_acc_y": 0.5, "samples_per_s": 100.0}
    tty, log = _Tty(), io.StringIO()
    for stream in (tty, log):
        progress = EpochProgress(cfg, quiet=False, stream=stream)
        for done in range(1, 5):
            progress.on_batch(0, done, 4)
        progress.report(row)
    assert "epoch 1/6 stage 1:" in tty.getvalue() and "/4 [" in tty.getvalue()  # the bar
    assert tty.getvalue().rstrip().endswith("(100 samples/s)")  # then the epoch's line
    assert log.getvalue().splitlines() == [log.getvalue().strip()]  # one plain line
    assert log.getvalue().startswith("epoch   1/6 stage 1")


def test_fit_calls_the_batch_hook_once_per_batch():
    from tests.trainer.conftest import tiny_config
    from trainer import fit

    cfg = tiny_config(epochs=2, stage1_epochs=1, stage2_epochs=0, batch_size=16,
                      max_samples=48, eval_max_samples=100)
    calls: list[tuple[int, int, int]] = []
    fit(cfg, on_batch=lambda *a: calls.append(a))
    per_epoch = calls[-1][2]
    assert per_epoch >= 2
    # every batch of both epochs, counted 1..n in order
    assert calls == [(e, b, per_epoch) for e in (0, 1) for b in range(1, per_epoch + 1)]


@pytest.mark.skipif(shutil.which("stagetune") is None, reason="package not installed")
def test_console_script_is_installed():
    proc = subprocess.run(["stagetune", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "sweep" in proc.stdout and "analyze" in proc.stdout
    proc = subprocess.run(["stagetune", "swep"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "did you mean 'sweep'" in proc.stderr

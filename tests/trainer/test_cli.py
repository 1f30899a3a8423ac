from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import main

TINY = ["--max_samples", "40", "--batch_size", "64", "--device", "cpu", "--quiet"]
ROOT = Path(__file__).resolve().parents[2]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_cli_runs_end_to_end_and_writes_every_file(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "--staged_training", "--epochs", "3",
         "--stage1-epochs", "1", "--stage2_epochs", "1", "--independence_penalty", "5.0",
         "--beta_annealing", "--out", str(out), *TINY],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done in" in proc.stdout
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "final_metrics.json",
                 "checkpoint.pt", "disentanglement_analysis.json",
                 "correlation_heatmap.html", "label_prediction_accuracy.html"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"]["stage1_epochs"] == 1 and cfg["stages"]["independence_penalty"] == 5.0
    assert cfg["optim"]["beta_annealing"] is True
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [1, 2, 3]
    final = json.loads((out / "final_metrics.json").read_text())
    assert 0 <= final["zay_independence_score"] <= 1
    analysis = json.loads((out / "disentanglement_analysis.json").read_text())
    assert set(analysis["correlations"]["groups"]) == {"zy", "za", "zay", "zx"}


def test_progress_shows_the_stage(tmp_path, capsys):
    argv = ["--staged_training", "--epochs", "3", "--out", str(tmp_path / "r"),
            "--no_plots", *TINY[:-1]]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch")]
    assert [line.split()[3] for line in epochs] == ["1", "2", "3"]


def test_no_independence_penalty_flag(tmp_path):
    out = tmp_path / "r"
    assert main(["--staged_training", "--epochs", "3", "--no_independence_penalty",
                 "--no_plots", "--out", str(out), *TINY]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"]["use_independence_penalty"] is False
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_penalty"] == 0 for r in rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "6", "--stage1_epochs", "4", "--stage2_epochs", "3"], "exceeds epochs"),
        (["--stage1_epochs", "-1"], "must not be negative"),
        (["--independence_penalty", "-2"], "independence_penalty must not be negative"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--zay_suppression", "shrink"], "unknown zay_suppression 'shrink'"),
        (["--dataset", "mnist", "--data_root", "/nonexistent/mnist"], "does not exist"),
        (["--dataset", "mnist"], "give --data_root"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    code = main(["--staged_training", "--out", str(out), *argv, *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_existing_run_is_not_written_over(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["--staged_training", "--epochs", "2", "--no_plots", "--out", str(out), *TINY]
    assert main(base) == 0
    before = _tree(out)
    assert main(base) != 0
    assert "already holds a run" in capsys.readouterr().err
    # resuming with another config is refused and leaves the run as it was
    assert main([*base, "--resume", "--lr", "0.01"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another configuration" in err[0] and "optim.lr" in err[0]
    assert _tree(out) == before


def test_resume_a_finished_run_says_it_is_complete_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["--staged_training", "--epochs", "2", "--no_plots", "--out", str(out), *TINY]
    assert main(base) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    contents = _tree(out)
    assert main([*base, "--resume"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{out} holds a complete run (2 of 2 epochs; results in "
                     f"{out / 'final_metrics.json'}); nothing to resume"]
    # no retraining, no re-evaluation: not a file rewritten
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert _tree(out) == contents
    # another configuration is still refused, not called complete
    assert main([*base, "--resume", "--lr", "0.01"]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_the_methods_flags_reach_the_config(tmp_path):
    from trainer.cli import build_parser, config_from_args

    argv = ["--staged_training", "--epochs", "60", "--stage1_epochs", "30", "--stage2_epochs",
            "15", "--independence_penalty", "10.0", "--no_independence_penalty",
            "--beta_annealing", "--out", str(tmp_path)]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    st = cfg.stages
    assert (st.staged_training, cfg.optim.epochs, cfg.stage1_epochs, cfg.stage2_epochs) == (
        True, 60, 30, 15)
    assert (st.independence_penalty, st.use_independence_penalty) == (10.0, False)
    assert cfg.optim.beta_annealing is True
    # without the flags: all latents from epoch 0, the penalty as the config has it
    plain = config_from_args(build_parser().parse_args([]), [])
    assert plain.stages.staged_training is False and plain.stages.use_independence_penalty
    dashed = ["--staged-training", "--use-independence-penalty", "--penalty-measure", "hsic"]
    cfg = config_from_args(build_parser().parse_args(dashed), dashed)
    assert cfg.stages.staged_training and cfg.stages.penalty_measure == "hsic"
    with pytest.raises(SystemExit):  # on and off at once
        build_parser().parse_args(["--use_independence_penalty", "--no_independence_penalty"])


def test_flags_given_override_a_config_file_and_the_rest_keep_it(tmp_path):
    from trainer import RunConfig
    from trainer.cli import build_parser, config_from_args

    path = tmp_path / "config.json"
    path.write_text(RunConfig().replace(use_independence_penalty=False, stage1_epochs=7,
                                        penalty_measure="hsic").to_json())
    argv = ["--config", str(path), "--stage2_epochs", "5"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert cfg.stages.staged_training is True  # the file's setting, not the CLI's off
    assert (cfg.stage1_epochs, cfg.stage2_epochs) == (7, 5)
    assert cfg.stages.use_independence_penalty is False and cfg.stages.penalty_measure == "hsic"
    argv = [*argv, "--use_independence_penalty"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert cfg.stages.use_independence_penalty is True


def test_a_bad_penalty_measure_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["--staged_training", "--penalty_measure", "bogus", "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "unknown penalty_measure 'bogus'; choose one of corr, hsic, hsic_labels" in err[0]

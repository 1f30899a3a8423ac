"""A study keeps its fixed configuration; moving it to another budget is explicit and
shown; trials that train alike are one setting in ``status`` and ``confirm``.

The studies are written as a sweep writes them (``open_study`` with the sweep's fixed
fields, trials with their stored configurations: ``tests/search/twin_study.py``), so the
refusals, which come before Ray is started, run in a fraction of a second; the slow
check runs the sweeps themselves.
"""

from __future__ import annotations

import optuna
import pytest

from search.checks.confirm import select_settings
from search.cli import _base_config, build_parser, main
from search.db.fixed import (
    BUDGETS_ATTR,
    FIXED_CONFIG_ATTR,
    budget_line,
    fixed_fields,
    fixed_from_trial,
    number_ranges,
)
from search.db.study import open_study, record_fixed
from search.objective import Objective
from tests.search.conftest import checksum
from tests.search.twin_study import add_trial, base_config, make_twin_study
from trainer import RunConfig

optuna.logging.set_verbosity(optuna.logging.ERROR)

SMOKE = ("--smoke-test", "--n-trials", "7")


def _sweep_fixed(*argv: str) -> dict:
    """The fixed fields a ``stagetune sweep`` with ``argv`` stores with its study."""
    return fixed_fields(_base_config(build_parser().parse_args(["run", *argv])))


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def digits(tmp_path):
    """A study 'digits' made by ``stagetune sweep --smoke-test`` (6 epochs), two trials run."""
    db = tmp_path / "d.db"
    url = f"sqlite:///{db}"
    opened = open_study(url, "digits", Objective(), sampler="tpe", seed=0,
                        fixed=_sweep_fixed(*SMOKE))
    for n in range(2):
        add_trial(opened.study, {"stage1_epochs": n + 1}, [0.9, 0.5], **_smoke_flat())
    opened.storage.engine.dispose()
    return db


def _smoke_flat() -> dict:
    from search.cli import SMOKE as SIZES

    return {k: v for k, v in SIZES.items() if k != "epochs"}


def test_a_new_study_stores_the_fields_its_trials_share(digits):
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{digits}")
    stored = study.user_attrs[FIXED_CONFIG_ATTR]
    assert stored["epochs"] == 6 and stored["max_samples"] == 200
    assert stored["dataset"] == "digits" and stored["hidden_dim"] == 64
    # what the space varies, and where a run goes or reads from, are not its fixed fields
    assert not {"stage1_epochs", "independence_penalty", "device", "write_plots",
                "data_root"} & set(stored)


def test_a_resumed_study_with_other_epochs_is_refused_and_unchanged(digits, capsys):
    before = checksum(digits)
    code, out, err = _main(capsys, "run", "--storage", f"sqlite:///{digits}", "--study",
                           "digits", *SMOKE, "--epochs", "8")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: study 'digits' was created with epochs=6; this "
                               "command asks for epochs=8: resume it with --epochs 6, move "
                               "the study to the new budget with --change-budget")
    assert out == "" and checksum(digits) == before


@pytest.mark.parametrize(("argv", "named"), [
    (("--max-samples", "300"), "max_samples=200; this command asks for max_samples=300"),
    (("--dataset", "shapes"), "dataset=digits; this command asks for dataset=shapes"),
    (("--lr", "0.01"), "lr=0.002; this command asks for lr=0.01"),
    (("--epochs", "8", "--batch-size", "32"),
     "batch_size=64, epochs=6; this command asks for batch_size=32, epochs=8"),
])
def test_any_other_fixed_field_is_refused_even_with_change_budget(digits, capsys, argv, named):
    before = checksum(digits)
    for extra in ((), ("--change-budget",)):
        code, _, err = _main(capsys, "run", "--storage", f"sqlite:///{digits}", "--study",
                             "digits", *SMOKE, *argv, *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert named in err and "--change-budget" not in err
        assert "comparable only at the same settings" in err
    assert checksum(digits) == before


def test_a_study_made_before_its_fields_were_stored_is_checked_by_its_trials(tmp_path, capsys):
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(storage=url, study_name="old", directions=["maximize"] * 2)
    study.set_user_attr("stagetune_objective", Objective().describe())
    add_trial(study, {"stage1_epochs": 1}, [0.9, 0.5], **_smoke_flat())
    before = checksum(db)
    code, _, err = _main(capsys, "run", "--storage", url, "--study", "old", *SMOKE,
                         "--epochs", "8")
    assert code == 2 and "study 'old' was created with epochs=6" in err
    assert checksum(db) == before


def test_the_fields_a_trial_rewrites_are_not_read_as_its_studys():
    # a study made before its fields were stored: a trial stores its first run's
    # configuration, with the first replicate's seed and, with --lodo, its first fold
    run = RunConfig().replace(epochs=6, seed=3, split_seed=3, val_domain=1).to_dict()
    assert "seed" not in fixed_from_trial(run) and fixed_from_trial(run)["val_domain"] == 1
    assert "val_domain" not in fixed_from_trial(run, lodo=True)
    assert fixed_from_trial(run)["epochs"] == 6


def test_a_budget_move_is_recorded_and_a_resume_at_it_needs_no_flag(digits):
    url = f"sqlite:///{digits}"
    at8 = _sweep_fixed(*SMOKE, "--epochs", "8")
    opened = open_study(url, "digits", Objective(), sampler="tpe", seed=0, fixed=at8,
                        change_budget=True)
    assert opened.moved
    study = opened.study
    assert study.user_attrs[BUDGETS_ATTR] == [{"epochs": 6, "first_trial": 0},
                                              {"epochs": 8, "first_trial": 2}]
    assert study.user_attrs[FIXED_CONFIG_ATTR]["epochs"] == 8
    # at the new budget it resumes as any study; the old one now needs the flag
    assert not record_fixed(study, opened.storage.engine, at8, change_budget=False)
    with pytest.raises(Exception, match="study 'digits' was moved to epochs=8; this command "
                                        "asks for epochs=6"):
        record_fixed(study, opened.storage.engine, _sweep_fixed(*SMOKE), change_budget=False)
    opened.storage.engine.dispose()


def test_status_and_the_report_show_which_trials_ran_at_which_budget(digits, capsys,
                                                                      tmp_path):
    url = f"sqlite:///{digits}"
    opened = open_study(url, "digits", Objective(), sampler="tpe", seed=0,
                        fixed=_sweep_fixed(*SMOKE, "--epochs", "8"), change_budget=True)
    add_trial(opened.study, {"stage1_epochs": 3}, [0.97, 0.6], epochs=8, **_smoke_flat())
    opened.storage.engine.dispose()
    line = ("budget moved (--change-budget), now epochs=8: epochs=6 for trials 0-1; "
            "epochs=8 for trial 2; trials of different budgets are not comparable")
    code, out, _ = _main(capsys, "status", "--storage", url, "--study", "digits")
    assert code == 0 and line in out.splitlines()
    # the front names each trial's budget: #2 ran at 8 epochs, not at the study's first 6
    front = [row for row in out.splitlines() if row.startswith("  #")]
    assert any(row.startswith("  #2 ") and "epochs=8" in row for row in front), out
    from analysis._load import load_study
    from analysis._report import write_report

    data = load_study(url, "digits")
    assert data.budget_line() == line
    from analysis._rank import rank_trials, table_columns

    ranked = rank_trials(data)  # the ranked table names each trial's budget
    assert "epochs" in table_columns(data, ranked)
    assert dict(zip(ranked["number"], ranked["epochs"], strict=True)) == {0: 6, 1: 6, 2: 8}
    page = write_report(data, tmp_path / "report", png=False).read_text()
    assert line in page


def test_budget_line_names_the_trials_of_each_budget():
    history = [{"epochs": 6, "first_trial": 0}, {"epochs": 8, "first_trial": 7},
               {"epochs": 6, "first_trial": 10}]
    line = budget_line(history, {0: 6, 1: 6, 2: 6, 6: 6, 7: 8, 8: 8, 10: 6})
    assert line == ("budget moved (--change-budget), now epochs=6: epochs=6 for trials "
                    "0-2, 6, 10; epochs=8 for trials 7-8; trials of different budgets are "
                    "not comparable")
    assert budget_line(history[:1], {0: 6}) is None
    assert number_ranges([5, 1, 2, 3, 9]) == "1-3, 5, 9"
    assert "epochs=8 for trial 7;" in budget_line(history, {0: 6, 7: 8})
    assert "epochs=8 for no trial yet" in budget_line(history[:2], {0: 6})


# ------------------------------------------------------------------ one setting, once


def test_status_shows_trials_that_trained_alike_as_one_setting(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 't.db'}"
    make_twin_study(url)
    code, out, _ = _main(capsys, "status", "--storage", url, "--study", "twins")
    front = [row for row in out.splitlines() if row.startswith("  #")]
    assert code == 0 and len(front) == 2, out
    twin = next(row for row in front if row.startswith("  #1 "))
    assert "(= #2: trained alike)" in twin
    # what cannot act is not shown: stage 2 is empty, so the penalty never ran
    assert "independence_penalty" not in twin and "use_independence_penalty" not in twin
    assert not any(row.startswith("  #2 ") for row in front)


@pytest.mark.parametrize("default_values", [None, [0.99, 0.30]])
def test_confirm_selects_one_setting_once_and_never_the_default_again(tmp_path,
                                                                      default_values):
    url = f"sqlite:///{tmp_path / 't.db'}"
    make_twin_study(url, default_values=default_values)
    study = optuna.load_study(study_name="twins", storage=url)
    chosen = select_settings(study, Objective(), top=3)
    # #2 trains as #1 does, #4 as the default #0: neither is a setting of its own
    keys = [s["key"] for s in chosen]
    assert keys[0] == "default" and sorted(keys[1:]) == ["trial_1", "trial_3"]
    assert chosen[0]["number"] == 0
    assert "independence_penalty" not in next(s for s in chosen if s["number"] == 1)["params"]


def test_confirm_compares_at_the_current_budget_of_a_moved_study(digits):
    url = f"sqlite:///{digits}"
    opened = open_study(url, "digits", Objective(), sampler="tpe", seed=0,
                        fixed=_sweep_fixed(*SMOKE, "--epochs", "8"), change_budget=True)
    add_trial(opened.study, {"stage1_epochs": 3}, [0.97, 0.6], epochs=8, **_smoke_flat())
    opened.storage.engine.dispose()
    chosen = select_settings(optuna.load_study(study_name="digits", storage=url),
                             Objective(), top=3)
    assert [s["number"] for s in chosen] == [None, 2]  # the 6-epoch trials are not compared
    assert all(RunConfig.from_dict(s["config"]).optim.epochs == 8 for s in chosen)


def test_the_sweep_stores_what_cli_builds_from_base_config(tmp_path):
    # --base-config fields are fixed fields too: another value is another study
    path = tmp_path / "base.json"
    path.write_text(RunConfig().replace(zy_dim=8).to_json())
    fixed = _sweep_fixed("--base-config", str(path), "--epochs", "6")
    assert fixed["zy_dim"] == 8 and fixed["epochs"] == 6
    assert fixed_fields(base_config()) != fixed


@pytest.mark.slow  # two sweeps of the tiny model through Ray and a refused third
def test_a_sweep_refuses_another_budget_and_moves_with_change_budget(tmp_path, local_ray):
    from dataclasses import replace

    from search.db.study import StudyError
    from search.driver.sweep import run_sweep
    from search.space import SearchSpace
    from tests.search.conftest import TINY_TRIAL, tiny_options

    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    run_sweep(tiny_options(url, "s", 2, tmp_path))  # 4 epochs: the default #0 and #1
    before = checksum(db)
    at5 = replace(tiny_options(url, "s", 3, tmp_path),
                  base_config=RunConfig().replace(**{**TINY_TRIAL, "epochs": 5}).to_dict(),
                  space=SearchSpace(epochs=5, stage1_epochs=(0, 5), stage2_epochs=(0, 5)))
    with pytest.raises(StudyError, match="study 's' was created with epochs=4; this command "
                                         "asks for epochs=5"):
        run_sweep(at5)
    assert checksum(db) == before
    summary = run_sweep(replace(at5, change_budget=True))
    study = optuna.load_study(study_name="s", storage=url)
    moved = study.trials[2]  # the default again, as the new budget's reference
    assert moved.user_attrs["baseline"] and moved.user_attrs["config"]["optim"]["epochs"] == 5
    assert summary["budget"]["line"] == (
        "budget moved (--change-budget), now epochs=5: epochs=4 for trials 0-1; epochs=5 "
        "for trial 2; trials of different budgets are not comparable")

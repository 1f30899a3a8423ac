"""The task objective in the report's header, rank's first line and figure titles."""

from __future__ import annotations

import html

import pytest
from optuna.trial import create_trial

from analysis._load import load_study
from analysis._rank import rank_trials
from analysis._report import build_figures, write_report
from analysis.cli import main
from search.objective import TASK_METRICS, Objective
from search.study import OBJECTIVE_ATTR
from tests.analysis.conftest import DISTS, new_study


def _params(i: int) -> tuple[dict, dict]:
    params = {"stage1_epochs": i + 1, "stage2_epochs": 3, "use_independence_penalty": False}
    return params, {k: DISTS[k] for k in params}


def _figures(url: str, name: str, which=None):
    data = load_study(url, name)
    ranked = rank_trials(data)
    return build_figures(data, ranked, which=which) if which else build_figures(data, ranked)


def _traces(fig):
    return {t.name: t for t in fig.data}


# ------------------------------------------------------------------- the task objective


@pytest.mark.parametrize("task", list(TASK_METRICS))
def test_the_header_rank_and_figures_state_the_task_objective(tmp_path, capsys, task):
    url = f"sqlite:///{tmp_path / 'task.db'}"
    study = new_study(url, "task", Objective(task=task))
    for i, values in enumerate([(0.9, 0.7), (0.8, 0.9)]):
        params, dists = _params(i)
        study.add_trial(create_trial(values=list(values), params=params, distributions=dists,
                                     user_attrs={"feasible": True, "baseline": i == 0}))
    sentence = (f"task objective: {task} — {TASK_METRICS[task][1]}; the test domain never "
                "selects")
    page = (write_report(load_study(url, "task"), tmp_path / "out", png=False)
            .read_text(encoding="utf-8"))
    assert f"<p class='meta'>{html.escape(sentence)}</p>" in page
    assert main(["rank", "--storage", url, "--study", "task", "--out",
                 str(tmp_path / "rank")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"Study task: objectives {task} (maximize), zay_independence_score "
                     f"(maximize); {sentence}")
    built = _figures(url, "task")
    assert {"pareto", "hypervolume", "effects", "parallel"} <= set(built.figures)
    for name in ("pareto", "hypervolume", "effects", "parallel", "importance"):
        if name in built.figures:  # importance needs more trials than two
            assert sentence in built.figures[name].layout.title.text, name
    assert sentence not in (built.figures["curves"].layout.title.text
                            if "curves" in built.figures else "")


def test_an_older_study_without_a_task_key_says_task_accuracy(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = new_study(url, "old", Objective())
    spec = Objective().describe()
    del spec["task"]
    study.set_user_attr(OBJECTIVE_ATTR, spec)
    params, dists = _params(0)
    study.add_trial(create_trial(values=[0.9, 0.8], params=params, distributions=dists,
                                 user_attrs={"feasible": True}))
    assert main(["rank", "--storage", url, "--study", "old", "--out",
                 str(tmp_path / "rank")]) == 0
    assert ("; task objective: task_accuracy — in-domain validation accuracy of q(y|zy), as "
            "the method states; the test domain never selects") in capsys.readouterr().out

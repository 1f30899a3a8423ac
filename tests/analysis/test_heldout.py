"""The task objective in the report, and held-out-domain accuracy per setting.

Each study is built here with known per-domain accuracies, so that every number the
figure draws can be checked against what was stored.
"""

from __future__ import annotations

import html

import pytest
from optuna.trial import create_trial

from analysis._figures import method_default_name
from analysis._load import load_study
from analysis._rank import rank_trials
from analysis._report import build_figures, write_report
from analysis.cli import main
from search.db.study import OBJECTIVE_ATTR
from search.objective import TASK_METRICS, Objective
from tests.analysis.conftest import DISTS, new_study, subtitle

ANGLES = [0.0, 15.0, 30.0, 45.0, 60.0, 75.0]
FOLDS = [0, 1, 2, 3, 4]  # domain 5 (75°) is the test domain
# per-trial (held-out accuracy of each fold's domain, disentanglement, test domain);
# #0 and #2 are the front, #1 the method's default (dominated), #3 dominated, #4 the
# DIVA variant (dominated)
LODO = [
    ([0.90, 0.80, 0.85, 0.80, 0.70], 0.70, 0.60),
    ([0.88, 0.78, 0.80, 0.75, 0.69], 0.60, 0.55),
    ([0.70, 0.72, 0.74, 0.76, 0.78], 0.95, 0.65),
    ([0.60, 0.61, 0.62, 0.63, 0.64], 0.50, 0.50),
    ([0.85, 0.75, 0.79, 0.74, 0.67], 0.55, 0.52),
]
DIVA = 4
DEFAULT = 1


def _config(variant: str = "staged", **data) -> dict:
    return {"model": {"variant": variant, "zay_dim": 0 if variant == "diva" else 16},
            "data": {"dataset": "digits", "domains": ANGLES, **data}, "seed": 0}


def _params(i: int) -> tuple[dict, dict]:
    params = {"stage1_epochs": i + 1, "stage2_epochs": 3, "use_independence_penalty": False}
    return params, {k: DISTS[k] for k in params}


def make_lodo_study(url: str, name: str = "lodo", *, diva: bool = True,
                    se: bool = False) -> None:
    """A ``--lodo`` study: per-domain accuracies stored highest domain first (the figure
    must order them by domain), the test domain 75° reported beside them."""
    study = new_study(url, name, Objective(task="lodo_accuracy"))
    trials = []
    for i, (held, dis, test) in enumerate(LODO):
        params, dists = _params(i)
        mean = sum(held) / len(held)
        attrs = {"feasible": True, "baseline": i == DEFAULT, "zay_collapsed": 0.0,
                 "lodo_folds": float(len(FOLDS)), "lodo_domains": FOLDS,
                 "acc_y_test_domain": test, "task_accuracy": 0.99,
                 "config": _config("diva" if diva and i == DIVA else "staged",
                                   test_domain=5)}
        for k in reversed(FOLDS):
            attrs[f"lodo_acc_domain_{k}"] = held[k]
            if se:
                attrs[f"lodo_acc_domain_{k}_se"] = 0.01 * (k + 1)
        trials.append(create_trial(values=[mean, dis], params=params, distributions=dists,
                                   user_attrs=attrs, system_attrs={"constraints": [-0.5]}))
    study.add_trials(trials)


# (in-domain validation, held-out validation domain = the objective, test domain,
# disentanglement): #0 and #1 (the default) are the front
SPLITS = [(0.95, 0.80, 0.70, 0.60), (0.93, 0.75, 0.72, 0.90), (0.90, 0.70, 0.60, 0.50)]


def make_split_study(url: str, name: str = "splits") -> None:
    """A ``--task-metric acc_y_val_domain`` study with a test domain, no folds."""
    study = new_study(url, name, Objective(task="acc_y_val_domain"))
    trials = []
    for i, (in_domain, val_domain, test, dis) in enumerate(SPLITS):
        params, dists = _params(i)
        attrs = {"feasible": True, "baseline": i == 1, "zay_collapsed": 0.0,
                 "task_accuracy": in_domain, "acc_y_test_domain": test,
                 "config": _config(val_domain=4, test_domain=5)}
        trials.append(create_trial(values=[val_domain, dis], params=params,
                                   distributions=dists, user_attrs=attrs,
                                   system_attrs={"constraints": [-0.5]}))
    study.add_trials(trials)


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
            assert sentence in subtitle(built.figures[name]), name
    assert sentence not in (subtitle(built.figures["curves"])
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


# ------------------------------------------------------------------ held-out domains


def test_lodo_lines_carry_the_stored_accuracies_in_domain_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'lodo.db'}"
    make_lodo_study(url)
    fig = _figures(url, "lodo").figures["domains"]
    traces = _traces(fig)
    default = f"#{DEFAULT} {method_default_name()}"
    lines = {"#0": 0, "#2": 2, default: DEFAULT, f"#{DIVA} DIVA variant (no zay)": DIVA}
    assert {n for n, t in traces.items() if t.mode == "lines+markers"} == set(lines)
    for name, i in lines.items():
        assert list(traces[name].x) == ["0°", "15°", "30°", "45°", "60°"]
        assert list(traces[name].y) == LODO[i][0], name
        assert traces[name].error_y.array is None  # no per-domain SE stored: no bars
        test = traces[f"{name}: test domain"]
        assert list(test.x) == ["test domain 75° (reported, not selected on)"]
        assert list(test.y) == [LODO[i][2]]
    assert traces[default].line.width > traces["#0"].line.width  # the default stands out
    assert list(fig.data[0].x) == ["0°", "15°", "30°", "45°", "60°"]
    assert fig.data[0].name == default  # drawn first, the DIVA variant beside it
    assert fig.data[2].name == f"#{DIVA} DIVA variant (no zay)"
    title = fig.layout.title.text
    assert "the 2 front trials and the method default" in title
    assert f"the DIVA variant (no zay): trial #{DIVA}" in title
    sentence = ("task objective: lodo_accuracy — mean held-out-domain accuracy over the "
                "leave-one-domain-out folds (--lodo); the test domain never selects")
    assert sentence in subtitle(fig)
    assert sentence in subtitle(_figures(url, "lodo").figures["importance"])


def test_at_most_eight_front_settings_are_drawn_beside_the_default(tmp_path):
    url = f"sqlite:///{tmp_path / 'many.db'}"
    study = new_study(url, "many", Objective(task="lodo_accuracy"))
    for i in range(12):  # every trial but the default (#11, dominated) on the front
        params, dists = _params(i % 9)
        acc, dis = (0.5 + 0.02 * i, 0.9 - 0.02 * i) if i < 11 else (0.5, 0.5)
        attrs = {"feasible": True, "baseline": i == 11,  # no config: domains by index
                 **{f"lodo_acc_domain_{k}": acc + 0.01 * k for k in FOLDS}}
        study.add_trial(create_trial(values=[acc, dis], params=params, distributions=dists,
                                     user_attrs=attrs))
    fig = _figures(url, "many").figures["domains"]
    names = [t.name for t in fig.data]
    assert len(names) == 9 and names[0] == f"#11 {method_default_name()}"
    assert list(fig.data[0].x) == [f"domain {k}" for k in FOLDS]
    assert list(fig.data[0].y) == pytest.approx([0.5 + 0.01 * k for k in FOLDS])
    assert "8 of the 11 front trials and the method default" in fig.layout.title.text
    assert "is not in this study" in fig.layout.title.text


def test_lodo_without_diva_says_so_and_draws_stored_standard_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'lodo.db'}"
    make_lodo_study(url, diva=False, se=True)
    fig = _figures(url, "lodo").figures["domains"]
    assert "the DIVA variant (no zay) is not in this study" in fig.layout.title.text
    traces = _traces(fig)
    assert not any("DIVA" in n for n in traces)
    assert list(traces["#0"].error_y.array) == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert list(traces["#0"].y) == LODO[0][0]


def test_a_study_with_validation_and_test_domains_gets_grouped_accuracies(tmp_path):
    url = f"sqlite:///{tmp_path / 'splits.db'}"
    make_split_study(url)
    fig = _figures(url, "splits").figures["domains"]
    default = f"#1 {method_default_name()}"
    assert [t.type for t in fig.data] == ["bar"] * 3
    in_domain, val, test = fig.data
    for trace in fig.data:
        assert list(trace.x) == [default, "#0"]  # the default first, then the front
    assert in_domain.name == "in-domain validation (task_accuracy)"
    assert val.name == "held-out validation domain 60° (acc_y_val_domain)"
    assert test.name == "test domain 75° (acc_y_test_domain): reported, not selected on"
    assert list(in_domain.y) == [SPLITS[1][0], SPLITS[0][0]]
    assert list(val.y) == [SPLITS[1][1], SPLITS[0][1]]
    assert list(test.y) == [SPLITS[1][2], SPLITS[0][2]]
    assert "task objective: acc_y_val_domain" in fig.layout.title.text


def test_no_held_out_columns_no_figure_and_no_complaint(study_db, tmp_path):
    url = f"sqlite:///{study_db}"
    built = _figures(url, "known")
    assert "domains" not in built.figures and "domains" not in built.skipped
    asked = _figures(url, "known", which=("domains",))
    assert "no held-out-domain accuracy" in asked.skipped["domains"]
    page = write_report(load_study(url, "known"), tmp_path, png=False).read_text()
    assert "figure-domains" not in page and "Figures not drawn" not in page


def test_the_report_holds_the_held_out_figure(tmp_path):
    url = f"sqlite:///{tmp_path / 'lodo.db'}"
    make_lodo_study(url)
    page = write_report(load_study(url, "lodo"), tmp_path / "out", png=False).read_text()
    assert "id='figure-domains'" in page and 'id="fig-domains"' in page

"""A constructed study whose Pareto set is known."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.db.storage import create_tables, write_artifact, write_epoch
from search.db.study import OBJECTIVE_ATTR
from search.objective import Objective

optuna.logging.set_verbosity(optuna.logging.ERROR)

# (accuracy, independence): the front is #0, #1, #2; #3 and #4 are dominated;
# #5 would dominate everything but its zay collapsed; #6 was pruned.
POINTS = [(0.95, 0.80), (0.90, 0.90), (0.80, 0.97), (0.85, 0.85), (0.70, 0.70),
          (0.99, 0.99), None]
FRONT = {0, 1, 2}
DISTS = {
    "stage1_epochs": IntDistribution(0, 9),
    "stage2_epochs": IntDistribution(0, 9),
    "use_independence_penalty": CategoricalDistribution([True, False]),
    "independence_penalty": FloatDistribution(0.1, 100.0, log=True),
}


def new_study(url: str, name: str, objective: Objective) -> optuna.Study:
    """An empty study that records its objective as the sweep does."""
    study = optuna.create_study(storage=url, study_name=name, directions=objective.directions)
    study.set_user_attr(OBJECTIVE_ATTR, objective.describe())
    return study


def make_study(url: str, name: str = "known", points=POINTS) -> None:
    objective = Objective()
    study = new_study(url, name, objective)
    trials = []
    for i, point in enumerate(points):
        on = i % 2 == 0
        params = {"stage1_epochs": i % 4 + 1, "stage2_epochs": 3, "use_independence_penalty": on}
        dists = {k: DISTS[k] for k in params}
        if on:
            params["independence_penalty"] = 10.0 ** (i / 2 - 1)  # 0.1, 1, 10, 100
            dists["independence_penalty"] = DISTS["independence_penalty"]
        attrs = {"zay_collapsed": 1.0 if i == 5 else 0.0, "feasible": i != 5,
                 "baseline": i == 1, "zay_active_dims": 0.0 if i == 5 else 8.0}
        if point is None:
            trials.append(create_trial(state=TrialState.PRUNED, params=params,
                                       distributions=dists, user_attrs=attrs))
        else:
            # as the searcher records it: a collapsed zay violates the Optuna constraint
            trials.append(create_trial(values=list(point), params=params, distributions=dists,
                                       user_attrs=attrs,
                                       system_attrs={"constraints": [0.5 if i == 5 else -0.5]}))
    study.add_trials(trials)
    storage = optuna.storages.RDBStorage(url)
    create_tables(storage.engine)
    for t in study.get_trials():
        for epoch in range(6):
            stage = 1 if epoch < 2 else 2 if epoch < 4 else 3
            write_epoch(storage.engine, t._trial_id, epoch, stage,
                        {"epoch": float(epoch), "stage": float(stage),
                         "val_loss": 100.0 - 10 * epoch})
        write_artifact(storage.engine, t._trial_id, "correlations", {
            "groups": ["zy", "za"], "group_matrix": [[0.1, 0.2], [0.2, 0.1]],
            "dim_labels": ["zy[0]", "za[0]"], "dim_matrix": [[1.0, 0.2], [0.2, 1.0]]})
    storage.engine.dispose()


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def study_db(tmp_path):
    db = tmp_path / "study.db"
    make_study(f"sqlite:///{db}")
    return db


def _random_params(rng, dists_out: dict) -> dict:
    on = bool(rng.integers(0, 2))
    params = {"stage1_epochs": int(rng.integers(0, 10)), "stage2_epochs": int(rng.integers(0, 10)),
              "use_independence_penalty": on}
    if on:
        params["independence_penalty"] = float(10 ** rng.uniform(-1, 2))
    dists_out.clear()
    dists_out.update({k: DISTS[k] for k in params})
    return params


def make_scalar_study(url: str, name: str = "scalar", n: int = 30, *,
                      epochs: bool = True) -> None:
    """A scalar (one objective) study; ``epochs=False`` stores no per-epoch rows."""
    objective = Objective(mode="scalar")
    study = new_study(url, name, objective)
    rng = np.random.default_rng(3)
    trials = []
    for _ in range(n):
        dists: dict = {}
        params = _random_params(rng, dists)
        value = 0.5 + 0.04 * params["stage1_epochs"] + 0.01 * rng.normal()
        trials.append(create_trial(values=[value], params=params, distributions=dists,
                                   user_attrs={"feasible": True},
                                   system_attrs={"constraints": [-0.5]}))
    study.add_trials(trials)
    storage = optuna.storages.RDBStorage(url)
    create_tables(storage.engine)
    if epochs:
        for t in study.get_trials():
            for epoch in range(3):
                write_epoch(storage.engine, t._trial_id, epoch, epoch + 1,
                            {"epoch": float(epoch), "stage": float(epoch + 1),
                             "val_loss": 10.0 - epoch})
    storage.engine.dispose()


def make_dominant_study(url: str, name: str = "dominant", n: int = 80) -> None:
    """Both objectives rise with stage 1 length and depend on nothing else but small
    noise: ``stage1_epochs`` is the one important parameter, for each objective and for
    reaching the front."""
    objective = Objective()
    study = new_study(url, name, objective)
    rng = np.random.default_rng(11)
    trials = []
    for _ in range(n):
        dists: dict = {}
        params = _random_params(rng, dists)
        s1 = params["stage1_epochs"]
        values = [0.5 + 0.05 * s1 + 0.005 * rng.normal(), 0.6 + 0.03 * s1
                  + 0.005 * rng.normal()]
        trials.append(create_trial(values=values, params=params, distributions=dists,
                                   user_attrs={"feasible": True},
                                   system_attrs={"constraints": [-0.5]}))
    study.add_trials(trials)


def assert_report_imports_no_torch_or_ray(db_path, study: str, out) -> None:
    """Write the report of ``study`` in a fresh interpreter; fail if it imported torch or
    ray (analysis reads the database only)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from analysis.cli import main\n"
        f"assert main(['report', '--storage', 'sqlite:///{db_path}', '--study', '{study}', "
        f"'--out', '{out}', '--no-png']) == 0\n"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def subtitle(fig) -> str:
    """A figure's subtitle as one text: its ``<sup>`` lines joined by "; ", the clause
    separator at which ``analysis._figures.subtitle_lines`` breaks them."""
    return "; ".join(re.findall(r"<sup>(.*?)</sup>", fig.layout.title.text or ""))

"""Studies written as a sweep writes them, without running one: trials whose settings,
stored configuration and values are known (``tests/search`` and ``tests/analysis``)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import create_trial

from search.db.fixed import fixed_fields
from search.db.study import open_study
from search.objective import Objective
from trainer import RunConfig

DISTRIBUTIONS = {
    "stage1_epochs": IntDistribution(0, 6),
    "stage2_epochs": IntDistribution(0, 6),
    "use_independence_penalty": CategoricalDistribution([True, False]),
    "independence_penalty": FloatDistribution(0.1, 100.0, log=True),
}
#: the sweep's base configuration of these studies (the smoke test's sizes)
BASE = {"epochs": 6, "max_samples": 200, "hidden_dim": 64, "write_plots": False,
        "device": "auto"}


def base_config(**flat) -> dict:
    return RunConfig().replace(**{**BASE, **flat}).to_dict()


def add_trial(study: optuna.Study, params: dict, values: list[float], *, baseline: bool = False,
              **flat) -> None:
    """A complete, feasible trial of ``params`` whose stored configuration is the base's
    with them (and ``flat``) applied, as ``search.worker.solo`` stores it."""
    config = RunConfig.from_dict(base_config(**flat)).replace(**params).to_dict()
    study.add_trial(create_trial(
        values=values, params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params},
        user_attrs={"config": config, "feasible": True, "baseline": baseline,
                    "zay_collapsed": 0.0},
        system_attrs={"constraints": [-0.5]}))


#: (params, values) of the twin study: #1 and #2 differ only in a penalty that acts in no
#: epoch (stage 2 of 0 epochs) and gave the same values; #4 trains as the default #0 does
TWIN_TRIALS = [
    ({"stage1_epochs": 2, "stage2_epochs": 2, "use_independence_penalty": True,
      "independence_penalty": 10.0}, [0.90, 0.50]),
    ({"stage1_epochs": 2, "stage2_epochs": 0, "use_independence_penalty": True,
      "independence_penalty": 15.9}, [0.95, 0.60]),
    ({"stage1_epochs": 2, "stage2_epochs": 0, "use_independence_penalty": False},
     [0.95, 0.60]),
    ({"stage1_epochs": 1, "stage2_epochs": 3, "use_independence_penalty": False},
     [0.97, 0.40]),
    ({"stage1_epochs": 2, "stage2_epochs": 2, "use_independence_penalty": True,
      "independence_penalty": 10.0}, [0.90, 0.50]),
]


def make_twin_study(url: str, name: str = "twins", *,
                    default_values: list[float] | None = None) -> None:
    """A pareto study (made as a sweep makes it) whose front is #1 (= #2) and #3; the
    default #0 (= #4) is dominated, or on the front too with ``default_values`` such as
    ``[0.99, 0.30]``."""
    opened = open_study(url, name, Objective(), sampler="random", seed=0,
                        fixed=fixed_fields(base_config()))
    for i, (params, values) in enumerate(TWIN_TRIALS):
        if default_values is not None and i in (0, 4):
            values = default_values
        add_trial(opened.study, params, values, baseline=i == 0)
    opened.storage.engine.dispose()

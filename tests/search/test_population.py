"""Population sweeps: K Optuna trials per Ray trial, each stored as a solo trial would be."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search.driver import run_sweep
from search.storage import read_epochs
from tests.search.conftest import tiny_options


def test_population_sweep_stores_fully_formed_trials(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    summary = run_sweep(tiny_options(url, "pop", 8, tmp_path, population=4))
    assert summary["counts"]["complete"] == 8
    study = optuna.load_study(study_name="pop", storage=url)
    assert len(study.trials) == 8
    # two Ray trials of four members each
    by_ray_trial = Counter(t.user_attrs["tune_trial_id"] for t in study.trials)
    assert sorted(by_ray_trial.values()) == [4, 4]
    engine = sa.create_engine(url)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert [int(r["epoch"]) for r in read_epochs(engine, t._trial_id)] == [0, 1, 2, 3]
        assert len(t.values) == 2 and "zay_independence_score" in t.user_attrs
        cfg = t.user_attrs["config"]  # the member's own settings, not a neighbour's
        assert cfg["stages"]["stage1_epochs"] == t.params.get("stage1_epochs", 1)
        on = t.params["use_independence_penalty"]
        assert cfg["stages"]["use_independence_penalty"] == on
        if on:
            assert cfg["stages"]["independence_penalty"] == t.params["independence_penalty"]
        assert t.user_attrs["population_size"] == 4.0
    engine.dispose()
    assert {t.user_attrs["population_member"] for t in study.trials} == {0, 1, 2, 3}
    # the total holds across drivers: asking for 10 runs one population of two
    summary = run_sweep(tiny_options(url, "pop", 10, tmp_path, population=4))
    assert summary["counts"]["complete"] == 10
    last = [t for t in optuna.load_study(study_name="pop", storage=url).trials[8:]]
    assert len({t.user_attrs["tune_trial_id"] for t in last}) == 1


def test_asha_with_population_is_refused_before_anything_is_stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ValueError, match="--asha cannot be combined with --population"):
        run_sweep(tiny_options(url, "x", 4, tmp_path, population=4, asha=True))
    assert not (tmp_path / "study.db").exists()

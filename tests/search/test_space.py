from __future__ import annotations

import json

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.space import SearchSpace, SpaceError, baseline_params, build_space

optuna.logging.set_verbosity(optuna.logging.ERROR)


@st.composite
def spaces(draw):
    epochs = draw(st.integers(1, 80))
    s1_lo = draw(st.integers(0, epochs))
    s1_hi = draw(st.integers(s1_lo, epochs + 20))
    s2_lo = draw(st.integers(0, epochs - s1_lo))
    s2_hi = draw(st.integers(s2_lo, epochs + 20))
    return SearchSpace(epochs=epochs, stage1_epochs=(s1_lo, s1_hi),
                       stage2_epochs=(s2_lo, s2_hi))


@settings(max_examples=60, deadline=None)
@given(space=spaces(), sampler=st.sampled_from(["random", "tpe"]), seed=st.integers(0, 99))
def test_sampled_stage_lengths_always_fit_the_budget(space, sampler, seed):
    make = {"random": optuna.samplers.RandomSampler,
            "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)}
    study = optuna.create_study(sampler=make[sampler](seed=seed))
    for _ in range(8):
        trial = study.ask()
        p = space.sample(trial)
        assert p["stage1_epochs"] + p["stage2_epochs"] <= space.epochs
        assert space.stage1_epochs[0] <= p["stage1_epochs"] <= space.stage1_epochs[1]
        assert space.stage2_epochs[0] <= p["stage2_epochs"] <= space.stage2_epochs[1]
        study.tell(trial, float(p["stage1_epochs"] - p["stage2_epochs"]))


def test_lambda_only_when_the_penalty_is_on():
    space = SearchSpace(epochs=9, stage1_epochs=(0, 9), stage2_epochs=(0, 9))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        p = space.sample(trial)
        seen.add(p["use_independence_penalty"])
        assert ("independence_penalty" in p) == p["use_independence_penalty"]
        assert ("independence_penalty" in trial.params) == p["use_independence_penalty"]
        if p["use_independence_penalty"]:
            assert 0.1 <= p["independence_penalty"] <= 100
        study.tell(trial, 0.0)
    assert seen == {True, False}


def test_fix_and_narrow_from_the_command_line():
    space = build_space(30, fixes=["penalty=on", "lambda=3"],
                        ranges=["stage1_epochs=5:10", "zay_suppression=gate,kl_weight"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        t = study.ask()
        p = space.sample(t)
        assert 5 <= p["stage1_epochs"] <= 10
        assert p["independence_penalty"] == 3.0 and p["use_independence_penalty"] is True
        assert p["zay_suppression"] in ("gate", "kl_weight")
        assert "independence_penalty" not in t.params  # fixed: not a searched parameter
        study.tell(t, 0.0)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_space_file(tmp_path, suffix):
    body = {"stage2_epochs": [1, 4], "lambda": [1.0, 20.0], "fixed": {"penalty_measure": "hsic"}}
    path = tmp_path / f"space{suffix}"
    if suffix == ".yaml":
        import yaml

        path.write_text(yaml.safe_dump(body))
    else:
        path.write_text(json.dumps(body))
    space = build_space(12, file=path)
    assert space.stage2_epochs == (1, 4)
    assert space.independence_penalty == (1.0, 20.0)
    assert space.fixed == {"penalty_measure": "hsic"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ranges": ["stage1_epochs=8:10", "stage2_epochs=5:6"]}, "no valid configuration"),
        ({"ranges": ["lambda=0:10"]}, "must be positive"),
        ({"ranges": ["stage1_epochs=5:2"]}, "empty"),
        ({"fixes": ["zay_suppression=shrink"]}, "zay_suppression choices"),
        ({"fixes": ["epochs=3"]}, "bad --set"),
        ({"fixes": ["stage1_epochs=abc"]}, "must be an integer"),
        ({"file": "/nonexistent/space.yaml"}, "does not exist"),
    ],
)
def test_spaces_that_admit_nothing_are_refused(kwargs, message):
    with pytest.raises(SpaceError, match=message):
        build_space(12, **kwargs)


def test_baseline_is_the_methods_default():
    assert baseline_params(60) == {"stage1_epochs": 20, "stage2_epochs": 20,
                                   "use_independence_penalty": True,
                                   "independence_penalty": 10.0}
    assert SearchSpace(epochs=60, stage1_epochs=(0, 60), stage2_epochs=(0, 60)).admits(
        baseline_params(60))
    assert not build_space(60, ranges=["stage1_epochs=25:30"]).admits(baseline_params(60))

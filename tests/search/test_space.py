from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.db.study import make_sampler
from search.space import SearchSpace, SpaceError, baseline_params, build_space
from trainer import params
from trainer.params import Choices, Param, Range

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
        if p["stage2_epochs"] == 0:  # the penalty acts in no epoch: nothing of it is drawn
            assert "use_independence_penalty" not in p and "independence_penalty" not in p
            study.tell(trial, 0.0)
            continue
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
        ({"fixes": ["epochs=3"]}, "epochs is a trainer setting that every trial shares"),
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


# ------------------------------------------------------------------- the registry's space


def _legacy_sample(space: SearchSpace, trial) -> dict:
    """The sampler as it was written by hand before the registry, for comparison."""
    def rng(name):
        return (space.fixed[name],) * 2 if name in space.fixed else getattr(space, name)

    def choices(name):
        return (space.fixed[name],) if name in space.fixed else tuple(getattr(space, name))

    def cat(name):
        c = choices(name)
        return c[0] if len(c) == 1 else trial.suggest_categorical(name, list(c))

    def integer(name, lo, hi):
        return int(lo) if lo == hi else trial.suggest_int(name, int(lo), int(hi))

    e = space.epochs
    (s1_lo, s1_hi), (s2_lo, s2_hi) = rng("stage1_epochs"), rng("stage2_epochs")
    p = {"stage1_epochs": integer("stage1_epochs", s1_lo, min(s1_hi, e - s2_lo))}
    p["stage2_epochs"] = integer("stage2_epochs", s2_lo, min(s2_hi, e - p["stage1_epochs"]))
    if p["stage2_epochs"] > 0:  # the penalty acts in stage 2 only (no penalty_in_stage3)
        p["use_independence_penalty"] = cat("use_independence_penalty")
    if p.get("use_independence_penalty"):
        lo, hi = rng("independence_penalty")
        p["independence_penalty"] = (float(lo) if lo == hi else trial.suggest_float(
            "independence_penalty", lo, hi, log=True))
        p["penalty_measure"] = cat("penalty_measure")
        p["penalty_pairs"] = cat("penalty_pairs")
    # gate and kl_weight differ in stages 1 and 2 only; kl_target acts in stage 3 too
    if p["stage1_epochs"] + p["stage2_epochs"] > 0 or "kl_target" in choices("zay_suppression"):
        p["zay_suppression"] = cat("zay_suppression")
    for name in ("beta_y", "beta_a", "beta_ay", "beta_x"):  # opt-in: pinned unless ranged
        if name == "beta_ay" and p.get("zay_suppression") == "kl_target":
            continue  # kl_target's zay term does not read beta_ay
        lo, hi = rng(name)
        p[name] = float(lo) if lo == hi else trial.suggest_float(name, lo, hi, log=True)
    return p


@st.composite
def cli_spaces(draw):
    epochs = draw(st.integers(1, 40))
    s1_lo = draw(st.integers(0, epochs))
    ranges = [f"stage1={s1_lo}:{draw(st.integers(s1_lo, epochs + 5))}"]
    s2_lo = draw(st.integers(0, epochs - s1_lo))
    ranges.append(f"stage2_epochs={s2_lo}:{draw(st.integers(s2_lo, epochs + 5))}")
    ranges.append("suppression=" + ",".join(draw(st.lists(
        st.sampled_from(["gate", "kl_weight", "kl_target"]), min_size=1, max_size=3,
        unique=True))))
    ranges.append("measure=" + ",".join(draw(st.lists(
        st.sampled_from(["corr", "hsic", "hsic_labels"]), min_size=1, max_size=3,
        unique=True))))
    fixes = draw(st.sampled_from([[], ["penalty=on"], ["penalty=off"], ["lambda=3"]]))
    return build_space(epochs, ranges=ranges, fixes=fixes)


@settings(max_examples=40, deadline=None)
@given(space=cli_spaces(), sampler=st.sampled_from(["random", "tpe"]), seed=st.integers(0, 99))
def test_the_registry_samples_exactly_what_the_hand_written_sampler_did(space, sampler, seed):
    studies = [optuna.create_study(sampler=make_sampler(sampler, seed)) for _ in range(2)]
    for _ in range(7):
        new, old = studies[0].ask(), studies[1].ask()
        got, want = space.sample(new), _legacy_sample(space, old)
        assert got == want and list(got) == list(want)
        assert new.distributions == old.distributions
        value = float(got["stage1_epochs"] - got["stage2_epochs"])
        studies[0].tell(new, value)
        studies[1].tell(old, value)


def test_the_space_holds_the_registrys_searched_parameters_and_ranges():
    space = build_space(24)
    assert list(space.bounds) == list(params.searched_names())
    for p in params.searched():
        want = (p.search.bounds(24) if isinstance(p.search, Range) else p.search.values)
        if p.opt_in:  # pinned to the method's value until a range is given
            want = (p.default, p.default) if isinstance(p.search, Range) else (p.default,)
        assert getattr(space, p.name) == tuple(want), p.name
    assert space.stage1_epochs == (0, 24) and space.independence_penalty == (0.1, 100.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        trial = study.ask()
        p = space.sample(trial)
        assert set(p) <= set(params.searched_names())
        for name, dist in trial.distributions.items():
            entry = params.get(name)
            if isinstance(entry.search, Range) and not entry.budget:
                assert (dist.low, dist.high, dist.log) == (*entry.search.bounds(24),
                                                           entry.search.log)
        study.tell(trial, 0.0)
    assert space.describe() == {"epochs": 24, **space.bounds, "fixed": {}}
    assert pickle.loads(pickle.dumps(space)) == space == copy.deepcopy(space)
    with pytest.raises(TypeError, match="searched parameters are"):
        SearchSpace(epochs=6, lr=(1e-4, 1e-2))


#: an entry the registry does not hold today: the KL target's gamma, searched only where
#: the suppression mode is kl_target (its RunConfig field exists, default 10.0)
GAMMA = Param("kl_target_gamma", float, 10.0, "gamma of the Burgess-style KL target",
              search=Range(1.0, 100.0, log=True), aliases=("gamma",),
              when=(("zay_suppression", "kl_target"),), baseline=False)


def test_one_registry_entry_adds_a_parameter_to_the_search(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(params, "PARAMS", (*params.PARAMS, GAMMA))
    params.check()
    # the default space searches it (where it applies) in its registry range
    space = build_space(12, ranges=["suppression=gate,kl_target"])
    assert space.kl_target_gamma == (1.0, 100.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        p = space.sample(trial)
        seen.add(p["zay_suppression"])
        assert ("kl_target_gamma" in p) == (p["zay_suppression"] == "kl_target")
        if "kl_target_gamma" in p:
            assert 1.0 <= p["kl_target_gamma"] <= 100.0
            assert trial.distributions["kl_target_gamma"].log
        study.tell(trial, 0.0)
    assert seen == {"gate", "kl_target"}
    # --range and --set, by name and alias, and a space file
    narrowed = build_space(12, ranges=["gamma=2:20", "zay_suppression=kl_target"])
    assert narrowed.kl_target_gamma == (2.0, 20.0)
    fixed = build_space(12, fixes=["kl_target_gamma=5", "suppression=kl_target"])
    trial = optuna.create_study().ask()
    assert fixed.sample(trial)["kl_target_gamma"] == 5.0 and "kl_target_gamma" not in \
        trial.params
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"gamma": [3, 30], "fixed": {"suppression": "kl_target"}}))
    assert build_space(12, file=path).kl_target_gamma == (3, 30)
    with pytest.raises(SpaceError, match="must be a number"):
        build_space(12, fixes=["gamma=high"])
    with pytest.raises(SpaceError, match="must be positive"):
        build_space(12, ranges=["gamma=0:3"])
    # the method's default trial leaves it to the space, and still lies inside it
    assert baseline_params(12) == {"stage1_epochs": 4, "stage2_epochs": 4,
                                   "use_independence_penalty": True,
                                   "independence_penalty": 10.0}
    assert space.admits(baseline_params(12))
    # the sweep's help lists it with its alias, help text and range
    from search.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    text = " ".join(sub.format_help().split())
    assert "kl_target_gamma (gamma): gamma of the Burgess-style KL target" in text
    assert "searched 1:100, log scale, only when zay_suppression is kl_target" in text


def test_the_sweep_help_lists_every_searched_parameter():
    from search.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    text = " ".join(sub.format_help().split())
    for p in params.searched():
        assert f"{p.name} ({', '.join(p.aliases)}): {p.help}" in text, p.name
    assert "independence_penalty (lambda): weight lambda of the stage-2 independence " \
           "penalty; searched 0.1:100, log scale, only when use_independence_penalty is " \
           "on and stage 2 is not empty (or stage 3, with penalty_in_stage3) and the model " \
           "has zay; method default 10" in text


def test_the_baseline_is_the_registrys_method_default(monkeypatch):
    lam = dataclasses.replace(params.get("independence_penalty"), default=3.0)
    monkeypatch.setattr(params, "PARAMS", tuple(
        lam if p.name == lam.name else p for p in params.PARAMS))
    assert baseline_params(30)["independence_penalty"] == 3.0
    assert params.method_default_text() == "thirds, λ=3"
    off = dataclasses.replace(params.get("use_independence_penalty"), default=False)
    monkeypatch.setattr(params, "PARAMS", tuple(
        off if p.name == off.name else p for p in params.PARAMS))
    assert baseline_params(30) == {"stage1_epochs": 10, "stage2_epochs": 10,
                                   "use_independence_penalty": False}
    assert params.method_default_text() == "thirds, penalty off"


def test_a_searched_choice_entry_parses_by_its_kind(monkeypatch):
    dims = Param("zy_dim", int, 16, "width of zy", search=Choices((8, 16)), aliases=("zy",))
    monkeypatch.setattr(params, "PARAMS", (*params.PARAMS, dims))
    space = build_space(6, ranges=["zy=4,8,32"])
    assert space.zy_dim == (4, 8, 32)
    assert build_space(6, fixes=["zy_dim=8"]).sample(optuna.create_study().ask())["zy_dim"] == 8
    with pytest.raises(SpaceError, match="must be an integer"):
        build_space(6, fixes=["zy=wide"])


KL_WEIGHTS = (("beta_y", "beta_zy"), ("beta_a", "beta_za"), ("beta_ay", "beta_zay"),
              ("beta_x", "beta_zx"))


def test_the_kl_weights_are_pinned_to_runconfigs_default_until_ranged():
    from trainer import RunConfig

    cfg = RunConfig()
    space = build_space(12)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    p = space.sample(trial)
    for name, _ in KL_WEIGHTS:
        assert p[name] == getattr(cfg.model, name) == params.get(name).default == 1.0
        assert name not in trial.params  # not an Optuna parameter: not searched
        assert name not in space.baseline()


@pytest.mark.parametrize(("name", "alias"), KL_WEIGHTS)
def test_a_kl_weight_is_ranged_fixed_and_filed_by_name_or_alias(tmp_path, name, alias):
    for key in (name, alias):
        space = build_space(12, ranges=[f"{key}=0.5:2"])
        assert getattr(space, name) == (0.5, 2.0)
        assert space.baseline()[name] == 1.0  # the method's own value, enqueued first
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for _ in range(10):
            trial = study.ask()
            value = space.sample(trial)[name]
            assert 0.5 <= value <= 2.0 and trial.params[name] == value
            dist = trial.distributions[name]
            assert (dist.low, dist.high, dist.log) == (0.5, 2.0, True)  # log scale
            study.tell(trial, 0.0)
        fixed = build_space(12, fixes=[f"{key}=0.3"])
        assert fixed.fixed == {name: 0.3}
        assert fixed.sample(optuna.create_study().ask())[name] == 0.3
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({key: [0.25, 4.0]}))
        assert getattr(build_space(12, file=path), name) == (0.25, 4.0)
    with pytest.raises(SpaceError, match="must be positive"):
        build_space(12, ranges=[f"{name}=0:2"])


def test_penalty_pairs_is_a_choice_that_defaults_to_todays_pairs():
    space = build_space(12, ranges=["pairs=zy_za,zy_za_zx", "stage2=1:12"],
                        fixes=["penalty=on"])
    assert build_space(12).penalty_pairs == ("zy_za",)
    assert space.penalty_pairs == ("zy_za", "zy_za_zx")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        seen.add(space.sample(trial)["penalty_pairs"])
        study.tell(trial, 0.0)
    assert seen == {"zy_za", "zy_za_zx"}
    with pytest.raises(SpaceError, match="penalty_pairs choices"):
        build_space(12, fixes=["pairs=zx"])


def test_the_sweep_help_shows_the_kl_weights_as_opt_in():
    from search.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    text = " ".join(sub.format_help().split())
    assert ("beta_x (beta_zx): KL weight of zx: the loss's term beta_scale * beta_x * "
            "KL(q(zx|x) || N(0, I)); searched only when given a range (e.g. --range "
            "beta_x=0.25:4, sampled on a log scale); method default 1") in text


@pytest.mark.parametrize("ranges", [
    ["pairs=zy_za_zx,zy_za"], ["suppression=kl_weight,gate,kl_target"],
    ["measure=hsic,corr"], ["pairs=zy_za,zy_za_zx", "beta_zay=0.25:4", "beta_zx=0.5:2"],
])
def test_the_baseline_is_the_whole_method_default_whatever_the_space_offers(ranges):
    """Every parameter the space leaves to the sampler gets the method's value in the
    baseline (trial 0), whatever order the choices were given in; nothing is drawn."""
    space = build_space(12, ranges=ranges)
    base = space.baseline()
    for p in params.searched():
        if p.applies(base) and len(set(space.bounds[p.name])) > 1:
            assert base[p.name] == p.method_value(12), p.name
    assert space.admits(base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial(base)
    drawn = space.sample(study.ask())
    assert {k: drawn[k] for k in base} == base


def test_a_space_without_the_methods_choice_does_not_admit_the_baseline():
    space = build_space(12, ranges=["suppression=kl_weight,kl_target"])
    assert space.baseline()["zay_suppression"] == "gate"
    assert not space.admits(space.baseline())

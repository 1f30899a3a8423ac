"""The driver <-> worker contract: every request and answer survives its encoding into
Ray's flat dicts, and the searchers read what the worker writes."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from search.contract import (
    LOST,
    MEMBER,
    RAY_KEYS,
    Failure,
    Outcome,
    Pruned,
    Replication,
    Request,
    Setting,
    answer_message,
    decode_answer,
    epoch_message,
    own_metrics,
    population_final,
    read_answer,
    read_epoch,
    read_final,
    read_refill,
    refill_message,
)

#: metric names: not the contract's own keys, nor those Ray adds to every result
names = st.text(st.characters(categories=("Ll", "Nd"), include_characters="_"), min_size=1,
                max_size=12).filter(lambda k: k not in {"final", "trial_failed", MEMBER, *RAY_KEYS}
                                    and not k.endswith("_json"))
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), finite,
                      st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
metrics = st.dictionaries(names, finite, max_size=6)
seeds = st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True)

replications = st.builds(
    Replication, st.tuples(st.integers(0, 99), st.integers(0, 99)).map(tuple),
    st.integers(0, 99), st.one_of(st.none(), st.lists(st.integers(0, 5), min_size=2,
                                                       max_size=3, unique=True).map(tuple)))
settings_ = st.builds(Setting, st.dictionaries(names, json_value, max_size=4),
                      st.one_of(st.none(), st.integers(0, 10**4)))


@st.composite
def requests(draw):
    population = draw(st.booleans())
    n = draw(st.integers(1, 4)) if population else 1
    return Request(base=draw(st.dictionaries(names, json_value, max_size=4)),
                   settings=tuple(draw(settings_) for _ in range(n)),
                   objective=draw(st.dictionaries(names, st.text(max_size=6), max_size=3)),
                   threads=draw(st.integers(1, 16)),
                   imports=tuple(draw(st.lists(names, max_size=2))),
                   replication=draw(st.one_of(st.none(), replications)),
                   population=population,
                   **(draw(st.fixed_dictionaries({
                       "coordinator": st.text(min_size=1, max_size=20),
                       "refill": st.booleans(),
                       "rungs": st.lists(st.integers(1, 99), max_size=3).map(tuple)}))
                      if draw(st.booleans()) else {}))


outcomes = st.builds(
    Outcome, metrics,
    config=st.one_of(st.none(), st.dictionaries(names, json_value, max_size=3)),
    correlations=st.one_of(st.none(), st.dictionaries(names, json_value, max_size=3)),
    last_epoch=st.one_of(st.none(), metrics),
    replicate_seeds=st.one_of(st.none(), seeds),
    replicate_values=st.one_of(st.none(), st.dictionaries(names, st.lists(finite, max_size=3),
                                                          max_size=3)),
    lodo_domains=st.one_of(st.none(), st.lists(st.integers(0, 5), max_size=3)))
failures = st.builds(Failure, st.fixed_dictionaries(
    {"reason": st.text(min_size=1, max_size=20)},
    optional={"type": st.text(max_size=8), "epoch": st.one_of(st.none(), st.integers(0, 99)),
              "traceback": st.text(max_size=40)}))
answers = st.one_of(outcomes, failures, st.builds(Pruned, metrics))


@settings(max_examples=200, deadline=None)
@given(requests())
def test_a_request_survives_its_encoding_as_a_ray_trial_config(request):
    config = request.to_config()
    assert Request.from_config(config) == request
    # a population's settings travel as members; one setting's at the top level, where
    # MO-ASHA reads its Optuna number
    assert ("members" in config) == request.population
    if not request.population and request.settings[0].optuna_number is not None:
        assert config["optuna_number"] == request.settings[0].optuna_number


@settings(max_examples=200, deadline=None)
@given(answers)
def test_an_answer_survives_its_encoding_as_a_final_result(answer):
    encoded = answer.encode()
    assert encoded["final"] == 1.0
    assert all(isinstance(v, int | float | str) for v in encoded.values())  # Ray's scalars
    assert read_final(encoded) == [answer]
    assert decode_answer(encoded) == answer


@settings(max_examples=100, deadline=None)
@given(st.lists(answers, min_size=1, max_size=4), st.integers(1, 3))
def test_a_populations_answers_come_back_in_order(got, replicates):
    final = population_final(got, len(got) * replicates)
    assert final["population"] == float(len(got) * replicates)
    assert read_final(final, len(got)) == got


@given(metrics, st.one_of(st.none(), st.integers(0, 50)))
def test_an_epoch_row_carries_its_settings_index_in_a_population(row, member):
    row = {**row, "epoch": 3.0, "stage": 2.0}
    assert read_epoch(epoch_message(row, member)) == (member, row)


@given(st.integers(0, 64), st.integers(0, 64))
def test_a_refill_ask_is_read_as_such_and_never_as_an_epoch_row(n, start):
    message = refill_message(n, start)
    assert read_refill(message) == (n, start)
    assert read_refill(epoch_message({"epoch": 1.0, "stage": 1.0}, 2)) is None
    assert read_final(message) is None and "epoch" not in message


@settings(max_examples=100, deadline=None)
@given(answers, st.integers(0, 64))
def test_an_early_answer_is_read_as_such_and_never_as_final_a_refill_or_a_row(answer, k):
    message = answer_message(k, answer)
    assert read_answer(message) == (k, answer)
    assert all(isinstance(v, int | float | str) for v in message.values())
    assert read_final(message) is None and read_refill(message) is None
    assert "epoch" not in message
    assert read_answer(epoch_message({"epoch": 1.0, "stage": 1.0}, k)) is None
    assert read_answer(answer.encode()) is None


def test_a_result_that_is_not_final_holds_no_answer():
    # the row a scheduler stopped a trial on, or a population cut by a stop
    assert read_final({"epoch": 4.0, "stage": 3.0, "final": 0.0}) is None
    assert read_final(None) is None


def test_a_whole_population_failure_answers_for_each_setting():
    failed = Failure({"reason": "ConfigError: bad (setup)"}).encode()
    assert read_final(failed, 3) == [Failure({"reason": "ConfigError: bad (setup)"})] * 3


def test_a_failure_names_the_replicate_and_fold_that_failed():
    f = Failure({"reason": "DivergenceError: diverged (epoch 3, stage 2)", "epoch": 3})
    assert f.at_run(7).details == {"reason": "replicate seed 7: DivergenceError: diverged "
                                             "(epoch 3, stage 2)", "epoch": 3, "seed": 7}
    assert f.at_run(7, 2).reason == ("replicate seed 7, held-out domain 2: DivergenceError: "
                                     "diverged (epoch 3, stage 2)")
    assert f.at_run(7, 2).details["fold"] == 2
    assert Failure({"reason": LOST}).reason == LOST


def test_own_metrics_keeps_our_numbers_only():
    result = {"task_accuracy": 0.5, "epoch": 2, "done": False, "config/lr": 0.1,
              "node_id": "abc", "flag": True, "time_total_s": 3.0, "val": math.inf}
    assert own_metrics(result) == {"task_accuracy": 0.5, "epoch": 2.0, "val": math.inf}


def test_the_runs_of_a_replication_go_fold_by_fold():
    rep = Replication((3, 4), 3, (0, 2))
    assert rep.runs() == [(3, 0), (4, 0), (3, 2), (4, 2)]
    assert Request({}, (Setting({}),)).runs() == [(None, None)]
    assert Request({}, (Setting({}),), replication=Replication((5,), 5)).runs() == [(5, None)]


def test_no_module_but_the_contract_builds_or_parses_a_json_result_key():
    from pathlib import Path

    import search

    root = Path(search.__file__).parent
    found = [f"{p.relative_to(root)}: {key}" for p in sorted(root.rglob("*.py"))
             if p.name != "contract.py"
             for key in re.findall(r"""["'][a-z_]+_json["']""", p.read_text())]
    assert not found, found


def test_the_packages_public_names_resolve_without_loading_ray_at_import():
    import subprocess
    import sys

    code = "\n".join([
        "import importlib, sys",
        "import search",
        "assert 'ray' not in sys.modules and 'optuna' not in sys.modules",
        "for name in search.__all__:",
        "    getattr(search, name)",
        "for package in ('search.db', 'search.driver', 'search.checks'):",  # modules
        "    for name in importlib.import_module(package).__all__:",
        "        importlib.import_module(package + '.' + name)",
        "from search.worker import answer, tune_trainable",
    ])
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]

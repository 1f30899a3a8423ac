from __future__ import annotations

import numpy as np
import pytest

from analysis import hypervolume_2d, hypervolume_history, pareto_ranks
from analysis._load import load_study
from analysis._rank import hypervolume_over_trials, rank_trials
from tests.analysis.conftest import FRONT, POINTS


def test_ranking_finds_the_known_pareto_set(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    ranked = rank_trials(data)
    assert set(ranked.loc[ranked["pareto_rank"] == 0, "number"]) == FRONT
    assert ranked["number"].tolist()[:3] != [] and set(ranked["number"][:3]) == FRONT
    # #3 is dominated only by #1 (rank 1); #4 by #3 as well (rank 2)
    assert dict(zip(ranked["number"], ranked["pareto_rank"], strict=True))[3] == 1
    assert dict(zip(ranked["number"], ranked["pareto_rank"], strict=True))[4] == 2
    # the infeasible (collapsed) #5 and the pruned #6 are left out by default
    assert 5 not in set(ranked["number"]) and 6 not in set(ranked["number"])
    # within the front, boundary points (infinite crowding) come first
    assert np.isinf(ranked["crowding"].iloc[0]) and np.isinf(ranked["crowding"].iloc[1])
    assert ranked["number"].iloc[2] == 1


def test_flags_include_infeasible_and_pruned(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    with_infeasible = rank_trials(data, include_infeasible=True)
    assert set(with_infeasible.loc[with_infeasible["pareto_rank"] == 0, "number"]) == {5}
    with_pruned = rank_trials(data, include_pruned=True)
    assert with_pruned["number"].iloc[-1] == 6 and np.isnan(with_pruned["pareto_rank"].iloc[-1])


def test_loaded_trials_decode_params_and_attrs(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    t = data.trials.set_index("number")
    # the study's trial i has the penalty on for even i, with lambda = 10^(i/2 - 1)
    on = t["use_independence_penalty"]
    assert on.dtype == bool and on.tolist() == [i % 2 == 0 for i in range(len(POINTS))]
    assert t.loc[2, "use_independence_penalty"] is np.True_  # a numpy bool, not 1 or "True"
    lam = t["independence_penalty"]
    assert lam[on].tolist() == pytest.approx([0.1, 1.0, 10.0, 100.0])
    assert lam[~on].isna().all()  # penalty off: no lambda
    assert bool(t.loc[1, "baseline"]) and not bool(t.loc[5, "feasible"])
    assert data.objectives == ["task_accuracy", "zay_independence_score"]


def test_hypervolume_against_a_hand_computation(study_db):
    # front (0.95, 0.80), (0.90, 0.90), (0.80, 0.97) against reference (0, 0):
    # 0.95*0.80 + 0.90*(0.90-0.80) + 0.80*(0.97-0.90) = 0.76 + 0.09 + 0.056 = 0.906
    pts = np.array([[0.95, 0.80], [0.90, 0.90], [0.80, 0.97], [0.85, 0.85], [0.70, 0.70]])
    assert hypervolume_2d(pts, ["maximize", "maximize"], [0, 0]) == pytest.approx(0.906)
    data = load_study(f"sqlite:///{study_db}", "known")
    hv = hypervolume_over_trials(data)
    assert hv["hypervolume"].tolist() == pytest.approx([0.76, 0.85, 0.906, 0.906, 0.906])
    # a minimised objective flips: reference 1 for it
    assert hypervolume_2d(np.array([[0.5, 0.2]]), ["maximize", "minimize"], [0, 1]) == \
        pytest.approx(0.5 * 0.8)


def test_pareto_ranks_match_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(30):
        v = rng.integers(0, 6, size=(rng.integers(1, 30), 2)).astype(float)
        dirs = ["maximize", "minimize"]
        expected = _brute_force_ranks(v * np.array([1, -1]))
        assert (pareto_ranks(v, dirs) == expected).all()
        hv = hypervolume_history(v, dirs, [0, 10])
        assert hv[-1] == pytest.approx(hypervolume_2d(v, dirs, [0, 10]))
        assert (np.diff(hv) >= -1e-12).all()


def _brute_force_ranks(s: np.ndarray) -> np.ndarray:
    """Peel fronts by the definition (``s`` maximised in every column)."""
    expected = np.zeros(len(s), dtype=int)
    remaining = set(range(len(s)))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(
            (s[j] >= s[i]).all() and (s[j] > s[i]).any() for j in remaining)}
        for i in front:
            expected[i] = rank
        remaining -= front
        rank += 1
    return expected


def test_three_objective_ranks_equal_optunas_and_the_definition():
    from optuna.study._multi_objective import _fast_non_domination_rank

    rng = np.random.default_rng(5)
    dirs = ["maximize", "minimize", "maximize"]
    signs = np.array([1.0, -1.0, 1.0])
    for _ in range(20):
        n = int(rng.integers(1, 120))
        v = rng.integers(0, 8, size=(n, 3)).astype(float)  # ties and duplicates included
        ours = pareto_ranks(v, dirs)
        assert (ours == _fast_non_domination_rank(-v * signs)).all()
        assert (ours == _brute_force_ranks(v * signs)).all()
    big = rng.random((3000, 3))
    assert (pareto_ranks(big, ["maximize"] * 3) == _fast_non_domination_rank(-big)).all()


def test_a_single_objective_ranks_by_a_sort():
    v = np.array([[0.5], [0.9], [0.1], [0.9], [0.7]])
    assert pareto_ranks(v, ["maximize"]).tolist() == [2, 0, 3, 0, 1]
    assert pareto_ranks(v, ["minimize"]).tolist() == [1, 3, 0, 3, 2]
    rng = np.random.default_rng(0)
    big = rng.random((20_000, 1))
    ranks = pareto_ranks(big, ["maximize"])
    assert (np.argsort(ranks, kind="stable") == np.argsort(-big[:, 0], kind="stable")).all()


def test_importance_ranks_the_one_dominant_parameter_first(tmp_path):
    from analysis._importance import param_importances
    from tests.analysis.conftest import make_dominant_study

    url = f"sqlite:///{tmp_path / 'dominant.db'}"
    make_dominant_study(url, n=40)
    data = load_study(url, "dominant")
    table = param_importances(data, data.complete())
    assert set(table["evaluator"]) == {"ped-anova", "fanova"}
    for (evaluator, target), part in table.groupby(["evaluator", "target"]):
        assert part.iloc[0]["param"] == "stage1_epochs", (evaluator, target, part)
        assert part["importance"].sum() == pytest.approx(1.0)
    assert set(table["target"]) == {"task_accuracy", "zay_independence_score",
                                    "Pareto front"}

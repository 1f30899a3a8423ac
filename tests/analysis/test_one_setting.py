"""The report's ranking counts one setting once: trials that trained alike (equal
effective configurations, ``trainer.params.effective_config``) are one row, and what
cannot act in a trial's run is blanked out."""

from __future__ import annotations

import math

from analysis._load import load_study
from analysis._rank import rank_trials, study_notes, table_columns
from tests.search.twin_study import make_twin_study


def test_two_trials_differing_only_in_an_inert_penalty_are_ranked_once(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    make_twin_study(url)
    data = load_study(url, "twins")
    assert list(data.trials["setting"]) == [0, 1, 1, 3, 0]
    ranked = rank_trials(data)
    assert sorted(ranked["number"]) == [0, 1, 3]  # #2 is #1's setting, #4 the default's
    by_number = ranked.set_index("number")
    assert by_number.loc[1, "same_as"] == "2" and by_number.loc[0, "same_as"] == "4"
    assert by_number.loc[3, "same_as"] == ""
    assert by_number.loc[0, "baseline"]  # the default stands for its twin
    assert by_number.loc[1, "pareto_rank"] == 0 and by_number.loc[3, "pareto_rank"] == 0
    # stage 2 is empty: the penalty that #1 drew never acted, so the table shows none
    assert math.isnan(by_number.loc[1, "independence_penalty"])
    assert by_number.loc[0, "independence_penalty"] == 10.0
    assert table_columns(data, ranked)[:3] == ["position", "number", "same_as"]
    assert any("ranked once" in note for note in study_notes(data, ranked))


def test_a_study_without_twins_ranks_every_trial_and_adds_no_column(study_db):
    data = load_study(f"sqlite:///{study_db}", "known")
    ranked = rank_trials(data)
    assert "same_as" not in ranked and study_notes(data, ranked) == []
    assert len(ranked) == int(data.trials["feasible"][data.trials["state"] == "COMPLETE"].sum())

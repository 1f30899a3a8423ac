"""The MO-ASHA evidence benchmark's bookkeeping (no training, no sweep): compute shares,
hypervolume to the target, compute spent by a time, slot fill, Syne Tune's rungs and the
encoding of stage 2, and reading a study file."""

from __future__ import annotations

import importlib.util
import json
import math
import sqlite3
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def me():
    return load("moasha_evidence")


def rec(number, values=None, *, state="COMPLETE", feasible=True, start=0.0, end=1.0,
        epochs=6, cpu_s=3.0, **extra):
    return {"number": number, "state": state, "values": values, "feasible": feasible,
            "start": start, "end": end, "epochs": epochs, "epoch_s": 1.0, "fit_s": cpu_s,
            "cpu_s": cpu_s, "group": None, **extra}


def test_the_sizes_are_search_qualitys(me):
    assert me.SIZES == load("search_quality").SIZES


def test_cpu_shares_solo_ended_pruned_and_population(me):
    records = [
        rec(0, fit_s=5.0), rec(1, state="PRUNED", fit_s=None, epochs=4),
        # a population of three: 12 s shared by member-epochs 6, 6 and 4 (one pruned)
        rec(2, group="p", fit_s=12.0), rec(3, group="p", fit_s=12.0),
        rec(4, group="p", fit_s=None, epochs=4, state="PRUNED"),
        # a population whose members never ended: its longest rows' time
        rec(5, group="q", fit_s=None, epochs=4, state="PRUNED", epoch_s=2.5),
    ]
    got = {r["number"]: r["cpu_s"] for r in me.cpu_shares(records)}
    assert got[0] == 5.0 and got[1] == 1.0  # pruned: its rows' epoch_time_s
    assert got[2] == pytest.approx(12 * 6 / 16) and got[4] == pytest.approx(12 * 4 / 16)
    assert got[2] + got[3] + got[4] == pytest.approx(12.0)
    assert got[5] == 2.5


def test_hv_history_counts_complete_feasible_trials_in_completion_order(me):
    ref = [0.5, 0.5]
    records = [rec(0, [0.6, 0.6], end=1), rec(1, [0.9, 0.9], end=5),
               rec(2, [0.8, 0.7], end=2), rec(3, [1.0, 1.0], feasible=False, end=3),
               rec(4, None, state="PRUNED", end=4)]
    history = me.hv_history(records, ref)
    assert [r["number"] for r, _ in history] == [0, 2, 1]
    assert [round(h, 6) for _, h in history] == [0.01, 0.06, 0.16]
    assert me.hypervolume(records, ref) == pytest.approx(0.16)


def test_spent_by_prorates_a_running_trial(me):
    records = [rec(0, start=0, end=10, epochs=6), rec(1, start=5, end=15, epochs=4),
               rec(2, start=12, end=20, epochs=6)]
    assert me.spent_by(records, 10, "epochs") == pytest.approx(6 + 0.5 * 4)
    assert me.spent_by(records, 0, "epochs") == 0.0
    assert me.spent_by(records, 20, "epochs") == 16.0


def test_to_target_finds_the_first_trial_that_reaches_it(me):
    ref = [0.5, 0.5]
    records = [rec(0, [0.6, 0.6], start=0, end=2, cpu_s=2.0),
               rec(1, None, state="PRUNED", start=0, end=1, epochs=4, cpu_s=1.0),
               rec(2, [0.8, 0.7], start=1, end=4, cpu_s=3.0),
               rec(3, [0.9, 0.9], start=2, end=6, cpu_s=4.0)]
    hit = me.to_target(records, ref, 0.06)
    # trial 2 completes at t = 4: trials 0, 1, 2 whole, trial 3 half way
    assert hit["trial"] == 2 and hit["trials_ended"] == 3
    assert hit["epochs"] == pytest.approx(6 + 4 + 6 + 3)
    assert hit["cpu_s"] == pytest.approx(2 + 1 + 3 + 2)
    # a target met only to the last float digits is met; one never met gives None
    assert me.to_target(records, ref, 0.16 * (1 + 1e-9))["trial"] == 3
    assert me.to_target(records, ref, 0.2) is None
    assert me.to_target(records, ref, 0.0) is None


def test_slot_fill_from_rows_and_from_stored_attributes(me):
    # K = 4: a full population of 6-epoch members and one of two members, one pruned at 4
    rows = [rec(i, group="a") for i in range(4)] + [rec(4, group="b"),
                                                    rec(5, group="b", epochs=4)]
    assert me.slot_fill(rows, 4) == pytest.approx((24 + 10) / (24 + 24))
    # stored by the sweep (a refilled population: 7 members over 8 ticks of 4 slots)
    stored = [rec(i, group="c", slot_epochs=32, member_epochs_stored=30) for i in range(7)]
    assert me.slot_fill(stored, 4) == pytest.approx(30 / 32)
    # members told as they ended store the counts until then: the last one's are the
    # population's (an early one after 3 ticks: 10 of 12; the last: 30 of 32)
    early = [rec(0, group="d", slot_epochs=12, member_epochs_stored=10),
             rec(1, group="d", slot_epochs=32, member_epochs_stored=30)]
    assert me.slot_fill(early, 4) == pytest.approx(30 / 32)
    assert me.slot_fill([rec(0)], 4) is None


def test_mean_sd_and_fmt(me):
    assert me.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    m, sd = me.mean_sd([2.0])
    assert m == 2.0 and math.isnan(sd)
    assert me.mean_sd([]) is None
    assert me.fmt((2.0, 0.5)) == "2.0 ± 0.5" and me.fmt((2.0, float("nan"))) == "2.0"
    assert me.fmt(None) == "–"


def test_synetune_levels_follow_its_bracket(me):
    assert me.synetune_levels(4, 3, 6) == [4]
    assert me.synetune_levels(2, 3, 6) == [2]  # its rung 6 is the end
    assert me.synetune_levels(2, 2, 6) == [2, 4]
    assert me.synetune_levels(1, 3, 27) == [1, 3, 9]
    assert me.synetune_rungs([4], 3, 6) == 4
    with pytest.raises(SystemExit, match="cannot have rungs"):
        me.synetune_rungs([2, 4], 3, 6)


def test_stage2_share_decodes_uniformly_on_what_stage1_leaves(me):
    default = {"stage1_epochs": 2, "stage2_epochs": 2, "use_independence_penalty": True,
               "independence_penalty": 10.0}
    encoded = me.encode_params(default, 6)
    assert "stage2_epochs" not in encoded and encoded["stage2_epochs_share"] == 0.5
    assert me.decode_params({**encoded, "record_dir": "x"}, 6) == default
    got = {me.decode_params({"stage1_epochs": 2, "stage2_epochs_share": u}, 6)
           ["stage2_epochs"] for u in [i / 1000 for i in range(1000)]}
    assert got == {0, 1, 2, 3, 4}
    assert me.decode_params({"stage1_epochs": 6, "stage2_epochs_share": 0.99},
                            6)["stage2_epochs"] == 0


def test_synetune_space_is_the_sweeps_default_space(me):
    pytest.importorskip("syne_tune")
    space = me.synetune_space(6)
    assert {k for k, v in space.items() if hasattr(v, "sample")} == {
        "stage1_epochs", "stage2_epochs_share", "use_independence_penalty",
        "independence_penalty"}
    assert space["penalty_pairs"] == "zy_za" and space["beta_x"] == 1.0


def test_sweep_flags_and_seeds(me):
    text = "usage: stagetune sweep [-h] [--asha]\n  --no-refill  keep slots empty\n"
    assert {"--asha", "--no-refill"} <= me.sweep_flags(text)
    assert me.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert me.parse_seeds("3,1") == [3, 1]


def test_seed_target_and_arm_row(me):
    nostop = {"wall_s": 10.0, "trials": [
        rec(0, [0.5, 0.5], start=0, end=1), rec(1, [0.7, 0.6], start=0, end=2),
        rec(2, [0.6, 0.8], start=1, end=3)]}
    reference, target, cost = me.seed_target(nostop, 3, zero=False)
    assert reference == [0.5, 0.5] and target == pytest.approx(0.2 * 0.1 + 0.1 * 0.2)
    assert cost == {"epochs": 18, "cpu_s": 9.0}
    assert me.seed_target(nostop, 3, zero=True)[0] == [0.0, 0.0]
    stopping = {"wall_s": 5.0, "trials": [
        rec(0, [0.5, 0.5], start=0, end=1), rec(1, None, state="PRUNED", epochs=4,
                                                 start=0, end=1.5, cpu_s=1.0),
        rec(2, [0.7, 0.6], start=1, end=2), rec(3, [0.6, 0.8], start=1.5, end=3)]}
    row = me.arm_row("moasha", {0: stopping}, {0: (reference, target, cost)})
    assert row["n_reached"] == 1 and row["epochs"][0] == pytest.approx(22)
    assert row["ratio_epochs"][0] == pytest.approx(22 / 18)
    assert row["pruned_share"][0] == pytest.approx(0.25)
    assert "| moasha | 1 of 1 |" in me.table([row])


def test_read_study_reads_trials_rows_and_population_attributes(me, tmp_path):
    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.executescript("""
        create table studies (study_id integer, study_name text);
        create table trials (trial_id integer, number integer, study_id integer,
            state text, datetime_start text, datetime_complete text);
        create table trial_values (trial_id integer, objective integer, value real);
        create table trial_user_attributes (trial_id integer, key text, value_json text);
        create table stagetune_epoch_metrics (trial_id integer, epoch integer,
            stage integer, metrics text);
        insert into studies values (1, 'other'), (2, 'pop');
        insert into trials values (7, 0, 2, 'COMPLETE', '2026-12-07 12:00:00.000000',
            '2026-12-07 12:00:10.000000');
        insert into trials values (8, 1, 2, 'PRUNED', '2026-12-07 12:00:00.000000',
            '2026-12-07 12:00:05.000000');
        insert into trials values (9, 2, 2, 'RUNNING', '2026-12-07 12:00:00.000000', null);
        insert into trial_values values (7, 0, 0.7), (7, 1, 0.5);
    """)
    attrs = {7: {"feasible": True, "fit_seconds": 8.0, "population_member": 0,
                 "population_id": 0},
             8: {"population_member": 1, "population_id": 0, "epochs_run": 2.0},
             9: {"fail_reason": "TypeError: no (epoch 0)"}}
    for tid, kv in attrs.items():
        for k, v in kv.items():
            con.execute("insert into trial_user_attributes values (?, ?, ?)",
                        (tid, k, json.dumps(v)))
    for tid, n in ((7, 4), (8, 2)):
        for e in range(n):
            con.execute("insert into stagetune_epoch_metrics values (?, ?, 1, ?)",
                        (tid, e, json.dumps({"epoch_time_s": 0.5})))
    con.commit()
    con.close()
    got = me.read_study(db, "pop")
    assert [r["number"] for r in got] == [0, 1]  # a RUNNING trial is not counted
    done, pruned = got
    assert done["values"] == [0.7, 0.5] and done["feasible"] and pruned["values"] is None
    assert (done["epochs"], pruned["epochs"], done["epoch_s"]) == (4, 2, 2.0)
    assert done["end"] - done["start"] == pytest.approx(10.0)
    assert done["group"] == pruned["group"] == 0
    assert done["cpu_s"] == pytest.approx(8.0 * 4 / 6)
    assert pruned["cpu_s"] == pytest.approx(8.0 * 2 / 6)
    assert me.fail_reason(db) == "TypeError: no (epoch 0)"


def test_read_peer_counts_process_time_and_keeps_the_services_accounting(me, tmp_path):
    rows = [{"epoch": e, "stage": 3, "epoch_time_s": 0.25} for e in range(6)]
    records = {
        0: {"number": 0, "params": {}, "rows": rows, "start": 10.0, "end": 19.0,
            "state": "COMPLETE", "fit_s": 8.0, "process_s": 3.0,
            "final": {"task_accuracy": 0.7, "disentanglement_score": 0.5,
                      "zay_collapsed": 0.0}},
        1: {"number": 1, "params": {}, "rows": rows[:5], "start": 10.0, "end": 12.0,
            "state": "RUNNING", "process_s": 1.5},  # stopped at a rung, killed
        2: {"number": 2, "params": {}, "rows": rows[:2], "start": 12.0, "end": 13.0,
            "state": "FAIL", "error": "DivergenceError", "process_s": 0.5},
    }
    for n, r in records.items():
        (tmp_path / f"{n}.json").write_text(json.dumps(r))
    done, stopped, failed = me.read_peer(tmp_path)
    assert (done["state"], stopped["state"], failed["state"]) == ("COMPLETE", "PRUNED", "FAIL")
    assert done["values"] == [0.7, 0.5] and done["feasible"]
    assert (done["cpu_s"], done["fit_wall_s"]) == (3.0, 8.0)
    assert (stopped["epochs"], stopped["cpu_s"], stopped["fit_wall_s"]) == (5, 1.5, 1.25)
    assert stopped["values"] is None and not stopped["feasible"]

"""Behaviour check: the same sweeps on fixed seeds give the same stored study.

    python benchmarks/behaviour_check.py run OUT_DIR        # five scenarios -> OUT_DIR/*.json
    python benchmarks/behaviour_check.py compare A_DIR B_DIR
    python benchmarks/behaviour_check.py redump DIR          # DIR/*.db -> DIR/*.json again

A refactor of the search (the driver <-> worker contract, the worker entry, the Tune
launcher) must leave what lands in the database unchanged. ``run`` drives the command
line only (``stagetune sweep`` / ``stagetune confirm``), so the same script runs against
any commit: check out the old commit in a worktree, copy this file there, run it, then
run it on the new code and ``compare``.

Scenarios (smoke-test sizes, random sampler with seed 0: its draws depend on the trial
number only, so concurrent trials cannot reorder them): a solo sweep, a population sweep
(``--population 2``, with ``--no-refill`` where the sweep has it: what populations were
before they refilled), a replicated sweep (``--replicates 2``), a leave-one-domain-out
sweep (``--lodo``) and a confirmation of the solo sweep's front (``--top 1 --seeds 2``).

Each study is dumped table by table, by trial number: state, values, parameters, user
attributes, intermediate values, stored epoch rows, artifacts and confirmation runs.
What depends on the clock or on Ray's bookkeeping is left out (``VOLATILE``: wall times,
start times, Ray trial ids and nodes, the experiment's name); everything else must be
equal, floats to the bit.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

SCENARIOS = {
    "solo": ["--n-trials", "4"],
    "population": ["--n-trials", "4", "--population", "2"],
    "replicates": ["--n-trials", "3", "--replicates", "2"],
    "lodo": ["--n-trials", "3", "--lodo"],
}
COMMON = ["--smoke-test", "--sampler", "random", "--seed", "0", "--num-cpus", "2", "--quiet"]
#: keys and columns that depend on the clock, the process or Ray's bookkeeping
VOLATILE = re.compile(r"(seconds|_time_s|samples_per_s|started_at|finished_at|datetime|"
                      r"heartbeat|tune_trial_id|tune_experiment|node_id|^id$|"
                      r"(?<!^trial)(?<!population)_id$|"
                      r"created|updated|host|pid)")


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    help_text = subprocess.run(["stagetune", "sweep", "--help"], capture_output=True,
                               text=True).stdout
    for name, flags in SCENARIOS.items():
        if name == "population" and "--no-refill" in help_text:
            flags = [*flags, "--no-refill"]  # populations as they were before refill
        db = out / f"{name}.db"
        db.unlink(missing_ok=True)
        url = f"sqlite:///{db}"
        _call(["stagetune", "sweep", "--storage", url, "--study", name, *COMMON, *flags,
               "--work-dir", str(out / "tune")])
        if name == "solo":
            _call(["stagetune", "confirm", "--storage", url, "--study", name, "--top", "1",
                   "--seeds", "2", "--num-cpus", "2", "--quiet", "--work-dir",
                   str(out / "tune")])
        (out / f"{name}.json").write_text(json.dumps(dump(db), indent=1, sort_keys=True))
        print(f"{name}: dumped", flush=True)


def _call(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def _clean(value):
    """A stored value with its volatile keys dropped (JSON inside text decoded)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def dump(db: Path) -> dict:
    """Every table of the study database, rows keyed by trial number where they have a
    trial, volatile columns and keys left out, rows in a canonical order."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    number = dict(con.execute("SELECT trial_id, number FROM trials").fetchall())
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    out = {}
    for table in sorted(tables):
        if table in ("alembic_version", "version_info") or "driver" in table:
            continue
        rows = []
        for row in con.execute(f"SELECT * FROM {table}"):
            item = {}
            for key in row.keys():  # noqa: SIM118 (iterating a Row yields its values)
                if VOLATILE.search(key) and key != "trial_id":
                    continue
                if key == "key" and VOLATILE.search(str(row[key])):
                    item = None
                    break
                item["trial" if key == "trial_id" else key] = (
                    number.get(row[key]) if key == "trial_id" else _clean(row[key]))
            if item is not None:
                rows.append(item)
        out[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


def compare(a: Path, b: Path) -> int:
    """Print, per scenario, its tables' row counts and whether they are equal; 1 if any
    table differs."""
    differs = False
    for name in SCENARIOS:
        left = json.loads((a / f"{name}.json").read_text())
        right = json.loads((b / f"{name}.json").read_text())
        bad = []
        for table in sorted(left.keys() | right.keys()):
            x, y = left.get(table) or [], right.get(table) or []
            if x != y:
                n = sum(1 for p, q in zip(x, y, strict=False) if p != q)
                bad.append(f"{table} ({len(x)} vs {len(y)} rows, {n} unequal)")
        rows = sum(len(v) for v in left.values())
        print(f"{name}: " + ("same, " + f"{rows} rows in {len(left)} tables" if not bad
                             else "differs: " + "; ".join(bad)))
        differs = differs or bool(bad)
    return 1 if differs else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 3 and sys.argv[1] == "redump":  # the dumps again from the .db files
        for db in sorted(Path(sys.argv[2]).glob("*.db")):
            db.with_suffix(".json").write_text(json.dumps(dump(db), indent=1, sort_keys=True))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)

"""MO-ASHA evidence (issue 28, item 3): the compute a search needs to reach the
hypervolume that a search without stopping reaches at 32 trials, for the service's
MO-ASHA, its populations (with and without refill) and Syne Tune's own MOASHA.

    python benchmarks/moasha_evidence.py [--arms nostop,moasha,pop4,synetune,...]
        [--seeds 0-4] [--trials 32] [--more-trials 64] [--rungs 4]
        [--reduction-factor 3] [--out benchmarks/out/moasha_evidence] [--summary-only]

**Arms.** Every service arm is one ``stagetune sweep`` per search seed, in its own SQLite
study (``<out>/<arm>-s<seed>.db``), with the same sampler (``--sampler random --seed
<seed>``: each trial's draw is seeded by the search seed and the trial number, so arms of
one seed draw the same settings trial by trial), the same objectives (the default Pareto
of ``task_accuracy`` and ``--disentanglement-metric disentanglement_score``), the sweep's
default space (stage 1 and 2 lengths, penalty on/off, λ), the method's default as trial 0,
``--num-cpus 2`` (two solo trials, or two population trials, at a time) and the trial
settings of ``search_quality.py`` (``SIZES``: 6 epochs on 250 source digits, ~2-3 s a
trial on this CPU). ``ARMS`` lists them: ``nostop`` (``--trials`` trials, default 32),
``moasha`` (``--asha --rungs R``), ``pop4`` (``--population 4``, whatever refill the sweep
does by default), ``pop4_refill`` / ``pop4_norefill`` / ``moasha_pop4`` /
``moasha_pop4_norefill`` (they need the sweep's ``--no-refill``, and ``--asha`` with
``--population``: skipped, not stored, until the sweep has them) and ``synetune``.
Stopping arms run ``--more-trials`` (default 64) so that their compute can reach the
target; the others run ``--trials``.

**The peer.** ``synetune``: Syne Tune 0.16's own ``MOASHA`` (non-dominated sorting,
``NonDominatedPriority``) with its ``LocalBackend``, 2 workers, over the same trainer: each
trial process is this script (``--st_config_json_filename``), which builds the trial's
``RunConfig`` as a sweep's worker does (the base configuration, the registry's pinned
fields, the drawn parameters through ``apply_flat``), calls ``trainer.fit`` with one torch
thread and reports every epoch's validation proxies of the two objectives
(``search.objective.proxy_of``: what the service's rungs compare) through
``syne_tune.Reporter``, the last epoch together with the final objective values. Its
space is the sweep's default space translated (``synetune_space``): stage 1 a uniform
integer, stage 2 a uniform share of what stage 1 leaves (decoded to an integer uniform on
``0..epochs - stage1``, as Optuna's random sampler draws it), the penalty a choice and λ
log-uniform; λ and the penalty switch are sampled always, where the sweep samples them
only where they act (the trainer ignores an inert one). Its first trial is the method's
default (``MOASHA`` has no ``points_to_evaluate``: a subclass returns it first), its
other draws are Syne Tune's random search seeded by the search seed (numpy's global
generator). Rungs: Syne Tune's bracket has rungs ``grace_period * rf**k`` below
``max_t``; ``grace_period`` = the first service rung, ``rf`` = ``--reduction-factor`` and
``max_t`` = the epochs, refused unless these give exactly the service's rungs
(``synetune_levels``; rung 4 of 6 at rf 3 does). Differences that remain, by design of
each scheduler: Syne Tune compares a trial still in stage 1 at a rung (its
disentanglement proxy is 0 there) where the service lets it pass; it knows no
feasibility (a collapsed zay is just a point); it keeps a point when fewer than ``n/rf``
earlier points rank before it (the service: when it is among the first ``ceil(n/rf)``),
and breaks ties in a front by an epsilon-net, not crowding distance. The tuner polls
the trials' output every 0.1 s (its default 5 s would idle the workers); a trial it stops
runs on until the kill arrives, and the epochs it trained meanwhile count.

**Rungs.** ``stagetune fidelity`` at this size is not affordable here, so the rung is
chosen: ``--rungs 4`` of 6 epochs (the default's stage 3 begins there), reduction factor
3. With stage 1 drawn on 0..6, a trial with stage 1 >= 4 is still in stage 1 at epoch 4 and
the service passes it uncompared.

**What is measured.** Per (arm, seed), every trial's member-epochs (the epoch rows it
trained: the study's ``stagetune_epoch_metrics`` rows, pruned trials' included) and its
CPU seconds: ``fit_seconds`` (the time inside ``trainer.fit``, one torch thread, so CPU
time up to what other work on the machine takes from it) for a completed solo trial, the
sum of its rows' ``epoch_time_s`` for a pruned one (it has no ``fit_seconds``: its final
evaluation never ran), and for a population trial its population's ``fit_seconds``
divided among the members by their member-epochs. A Syne Tune trial's CPU seconds are
its process time inside ``trainer.fit`` (to its last recorded epoch when it was
stopped); the service's accounting of it (time inside ``fit``, rows' time when stopped)
is kept beside, and printed under the tables: each of its trials is a fresh process,
whose first ``fit`` pays for lazy imports that a reused Ray worker pays once. The running
hypervolume is taken over COMPLETE, feasible trials in completion order; the compute "to
the target" is what all trials had spent when the arm's hypervolume first reached the
target (a trial still running then counts with the share of its compute that its
elapsed time gives: ``spent_by``). The target, per seed: ``nostop``'s hypervolume at its
``--trials`` trials; reference point: ``nostop``'s trial 0 (the method's default; (0, 0)
if it is infeasible), as in ``search_quality.py``; a second table uses (0, 0). Ratio: an
arm's compute to the target over ``nostop``'s compute for all its trials, per seed. Slot
fill (population arms): member-epochs trained over K x the epoch ticks the populations
ran (the study's ``population_slot_epochs`` and ``population_member_epochs`` where the
sweep stores them, else K x the longest member's rows per population). Wall time per
(arm, seed) includes Ray's or Syne Tune's start-up and every trial process's imports.

**Resumable.** Each (arm, seed) ends in ``<out>/<arm>-s<seed>.json``; a rerun skips what
is there. A service arm cut short continues its study when run again (its wall time
adds up); a Syne Tune arm cut short starts again. ``--summary-only`` prints the tables
from what is stored and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: ``search_quality.SIZES`` (a test keeps them equal): 6 epochs at lr 5e-3 on 250 source
#: digits in six domains, 8 x 8 images, hidden 64, latents 4 x 8, probes on 150 inputs
SIZES: dict[str, Any] = dict(
    epochs=6, max_samples=250, lr=5e-3, image_size=8, hidden_dim=64, zy_dim=8, za_dim=8,
    zay_dim=8, zx_dim=8, batch_size=64, eval_max_samples=150, write_plots=False,
    device="cpu", staged_training=True)
OBJECTIVES = ("task_accuracy", "disentanglement_score")
DIRECTIONS = ("maximize", "maximize")
#: an arm reaches the target when its hypervolume is within this share of it (a
#: population's floats may differ from a solo run's in the last digits)
TARGET_RTOL = 1e-6
WORKERS = 2
SHARE = "_share"  # Syne Tune's encoding of a budget parameter after the first
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "moasha_evidence"
REFILL_FLAG = "--no-refill"


@dataclass(frozen=True)
class Arm:
    """One way to search: the sweep's flags (or the peer), whether it stops trials, its
    population capacity K and the sweep flags it cannot run without."""

    flags: tuple[str, ...] = ()
    stops: bool = False
    population: int = 1
    needs: tuple[str, ...] = ()
    peer: bool = False


POP = ("--population", "4")
ARMS: dict[str, Arm] = {
    "nostop": Arm(),
    "moasha": Arm(("--asha",), stops=True),
    "pop4": Arm(POP, population=4),
    "pop4_norefill": Arm((*POP, REFILL_FLAG), population=4, needs=(REFILL_FLAG,)),
    "pop4_refill": Arm(POP, population=4, needs=(REFILL_FLAG,)),
    "moasha_pop4": Arm(("--asha", *POP), stops=True, population=4, needs=(REFILL_FLAG,)),
    "moasha_pop4_norefill": Arm(("--asha", *POP, REFILL_FLAG), stops=True, population=4,
                                needs=(REFILL_FLAG,)),
    "synetune": Arm(stops=True, peer=True),
}


# -- accounting: pure functions of trial records -------------------------------------------
#
# A trial record: number, state (COMPLETE, PRUNED, FAIL), values (the objectives, or None),
# feasible, start and end (unix seconds), epochs (member-epochs trained), epoch_s (sum of
# its rows' epoch_time_s), fit_s (time inside fit, None if it never ended), group (its
# population, None when solo) and, where stored, slot_epochs / member_epochs_stored (its
# population's); cpu_s once ``cpu_shares`` has filled it.


def cpu_shares(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record with ``cpu_s``: its own ``fit_s`` (solo, ended), else its rows' time
    (solo, pruned); a population's time (the largest ``fit_s`` of its members, else its
    longest member's rows) divided among its members by member-epochs."""
    out = [dict(r) for r in records]
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in out:
        if r.get("group") is None:
            r["cpu_s"] = r["fit_s"] if r.get("fit_s") is not None else r["epoch_s"]
        else:
            groups.setdefault(r["group"], []).append(r)
    for members in groups.values():
        fits = [m["fit_s"] for m in members if m.get("fit_s") is not None]
        total = max(fits) if fits else max(m["epoch_s"] for m in members)
        epochs = sum(m["epochs"] for m in members)
        for m in members:
            m["cpu_s"] = total * m["epochs"] / epochs if epochs else total / len(members)
    return out


def completion_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records by end time, ties by trial number."""
    return sorted(records, key=lambda r: (r["end"], r["number"]))


def hv_history(records: list[dict[str, Any]], reference: list[float]
               ) -> list[tuple[dict[str, Any], float]]:
    """(record, hypervolume so far) for every COMPLETE, feasible record in completion
    order."""
    from search.pareto import hypervolume_history

    counted = [r for r in completion_order(records)
               if r["state"] == "COMPLETE" and r["feasible"] and r["values"] is not None]
    if not counted:
        return []
    hv = hypervolume_history(np.array([r["values"] for r in counted]), list(DIRECTIONS),
                             reference)
    return list(zip(counted, (float(h) for h in hv), strict=True))


def hypervolume(records: list[dict[str, Any]], reference: list[float]) -> float:
    """The hypervolume of all COMPLETE, feasible records."""
    history = hv_history(records, reference)
    return history[-1][1] if history else 0.0


def spent_by(records: list[dict[str, Any]], when: float, key: str) -> float:
    """``key`` (``epochs`` or ``cpu_s``) spent by all records at time ``when``: a record
    that ended by then counts whole, one running then by the share of its duration that
    had passed."""
    total = 0.0
    for r in records:
        if r["end"] <= when:
            share = 1.0
        elif r["start"] >= when:
            share = 0.0
        else:
            share = (when - r["start"]) / (r["end"] - r["start"])
        total += share * r[key]
    return total


def to_target(records: list[dict[str, Any]], reference: list[float], target: float
              ) -> dict[str, Any] | None:
    """Where the hypervolume first reaches ``target``: the trials completed by then and
    the member-epochs and CPU seconds spent; None if it never does (or the target is 0)."""
    if target <= 0:
        return None
    for r, hv in hv_history(records, reference):
        if hv >= target * (1 - TARGET_RTOL):
            when = r["end"]
            keys = [k for k in ("epochs", "cpu_s", "fit_wall_s") if all(k in q for q in records)]
            return {"trial": r["number"], "hv": hv,
                    "trials_ended": sum(1 for q in records if q["end"] <= when),
                    **{k: spent_by(records, when, k) for k in keys}}
    return None


def slot_fill(records: list[dict[str, Any]], capacity: int) -> float | None:
    """Member-epochs trained over the population slots' epochs (capacity x ticks), summed
    over populations: the stored ``slot_epochs`` / ``member_epochs_stored`` where a
    population has them (a member told as it ended stores the counts until then: the
    largest is the whole population's), else its members' rows and capacity x its
    longest member."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("group") is not None:
            groups.setdefault(r["group"], []).append(r)
    if not groups:
        return None
    trained = slots = 0.0
    for members in groups.values():
        stored = [m for m in members if m.get("slot_epochs")]
        if stored:
            last = max(stored, key=lambda m: m["slot_epochs"])
            slots += last["slot_epochs"]
            trained += (last.get("member_epochs_stored")
                        or sum(m["epochs"] for m in members))
        else:
            slots += capacity * max(m["epochs"] for m in members)
            trained += sum(m["epochs"] for m in members)
    return trained / slots if slots else None


def mean_sd(values: list[float]) -> tuple[float, float] | None:
    """Mean and sd (ddof 1; nan for one value) of ``values``; None if there are none."""
    if not values:
        return None
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def fmt(stat: tuple[float, float] | None, digits: int = 1) -> str:
    if stat is None:
        return "–"
    m, sd = stat
    return f"{m:.{digits}f}" if math.isnan(sd) else f"{m:.{digits}f} ± {sd:.{digits}f}"


# -- Syne Tune's side: rungs, space, and the trial process --------------------------------


def synetune_levels(grace: int, rf: float, max_t: int) -> list[int]:
    """The rungs below ``max_t`` of Syne Tune's one bracket (``asha.Bracket`` with s = 0):
    ``grace * rf**k`` for k < int(log(max_t / grace) / log(rf) + 1). A rung at ``max_t``
    decides nothing: a trial that reaches it is stopped as finished."""
    count = int(np.log(max_t / grace) / np.log(rf) + 1)
    return [int(grace * rf**k) for k in range(count) if grace * rf**k < max_t]


def synetune_rungs(rungs: list[int], rf: float, epochs: int) -> int:
    """Syne Tune's ``grace_period`` for the service's ``rungs``; refused where its bracket
    cannot have exactly these rungs."""
    grace = min(rungs)
    levels = synetune_levels(grace, rf, epochs)
    if levels != sorted(rungs):
        raise SystemExit(f"Syne Tune's MOASHA cannot have rungs {sorted(rungs)} at reduction "
                         f"factor {rf:g} and {epochs} epochs (grace period {grace} gives "
                         f"{levels}); choose --rungs it can have")
    return grace


def synetune_space(epochs: int) -> dict[str, Any]:
    """The sweep's default space (``search.space.build_space``) as Syne Tune domains: a
    searched range or choice becomes one, a single value a constant; the budget parameters
    after the first (stage 2) a uniform share of the epochs left (``decode_params``)."""
    from syne_tune.config_space import choice, loguniform, randint, uniform

    from search.space import build_space
    from trainer import params as registry
    from trainer.params import Choices

    space, out, budget_seen = build_space(epochs), {}, False
    for p in registry.searched():
        b = space.bounds[p.name]
        if isinstance(p.search, Choices):
            out[p.name] = choice(list(b)) if len(b) > 1 else b[0]
        elif b[0] == b[1]:
            out[p.name] = b[0]
        elif p.budget and budget_seen:
            out[p.name + SHARE] = uniform(0.0, 1.0)
        elif p.kind is int:
            out[p.name] = randint(int(b[0]), int(min(b[1], epochs)))
        else:
            out[p.name] = (loguniform if p.search.log else uniform)(float(b[0]), float(b[1]))
        budget_seen |= p.budget
    return out


def budget_names() -> list[str]:
    from trainer import params as registry

    return [p.name for p in registry.searched() if p.budget]


def decode_params(config: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A Syne Tune config's trainer parameters: each ``<name>_share`` u becomes the integer
    floor(u x (left + 1)), at most ``left`` (the epochs the earlier stages leave): uniform
    on 0..left, as Optuna draws it; entries that are no search parameter are dropped."""
    from trainer import params as registry

    names = set(registry.searched_names())
    out = {k: v for k, v in config.items() if k in names}
    left = epochs
    for name in budget_names():
        if name + SHARE in config:
            out[name] = min(math.floor(float(config[name + SHARE]) * (left + 1)), left)
        left -= int(out.get(name, 0))
    return out


def encode_params(params: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The Syne Tune config that ``decode_params`` turns into ``params`` (the default's
    stage 2 as the middle of its share's interval)."""
    out = dict(params)
    left = epochs
    for i, name in enumerate(budget_names()):
        if i and name in out:
            out[name + SHARE] = (int(out.pop(name)) + 0.5) / (left + 1)
            left -= int(params[name])
        else:
            left -= int(out.get(name, 0))
    return out


def trial_config(base_path: str, params: dict[str, Any]):
    """The ``RunConfig`` a sweep's worker would train: the base file, the registry's pinned
    fields, no plots, the drawn parameters through ``apply_flat``."""
    from trainer import RunConfig, apply_flat
    from trainer import params as registry

    base = RunConfig.from_dict(json.loads(Path(base_path).read_text()))
    base = base.replace(**registry.pinned(), write_plots=False).to_dict()
    return RunConfig.from_dict(apply_flat(base, params)).replace(write_plots=False)


def synetune_trial(config_path: str) -> None:
    """One Syne Tune trial: train, record every epoch (``<record_dir>/<trial id>.json``,
    written before each report: Syne Tune kills a trial it stops), report the proxies."""
    import torch
    from syne_tune import Reporter

    from search.objective import proxy_of
    from trainer import fit

    config = json.loads(Path(config_path).read_text())
    torch.set_num_threads(1)
    cfg = trial_config(config["base_config"], decode_params(config, config["epochs"]))
    proxies = [proxy_of(o) for o in OBJECTIVES]
    record = {"number": int(Path(config_path).parent.name), "config": config,
              "params": decode_params(config, config["epochs"]), "rows": [],
              "start": time.time(), "state": "RUNNING"}
    path = Path(config["record_dir"]) / f"{record['number']}.json"
    report, held = Reporter(), []
    t0, c0 = time.perf_counter(), time.process_time()

    def point(row: dict[str, float]) -> dict[str, float]:
        # a non-finite proxy (a diverging run) reads as the worst plausible value
        return {p: float(row[p]) if math.isfinite(float(row.get(p, "nan"))) else 0.0
                for p in proxies}

    def on_epoch(row: dict[str, float]) -> None:
        record["rows"].append({"epoch": int(row["epoch"]), "stage": int(row["stage"]),
                               "epoch_time_s": float(row["epoch_time_s"]), **point(row)})
        record.update(end=time.time(), process_s=time.process_time() - c0)
        if int(row["epoch"]) + 1 >= cfg.optim.epochs:
            held[:] = [row]  # reported with the final values
            return
        write_json(path, record)
        report(epoch=int(row["epoch"]) + 1, **point(row))

    try:
        result = fit(cfg, report=on_epoch)
    except Exception as exc:  # a failed trial: recorded, and Syne Tune sees it fail
        record.update(state="FAIL", error=f"{type(exc).__name__}: {exc}", end=time.time())
        write_json(path, record)
        raise
    final = {k: float(result.final[k]) for k in (*OBJECTIVES, "zay_collapsed")}
    record.update(state="COMPLETE", final=final, fit_s=time.perf_counter() - t0,
                  process_s=time.process_time() - c0, end=time.time())
    write_json(path, record)
    last = held[0] if held else result.history[-1]
    report(epoch=len(result.history), **point(last), **final)


def run_synetune_tuner(spec: dict[str, Any]) -> None:
    """Syne Tune's MOASHA with its LocalBackend over this script's trial (runs in the
    Python that has syne-tune); the trials write their records under ``record_dir``."""
    from syne_tune import Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.optimizer.scheduler import TrialSuggestion
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from search.objective import proxy_of
    from search.space import baseline_params

    np.random.seed(spec["seed"])  # Syne Tune's domains sample from numpy's generator
    epochs = spec["epochs"]
    fixed = {"base_config": spec["base_config"], "record_dir": spec["record_dir"],
             "epochs": epochs}
    space = {**synetune_space(epochs), **fixed}
    constants = {k: v for k, v in space.items() if not hasattr(v, "sample")}
    default = {**constants, **encode_params(baseline_params(epochs), epochs)}

    class DefaultFirst(MOASHA):
        """MOASHA whose first trial is the method's default (the sweep's trial 0)."""

        given = False

        def suggest(self):
            if not self.given:
                self.given = True
                return TrialSuggestion.start_suggestion(dict(default))
            return super().suggest()

    scheduler = DefaultFirst(
        space, metrics=[proxy_of(o) for o in OBJECTIVES], do_minimize=False,
        time_attr="epoch", max_t=epochs, grace_period=spec["grace_period"],
        reduction_factor=spec["reduction_factor"], random_seed=spec["seed"])
    backend = LocalBackend(entry_point=str(Path(__file__).resolve()), pass_args_as_json=True)
    n = spec["n_trials"]
    tuner = Tuner(trial_backend=backend, scheduler=scheduler, n_workers=WORKERS,
                  stop_criterion=lambda status: status.num_trials_started >= n,
                  sleep_time=0.1, max_failures=n, wait_trial_completion_when_stopping=True,
                  tuner_name=spec["name"], save_tuner=False, print_update_interval=60)
    tuner.run()


# -- running the arms ----------------------------------------------------------------------


def write_json(path: Path, content: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=1, default=str))
    tmp.replace(path)


def sweep_flags(help_text: str) -> set[str]:
    """The options a ``stagetune sweep --help`` text names."""
    return {w.strip("[],") for w in help_text.split() if w.startswith(("--", "[--"))}


def sweep_command(name: str, arm: Arm, seed: int, n_trials: int, out: Path,
                  args: argparse.Namespace) -> list[str]:
    stem = f"{name}-s{seed}"
    cmd = [args.python, "-m", "search", "sweep", "--storage", f"sqlite:///{out / stem}.db",
           "--study", stem, "--base-config", str(out / "base.json"),
           "--disentanglement-metric", OBJECTIVES[1], "--sampler", "random",
           "--seed", str(seed), "--n-trials", str(n_trials), "--num-cpus", str(WORKERS),
           "--work-dir", str(out / "tune"), "--quiet", *arm.flags]
    if "--asha" in arm.flags:
        cmd += ["--rungs", *map(str, args.rungs), "--reduction-factor",
                f"{args.reduction_factor:g}"]
    return cmd


def run_service(name: str, arm: Arm, seed: int, n_trials: int, out: Path,
                args: argparse.Namespace) -> dict[str, Any] | None:
    """One sweep to ``n_trials`` (continuing a study cut short); its trial records."""
    stem = f"{name}-s{seed}"
    cmd = sweep_command(name, arm, seed, n_trials, out, args)
    wall_path = out / f"{stem}.wall"
    before = float(wall_path.read_text()) if wall_path.exists() else 0.0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.time()
    with open(out / f"{stem}.log", "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = before + time.time() - t0
    wall_path.write_text(f"{wall:.3f}")
    db = out / f"{stem}.db"
    records = read_study(db, stem) if db.exists() else []
    if code != 0 or not any(r["state"] == "COMPLETE" for r in records):
        # every trial of the run failed (the sweep's exit 1): not a result; the study is
        # moved aside so that a rerun starts it afresh
        print(f"  {stem}: sweep exited {code} with no trial complete: "
              f"{fail_reason(db) if db.exists() else 'no study'}; see {out / stem}.log")
        if db.exists():
            db.rename(db.with_suffix(f".failed-{int(time.time())}.db"))
            wall_path.unlink()
        return None
    return {"arm": name, "seed": seed, "n_trials": n_trials, "command": cmd,
            "exit_code": code, "wall_s": wall, "trials": records}


def run_peer(name: str, seed: int, n_trials: int, out: Path, args: argparse.Namespace
             ) -> dict[str, Any] | None:
    """Syne Tune's MOASHA over ``n_trials`` trials (from scratch); its trial records."""
    stem = f"{name}-s{seed}"
    record_dir = out / f"{stem}-trials"
    record_dir.mkdir(parents=True, exist_ok=True)
    for old in record_dir.glob("*.json"):
        old.unlink()
    spec = {"seed": seed, "n_trials": n_trials, "epochs": SIZES["epochs"],
            "grace_period": synetune_rungs(args.rungs, args.reduction_factor,
                                           SIZES["epochs"]),
            "reduction_factor": args.reduction_factor, "record_dir": str(record_dir),
            "base_config": str(out / "base.json"), "name": f"moasha-evidence-{stem}"}
    cmd = [args.st_python, str(Path(__file__).resolve()), "--synetune-tuner", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "SYNETUNE_FOLDER": str(out / "syne-tune")}
    t0 = time.time()
    with open(out / f"{stem}.log", "w") as log:
        # in ``out``: Syne Tune's GPU count writes a ``std.out`` where it runs
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
    records = read_peer(record_dir)
    if code != 0 or not records:
        print(f"  {stem}: Syne Tune exited {code}; see {out / stem}.log")
        return None
    return {"arm": name, "seed": seed, "n_trials": n_trials, "command": [*cmd[:3], "<spec>"],
            "spec": spec, "exit_code": code, "wall_s": time.time() - t0, "trials": records}


def read_peer(record_dir: Path) -> list[dict[str, Any]]:
    """Syne Tune's trial records as the service's (a trial without final values was
    stopped at a rung, or failed if it trained no epoch)."""
    out = []
    for path in sorted(record_dir.glob("*.json"), key=lambda p: int(p.stem)):
        r = json.loads(path.read_text())
        final = r.get("final")
        failed = r["state"] == "FAIL" or not r["rows"]
        state = "COMPLETE" if final else ("FAIL" if failed else "PRUNED")
        out.append({
            "number": r["number"], "state": state, "params": r["params"],
            "values": [final[o] for o in OBJECTIVES] if final else None,
            "feasible": bool(final) and final["zay_collapsed"] < 1.0,
            "start": r["start"], "end": r.get("end", r["start"]), "epochs": len(r["rows"]),
            "epoch_s": sum(row["epoch_time_s"] for row in r["rows"]),
            "fit_s": r.get("fit_s"), "process_s": r.get("process_s"), "group": None})
    # CPU s: the trial's process time inside fit; beside it the service's accounting
    return [{**r, "fit_wall_s": r["cpu_s"], "cpu_s": r["process_s"] or 0.0}
            for r in cpu_shares(out)]


def fail_reason(db: Path) -> str:
    """The first stored reason a trial failed."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("select value_json from trial_user_attributes where key = "
                          "'fail_reason' limit 1").fetchone()
    finally:
        con.close()
    return json.loads(row[0]) if row else "no reason stored"


def _timestamp(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def read_study(db: Path, study: str) -> list[dict[str, Any]]:
    """A study's finished trials as records, read from the SQLite file (read only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (study_id,) = con.execute("select study_id from studies where study_name = ?",
                                  (study,)).fetchone()
        rows = con.execute("select trial_id, number, state, datetime_start, "
                           "datetime_complete from trials where study_id = ? and state in "
                           "('COMPLETE', 'PRUNED', 'FAIL') order by number",
                           (study_id,)).fetchall()
        records = [trial_record(con, *row) for row in rows]
    finally:
        con.close()
    return cpu_shares(records)


def trial_record(con: sqlite3.Connection, trial_id: int, number: int, state: str,
                 started: str, completed: str | None) -> dict[str, Any]:
    attrs = {k: json.loads(v) for k, v in con.execute(
        "select key, value_json from trial_user_attributes where trial_id = ?", (trial_id,))}
    values = [v for (v,) in con.execute("select value from trial_values where trial_id = ? "
                                        "order by objective", (trial_id,))]
    epochs = [json.loads(m) for (m,) in con.execute(
        "select metrics from stagetune_epoch_metrics where trial_id = ? order by epoch",
        (trial_id,))]
    member = "population_member" in attrs
    group = attrs.get("population_id", attrs.get("tune_trial_id")) if member else None
    start = _timestamp(started)
    return {"number": number, "state": state,
            "values": values if state == "COMPLETE" and len(values) == 2 else None,
            "feasible": bool(attrs.get("feasible", False)), "start": start,
            "end": _timestamp(completed) or start,
            "epochs": len(epochs) or int(attrs.get("epochs_run", 0)),
            "epoch_s": sum(float(e.get("epoch_time_s", 0.0)) for e in epochs),
            # CPU time inside fit where the sweep stores it (this thread's), else wall time
            "fit_s": attrs.get("fit_cpu_seconds", attrs.get("fit_seconds")), "group": group,
            "slot_epochs": attrs.get("population_slot_epochs") or (
                attrs["population_slots"] * attrs["population_ticks"]
                if "population_ticks" in attrs else None),
            "member_epochs_stored": attrs.get("population_member_epochs")}


def runnable(name: str, arm: Arm, flags: set[str], args: argparse.Namespace) -> str | None:
    """Why an arm cannot run now (None: it can)."""
    missing = [f for f in arm.needs if f not in flags]
    if missing:
        return f"the sweep has no {', '.join(missing)} yet"
    if arm.peer and not Path(args.st_python).exists():
        return f"no Python with syne-tune at {args.st_python} (--st-python)"
    return None


def run_all(args: argparse.Namespace, out: Path) -> None:
    """Every (seed, arm) not yet stored, seed by seed, ``nostop`` first."""
    from trainer import RunConfig

    write_json(out / "base.json", json.loads(RunConfig().replace(**SIZES).to_json()))
    help_text = subprocess.run([args.python, "-m", "search", "sweep", "--help"],
                               capture_output=True, text=True).stdout
    flags = sweep_flags(help_text)
    for seed in args.seeds:
        for name in args.arms:
            arm, path = ARMS[name], out / f"{name}-s{seed}.json"
            if path.exists():
                continue
            why = runnable(name, arm, flags, args)
            if why:
                print(f"skip {name} seed {seed}: {why}")
                continue
            n = args.more_trials if arm.stops else args.trials
            print(f"run {name} seed {seed}: {n} trials", flush=True)
            result = (run_peer(name, seed, n, out, args) if arm.peer
                      else run_service(name, arm, seed, n, out, args))
            if result is not None:
                result["refill_flag"] = REFILL_FLAG in flags
                write_json(path, result)
                print(f"  done in {result['wall_s']:.0f} s: {len(result['trials'])} trials",
                      flush=True)


# -- the summary ---------------------------------------------------------------------------


def seed_target(nostop: dict[str, Any], trials: int, zero: bool
                ) -> tuple[list[float], float, dict[str, float]]:
    """A seed's reference point (the default trial 0's point, (0, 0) if ``zero`` or it is
    infeasible), its target (``nostop``'s hypervolume over its first ``trials`` trials) and
    ``nostop``'s compute for them."""
    first = [r for r in nostop["trials"] if r["number"] < trials]
    default = next((r for r in first if r["number"] == 0), None)
    usable = default is not None and default["state"] == "COMPLETE" and default["feasible"]
    reference = list(default["values"]) if usable and not zero else [0.0, 0.0]
    cost = {"epochs": sum(r["epochs"] for r in first), "cpu_s": sum(r["cpu_s"] for r in first)}
    return reference, hypervolume(first, reference), cost


def arm_row(name: str, results: dict[int, dict[str, Any]],
            targets: dict[int, tuple[list[float], float, dict[str, float]]]) -> dict[str, Any]:
    """One arm's figures over the seeds it ran (and whose target is known and > 0)."""
    reached, ratios_e, ratios_c, fills, pruned, walls, hvs = [], [], [], [], [], [], []
    ratios_w = []
    seeds = sorted(s for s in results if s in targets and targets[s][1] > 0)
    for s in seeds:
        trials = results[s]["trials"]
        reference, target, cost = targets[s]
        hit = to_target(trials, reference, target)
        hvs.append(hypervolume(trials, reference) / target)
        walls.append(results[s]["wall_s"])
        pruned.append(sum(r["state"] == "PRUNED" for r in trials) / max(1, len(trials)))
        fill = slot_fill(trials, ARMS[name].population) if ARMS[name].population > 1 else None
        if fill is not None:
            fills.append(fill)
        if hit is not None:
            reached.append(hit)
            ratios_e.append(hit["epochs"] / cost["epochs"])
            ratios_c.append(hit["cpu_s"] / cost["cpu_s"])
            if "fit_wall_s" in hit:
                ratios_w.append(hit["fit_wall_s"] / cost["cpu_s"])
    return {"arm": name, "seeds": seeds, "n_reached": len(reached),
            "trials_run": mean_sd([len(results[s]["trials"]) for s in seeds]),
            "trials_to_target": mean_sd([h["trials_ended"] for h in reached]),
            "epochs": mean_sd([h["epochs"] for h in reached]),
            "cpu_s": mean_sd([h["cpu_s"] for h in reached]),
            "ratio_epochs": mean_sd(ratios_e), "ratio_cpu": mean_sd(ratios_c),
            "final_hv_share": mean_sd(hvs), "pruned_share": mean_sd(pruned),
            "slot_fill": mean_sd(fills), "wall_s": mean_sd(walls),
            "fit_wall_s": mean_sd([h["fit_wall_s"] for h in reached if "fit_wall_s" in h]),
            "ratio_fit_wall": mean_sd(ratios_w)}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| arm | seeds reaching the target | trials run | trials ended at the target | "
            "member-epochs to the target | CPU s to the target | vs no stop's trials "
            "(member-epochs) | (CPU s) | final HV / target | pruned share | slot fill | "
            "wall s per seed |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['n_reached']} of {len(r['seeds'])} | {fmt(r['trials_run'])} | "
            f"{fmt(r['trials_to_target'])} | {fmt(r['epochs'])} | {fmt(r['cpu_s'])} | "
            f"{fmt(r['ratio_epochs'], 2)} | {fmt(r['ratio_cpu'], 2)} | "
            f"{fmt(r['final_hv_share'], 2)} | {fmt(r['pruned_share'], 2)} | "
            f"{fmt(r['slot_fill'], 2)} | {fmt(r['wall_s'], 0)} |")
    return "\n".join(lines)


def load_results(out: Path, arms: list[str], seeds: list[int]
                 ) -> dict[str, dict[int, dict[str, Any]]]:
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for name in arms:
        for s in seeds:
            path = out / f"{name}-s{s}.json"
            if path.exists():
                found.setdefault(name, {})[s] = json.loads(path.read_text())
    return found


def summarise(out: Path, arms: list[str], seeds: list[int], trials: int) -> dict[str, Any]:
    """Both tables (reference: the default; (0, 0)) from what is stored."""
    results = load_results(out, ["nostop", *[a for a in arms if a != "nostop"]], seeds)
    summary: dict[str, Any] = {"trials": trials, "sizes": SIZES, "tables": {}}
    for label, zero in (("default", False), ("zero", True)):
        targets = {s: seed_target(r, trials, zero)
                   for s, r in results.get("nostop", {}).items()}
        rows = [arm_row(name, results[name], targets) for name in results]
        summary["tables"][label] = {
            "targets": {s: {"reference": t[0], "target": t[1], "nostop_cost": t[2]}
                        for s, t in targets.items()},
            "rows": rows}
    write_json(out / "summary.json", summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    for label, title in (("default", "reference: the default trial's point"),
                         ("zero", "reference: (0, 0)")):
        part = summary["tables"][label]
        print(f"\nHypervolume to reach: no stop's at {summary['trials']} trials; {title}")
        for s, t in sorted(part["targets"].items(), key=lambda kv: int(kv[0])):
            ref = ", ".join(f"{v:.4f}" for v in t["reference"])
            print(f"  seed {s}: target {t['target']:.6g} (reference {ref}); no stop spent "
                  f"{t['nostop_cost']['epochs']:.0f} member-epochs, "
                  f"{t['nostop_cost']['cpu_s']:.1f} CPU s"
                  + ("; no trial beats the reference: seed left out" if t["target"] <= 0
                     else ""))
        print()
        print(table(part["rows"]))
        for r in part["rows"]:
            if r.get("fit_wall_s"):
                print(f"\n{r['arm']}, CPU s by the service's accounting (time inside fit, "
                      f"rows' time when stopped): {fmt(r['fit_wall_s'])} to the target, "
                      f"{fmt(r['ratio_fit_wall'], 2)} of no stop's")


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,1,2``."""
    if "-" in text and "," not in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default=",".join(ARMS),
                   help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--seeds", default="0-4", help="search seeds: 0-4 or 0,1,2")
    p.add_argument("--trials", type=int, default=32,
                   help="no-stop arms' trials (the target is no stop's HV at this many)")
    p.add_argument("--more-trials", type=int, default=64, help="stopping arms' trials")
    p.add_argument("--rungs", type=int, nargs="+", default=[4])
    p.add_argument("--reduction-factor", type=float, default=3.0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--python", default=_first_existing("/work/venv/bin/python"),
                   help="the Python that runs the sweeps")
    p.add_argument("--st-python", default="/work/venv-st/bin/python",
                   help="a Python with syne-tune 0.16 and this project")
    p.add_argument("--summary-only", action="store_true", help="report what is stored")
    args = p.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arms {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    args.seeds = parse_seeds(args.seeds)
    return args


def _first_existing(path: str) -> str:
    return path if Path(path).exists() else sys.executable


def main() -> None:
    if any(a.startswith("--st_config_json_filename") for a in sys.argv[1:]):
        i = next(i for i, a in enumerate(sys.argv) if a.startswith("--st_config_json"))
        synetune_trial(sys.argv[i + 1])  # a trial process of the Syne Tune arm
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--synetune-tuner":
        run_synetune_tuner(json.loads(sys.argv[2]))
        return
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        run_all(args, out)
        print(f"ran {started} to {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print_summary(summarise(out, args.arms, args.seeds, args.trials))


if __name__ == "__main__":
    main()

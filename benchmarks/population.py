"""Trials per hour: population training (K members, one vectorised model) against solo
trials run side by side, at equal final metrics.

    python benchmarks/population.py                       # CPU: K = 1,2,4,8,16 vs 2 solo
    python benchmarks/population.py --device cuda --solo-parallel 1,2,4 \\
        --ks 1,2,4,8,16 --out benchmarks/out/population_gpu.json          # one GPU

Settings are drawn from the sweep's own search space (random sampler, seed 0): stage
lengths, penalty on/off and λ differ. Sizes (stated in the output): ``digits``, the
sizes below, one seed. Every process runs one torch thread (on this 2-core machine two
threads per process oversubscribe the cores and run several times slower). Solo trials
run ``--solo-parallel`` processes at once (on a GPU they share it, as fractional
``--gpus-per-trial`` does); populations run ``--pop-parallel`` processes at once, each
training its own K settings (CPU default 2: both paths use both cores).

Wall-clock rows depend on what else the machine runs; the CPU seconds each process
spends inside ``fit``/``fit_population`` (``time.process_time``, one thread) are the
steadier measure of work per trial, and exclude the one-time imports.

Both paths fit their probes as every trial does: the torch probes, on the run's device
(batched over members in a population). "Equal final
metrics" is checked: each member's task accuracy and zay independence against its solo
run of the same setting (max |difference| is printed).

Results are appended to ``--out`` (JSON) as each row finishes; a rerun skips rows that
are there (``--fresh`` starts over), so the run can be cut and continued.

``--replicates R`` instead measures what replicates cost (``stagetune sweep --replicates
R``): trials of R paired seeds each (seeds 0..R-1, one data split) per hour, trained as R
solo runs one after another per trial against populations of K settings × R seeds (K·R
members, as a sweep with ``--population K --replicates R`` trains them), with the largest
difference between a replicate's final metrics in the two paths:

    python benchmarks/population.py --replicates 3 --ks 1,4 --solo-trials 4

``--refill N`` instead measures what refill buys: N trials whose budgets differ (2 to
the full epochs, stage lengths scaled alike, so members stop at different times) through
K slots, as populations that refill (a freed slot takes the next trial at epoch 0,
``fit_population(refill=...)``) against populations of K trained one after another (each
waits for its longest member). It prints trials per hour, CPU seconds per trial and the
share of slot-epochs that trained a member:

    python benchmarks/population.py --refill 32 --ks 4,8

``--k1-vs-solo N`` instead measures whether solo ``fit`` could be a population of one:
the first setting trained N times each way in this process, alternating which goes
first, one torch thread, training epochs only (the evaluation is the same code for
both). It prints the seconds of each try and the medians' ratio:

    python benchmarks/population.py --k1-vs-solo 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = dict(epochs=6, max_samples=400, image_size=8, hidden_dim=64, zy_dim=8, za_dim=8,
             zay_dim=8, zx_dim=8, batch_size=64, eval_max_samples=500, write_plots=False)
N_SETTINGS = 32
COMPARED = ("task_accuracy", "zay_independence_score")


#: the settings every row trains, drawn once from the sweep's space (``--write-settings``)
#: and kept in a file, so the benchmark itself needs torch alone (a device image may have
#: neither Optuna nor Ray)
SETTINGS_FILE = Path(__file__).with_name("population_settings.json")


def sampled_params() -> list[dict]:
    """``N_SETTINGS`` parameter draws of the sweep's space (random sampler, seed 0)."""
    import optuna

    from search.space import SearchSpace

    space = SearchSpace(epochs=SIZES["epochs"], stage1_epochs=(0, SIZES["epochs"]),
                        stage2_epochs=(0, SIZES["epochs"]))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space.sample(study.ask()) for _ in range(N_SETTINGS)]


def settings(device: str) -> list[dict]:
    """The flat configs: the base sizes plus the parameters in ``SETTINGS_FILE``."""
    params = json.loads(SETTINGS_FILE.read_text())
    return [{**SIZES, "device": device, "staged_training": True, **p} for p in params]


def _configs(flat: list[dict]):
    from trainer import RunConfig

    return [RunConfig().replace(**f) for f in flat]


def _solo_worker(flat: dict) -> dict:
    import torch

    from trainer import fit

    torch.set_num_threads(1)
    cfg = _configs([flat])[0]
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(cfg)
    out = {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
           "final": {k: result.final[k] for k in COMPARED if k in result.final}}
    if cfg.device.startswith("cuda"):
        out["max_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class GpuSampler:
    """Mean GPU utilisation and peak memory from nvidia-smi while a block runs."""

    def __init__(self, device: str) -> None:
        self.active = device.startswith("cuda")
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                line = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                     "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True, text=True, timeout=5).stdout.strip()
                util, mem = (float(v) for v in line.split(","))
                self.util.append(util)
                self.mem.append(mem)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> GpuSampler:
        if self.active:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self._stop.set()
            self._thread.join()

    def summary(self) -> dict:
        if not self.util:
            return {}
        return {"gpu_util_mean": sum(self.util) / len(self.util),
                "gpu_mem_peak_mb": max(self.mem)}


def _pool(parallel: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn"))


def run_solo(flat: list[dict], parallel: int, device: str) -> dict:
    with GpuSampler(device) as gpu:
        t0 = time.perf_counter()
        with _pool(parallel) as pool:
            runs = list(pool.map(_solo_worker, flat))
        wall = time.perf_counter() - t0
    row = {"kind": "solo", "parallel": parallel, "trials": len(flat), "wall_s": wall,
           "trials_per_hour": 3600 * len(flat) / wall,
           "mean_trial_s": sum(r["seconds"] for r in runs) / len(runs),
           "cpu_s_per_trial": sum(r["cpu_s"] for r in runs) / len(runs),
           "finals": [r["final"] for r in runs], **gpu.summary()}
    if device.startswith("cuda"):
        row["max_memory_mb_per_trial"] = max(r["max_memory_mb"] for r in runs)
    return row


def _population_worker(flat: list[dict]) -> dict:
    import torch

    from trainer import fit_population

    torch.set_num_threads(1)
    device = flat[0]["device"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    c0 = time.process_time()
    results = fit_population(_configs(flat))
    cpu_s = time.process_time() - c0
    out = {"cpu_s": cpu_s,
           "finals": [{k: r.final[k] for k in COMPARED if k in r.final}
                      if not isinstance(r, Exception) else {"error": str(r)} for r in results]}
    if device.startswith("cuda"):
        out["max_memory_mb_per_member"] = torch.cuda.max_memory_allocated() / 2**20 / len(flat)
    return out


def run_population(flat: list[dict], k: int, parallel: int, device: str) -> dict:
    chunks = [flat[i * k:(i + 1) * k] for i in range(parallel)]
    with GpuSampler(device) as gpu:
        t0 = time.perf_counter()
        with _pool(parallel) as pool:
            runs = list(pool.map(_population_worker, chunks))
        wall = time.perf_counter() - t0
    trials = sum(len(c) for c in chunks)
    row = {"kind": "population", "k": k, "parallel": parallel, "trials": trials,
           "wall_s": wall, "trials_per_hour": 3600 * trials / wall,
           "cpu_s_per_trial": sum(r["cpu_s"] for r in runs) / trials,
           "finals": runs[0]["finals"], **gpu.summary()}
    if device.startswith("cuda"):
        row["max_memory_mb_per_member"] = max(r["max_memory_mb_per_member"] for r in runs)
    return row


def replicate_flat(flat: list[dict], replicates: int) -> list[list[dict]]:
    """Each setting's replicates: seeds 0..R-1 on the split of seed 0 (as a sweep)."""
    return [[{**f, "seed": r, "split_seed": 0} for r in range(replicates)] for f in flat]


def _replicates_solo_worker(runs: list[dict]) -> dict:
    """One trial's R replicates as R solo runs, one after another."""
    out = [_solo_worker(f) for f in runs]
    return {"cpu_s": sum(o["cpu_s"] for o in out), "finals": [o["final"] for o in out]}


def run_replicates_solo(trials: list[list[dict]], parallel: int, device: str) -> dict:
    with GpuSampler(device) as gpu:
        t0 = time.perf_counter()
        with _pool(parallel) as pool:
            runs = list(pool.map(_replicates_solo_worker, trials))
        wall = time.perf_counter() - t0
    return {"kind": "replicates-solo", "parallel": parallel, "trials": len(trials),
            "replicates": len(trials[0]), "wall_s": wall,
            "trials_per_hour": 3600 * len(trials) / wall,
            "cpu_s_per_trial": sum(r["cpu_s"] for r in runs) / len(trials),
            "finals": [r["finals"] for r in runs], **gpu.summary()}


def run_replicates_population(trials: list[list[dict]], k: int, parallel: int,
                              device: str) -> dict:
    """Populations of ``k`` trials × R seeds (K·R members), ``parallel`` at once."""
    chunks = [trials[i:i + k] for i in range(0, len(trials), k)]
    members = [[f for trial in chunk for f in trial] for chunk in chunks]
    with GpuSampler(device) as gpu:
        t0 = time.perf_counter()
        with _pool(parallel) as pool:
            runs = list(pool.map(_population_worker, members))
        wall = time.perf_counter() - t0
    r = len(trials[0])
    finals = [run["finals"][i * r:(i + 1) * r] for run, chunk in zip(runs, chunks, strict=True)
              for i in range(len(chunk))]
    return {"kind": "replicates-population", "k": k, "parallel": parallel,
            "trials": len(trials), "replicates": r, "wall_s": wall,
            "trials_per_hour": 3600 * len(trials) / wall,
            "cpu_s_per_trial": sum(run["cpu_s"] for run in runs) / len(trials),
            "finals": finals, **gpu.summary()}


def _replicates_table(rows: list[dict]) -> str:
    solo = next((r for r in rows if r["kind"] == "replicates-solo"), None)
    lines = ["| run | trials × seeds | wall (s) | trials/hour | vs solo | CPU s per trial | "
             "vs solo | max abs Δ final vs solo |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        name = (f"{row['replicates']} solo runs per trial, {row['parallel']} at a time"
                if row["kind"] == "replicates-solo" else
                f"population K={row['k']} × R={row['replicates']} ({row['k'] * row['replicates']}"
                f" members), {row['parallel']} at a time")
        ratio = cpu_ratio = diff = ""
        if solo is not None:
            ratio = f"{row['trials_per_hour'] / solo['trials_per_hour']:.2f}x"
            cpu_ratio = f"{solo['cpu_s_per_trial'] / row['cpu_s_per_trial']:.2f}x"
            if row is not solo:
                deltas = [abs(a[key] - b[key])
                          for ta, tb in zip(row["finals"], solo["finals"], strict=False)
                          for a, b in zip(ta, tb, strict=True) for key in COMPARED
                          if key in a and key in b]
                diff = f"{max(deltas):.4f}" if deltas else "n/a"
        lines.append(f"| {name} | {row['trials']} × {row['replicates']} | {row['wall_s']:.1f} | "
                     f"{row['trials_per_hour']:.0f} | {ratio} | {row['cpu_s_per_trial']:.2f} | "
                     f"{cpu_ratio} | {diff} |")
    return "\n".join(lines)


def replicates_benchmark(args, flat: list[dict]) -> None:
    device = args.device.split(":")[0]
    out = Path(args.out if args.out_given else
               ROOT / "benchmarks" / "out" / f"population_replicates_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    trials = replicate_flat(flat[: args.solo_trials], args.replicates)
    rows: list[dict] = []
    pop_parallel = args.pop_parallel or (2 if args.device == "cpu" else 1)
    parallel = int(args.solo_parallel.split(",")[0])
    rows.append(run_replicates_solo(trials, parallel, args.device))
    print(_replicates_table(rows), flush=True)
    for k in (int(v) for v in args.ks.split(",")):
        # as many populations at once as there are to run, up to --pop-parallel
        at_once = max(1, min(pop_parallel, len(trials) // k))
        rows.append(run_replicates_population(trials, k, at_once, args.device))
        out.write_text(json.dumps({"sizes": SIZES, "device": args.device, "rows": rows},
                                  indent=1))
        print(_replicates_table(rows), flush=True)
    print(f"\nsizes: {SIZES}; device {args.device}; {os.cpu_count()} CPUs; "
          f"{len(trials)} settings × {args.replicates} seeds")
    print(_replicates_table(rows))


def _table(rows: list[dict], device: str) -> str:
    solo = [r for r in rows if r["kind"] == "solo"]
    ref = solo[0] if solo else None
    base = ref["trials_per_hour"] if ref else None
    cpu_base = ref["cpu_s_per_trial"] if ref else None
    lines = ["| run | trials | wall (s) | trials/hour | vs first solo row | CPU s per trial "
             "(inside fit) | vs first solo row | max abs Δ final "
             f"({', '.join(COMPARED)}) vs solo |" + (" GPU util % | MB/trial |"
                                                    if device.startswith("cuda") else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if device.startswith("cuda")
                                                    else "")]
    for r in rows:
        name = (f"solo, {r['parallel']} at a time" if r["kind"] == "solo"
                else f"population K={r['k']}, {r['parallel']} at a time")
        diff = ""
        if ref is not None and r["kind"] == "population":
            deltas = [abs(a[k] - b[k]) for a, b in zip(r["finals"], ref["finals"], strict=False)
                      for k in COMPARED if k in a and k in b]
            diff = f"{max(deltas):.4f}" if deltas else "n/a"
        speed = f"{r['trials_per_hour'] / base:.2f}x" if base else ""
        cpu = r.get("cpu_s_per_trial")
        cpu_speed = f"{cpu_base / cpu:.2f}x" if cpu and cpu_base else ""
        line = (f"| {name} | {r['trials']} | {r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | "
                f"{speed} | {cpu:.2f} | {cpu_speed} | {diff} |" if cpu else
                f"| {name} | {r['trials']} | {r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | "
                f"{speed} | | | {diff} |")
        if device.startswith("cuda"):
            mem = r.get("max_memory_mb_per_trial", r.get("max_memory_mb_per_member", 0.0))
            line += f" {r.get('gpu_util_mean', float('nan')):.0f} | {mem:.0f} |"
        lines.append(line)
    return "\n".join(lines)


class _Stop(Exception):
    pass


def _solo_epochs(cfg, data) -> tuple[float, float]:
    """Seconds (wall, CPU) of ``fit``'s epochs, stopped before its evaluation."""
    from trainer import fit

    def stop_at_the_end(row: dict) -> None:
        if row["epoch"] == cfg.optim.epochs - 1 or row["stopped_early"]:
            raise _Stop

    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.suppress(_Stop):
        fit(cfg, data=data, report=stop_at_the_end)
    return time.perf_counter() - t0, time.process_time() - c0


def _population_epochs(cfg, data) -> tuple[float, float]:
    """Seconds (wall, CPU) of ``fit_population([cfg])``'s epochs, without evaluation."""
    from trainer import fit_population

    t0, c0 = time.perf_counter(), time.process_time()
    fit_population([cfg], data=data, evaluate=False)
    return time.perf_counter() - t0, time.process_time() - c0


def k1_vs_solo(flat: dict, repeats: int) -> dict:
    """Solo ``fit`` against a population of one on the same setting, interleaved."""
    import statistics

    import torch

    from trainer import load_dataset

    torch.set_num_threads(1)
    cfg = _configs([flat])[0]
    runs: dict[str, list[tuple[float, float]]] = {"solo": [], "population K=1": []}
    ways = [("solo", _solo_epochs), ("population K=1", _population_epochs)]
    for r in range(repeats):  # alternating, so drift on a shared machine hits both
        for name, way in ways if r % 2 == 0 else ways[::-1]:
            runs[name].append(way(cfg, load_dataset(cfg.data, cfg.data_seed)))
    for name, v in runs.items():
        print(f"{name:15s} wall " + " ".join(f"{w:6.2f}" for w, _ in v) + "  cpu "
              + " ".join(f"{c:6.2f}" for _, c in v))
    med = {name: [statistics.median(x[i] for x in v) for i in (0, 1)]
           for name, v in runs.items()}
    ratio = [p / s for p, s in zip(med["population K=1"], med["solo"], strict=True)]
    print(f"median wall: solo {med['solo'][0]:.2f}s, K=1 {med['population K=1'][0]:.2f}s "
          f"(x{ratio[0]:.2f}); median CPU: solo {med['solo'][1]:.2f}s, K=1 "
          f"{med['population K=1'][1]:.2f}s (x{ratio[1]:.2f})")
    return {"runs": runs, "median": med, "ratio_wall": ratio[0], "ratio_cpu": ratio[1]}


def refill_trials(flat: list[dict], n: int) -> list[dict]:
    """``n`` trials of the settings (cycled) with budgets of 2 to the full epochs
    (trial i takes 2 + i mod (epochs - 1)), each setting's stage lengths scaled with its
    budget, as a shorter sweep's schedule scales."""
    full = SIZES["epochs"]
    out = []
    for i in range(n):
        f = dict(flat[i % len(flat)])
        epochs = 2 + i % (full - 1)
        s1 = round((f.get("stage1_epochs") or 0) * epochs / full)
        s2 = min(round((f.get("stage2_epochs") or 0) * epochs / full), epochs - s1)
        out.append({**f, "epochs": epochs, "stage1_epochs": s1, "stage2_epochs": s2})
    return out


def _refill_worker(job: tuple[list[dict], int, bool]) -> dict:
    """Train ``trials`` through ``k`` slots, refilling or one population after another."""
    import torch

    from trainer import fit_population

    trials, k, refill = job
    torch.set_num_threads(1)
    configs = _configs(trials)
    ticks, member_epochs, slot_epochs = [0], [0], [0]

    def count(rows: dict) -> None:
        ticks[0] += 1
        member_epochs[0] += len(rows)

    t0, c0 = time.perf_counter(), time.process_time()
    if refill:
        queue = configs[k:]

        def take(free: int) -> list:
            got = queue[:free]
            del queue[:free]
            return got

        fit_population(configs[:k], refill=take, report_epoch=count)
        slot_epochs[0] = k * ticks[0]
    else:
        for i in range(0, len(configs), k):
            before = ticks[0]
            fit_population(configs[i:i + k], report_epoch=count)
            slot_epochs[0] += k * (ticks[0] - before)
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "member_epochs": member_epochs[0], "slot_epochs": slot_epochs[0]}


def refill_benchmark(args, flat: list[dict]) -> None:
    """Rows of trials per hour with and without refill, at each K of ``--ks``."""
    trials = refill_trials(flat, args.refill)
    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        for refill in (False, True):
            r = _refill_worker((trials, k, refill))
            rows.append({"k": k, "refill": refill, "trials": len(trials), **r,
                         "trials_per_hour": 3600 * len(trials) / r["seconds"],
                         "fill": r["member_epochs"] / r["slot_epochs"]})
            print(f"K={k:2d} {'refill   ' if refill else 'no refill'}: "
                  f"{rows[-1]['trials_per_hour']:7.0f} trials/h, "
                  f"{r['cpu_s'] / len(trials):6.2f} CPU s/trial, slots filled "
                  f"{rows[-1]['fill']:.2f} ({r['member_epochs']} of {r['slot_epochs']} "
                  "slot-epochs)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"sizes": SIZES, "device": args.device,
                                              "rows": rows}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--ks", default="1,2,4,8,16")
    p.add_argument("--solo-parallel", default="2", help="solo processes at once, e.g. 1,2,4")
    p.add_argument("--solo-trials", type=int, default=16,
                   help="how many of the settings the solo rows run")
    p.add_argument("--pop-parallel", type=int, default=None,
                   help="population processes at once (default: 2 on CPU, 1 on a GPU)")
    p.add_argument("--out", default=None,
                   help="JSON of the rows (default: benchmarks/out/population_cpu.json, or "
                        "population_replicates_<device>.json with --replicates)")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--k1-vs-solo", type=int, default=0, metavar="N",
                   help="only compare solo fit with a population of one, N tries each")
    p.add_argument("--replicates", type=int, default=0, metavar="R",
                   help="only measure trials of R paired seeds: R solo runs per trial "
                        "against populations of K settings × R seeds")
    p.add_argument("--refill", type=int, default=0, metavar="N",
                   help="only measure N trials of differing budgets through K slots, with "
                        "and without refill")
    p.add_argument("--write-settings", action="store_true",
                   help=f"draw the settings from the sweep's space into {SETTINGS_FILE.name}")
    args = p.parse_args()
    if args.write_settings:
        SETTINGS_FILE.write_text(json.dumps(sampled_params(), indent=1) + "\n")
        return
    if args.k1_vs_solo:
        k1_vs_solo(settings(args.device)[0], args.k1_vs_solo)
        return
    if args.refill:
        refill_benchmark(args, settings(args.device))
        return
    args.out_given = args.out is not None
    if args.replicates:
        replicates_benchmark(args, settings(args.device))
        return
    out = Path(args.out or ROOT / "benchmarks" / "out" / "population_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [] if args.fresh or not out.exists() else json.loads(out.read_text())["rows"]
    flat = settings(args.device)
    cpus = os.cpu_count() or 1

    def save() -> None:
        out.write_text(json.dumps({"sizes": SIZES, "device": args.device, "cpus": cpus,
                                   "rows": rows}, indent=1))

    for parallel in (int(v) for v in args.solo_parallel.split(",")):
        if any(r["kind"] == "solo" and r["parallel"] == parallel for r in rows):
            continue
        rows.append(run_solo(flat[: args.solo_trials], parallel, args.device))
        save()
        print(_table(rows, args.device), flush=True)
    pop_parallel = args.pop_parallel or (2 if args.device == "cpu" else 1)
    for k in (int(v) for v in args.ks.split(",")):
        if any(r["kind"] == "population" and r["k"] == k for r in rows):
            continue
        rows.append(run_population(flat, k, pop_parallel, args.device))
        save()
        print(_table(rows, args.device), flush=True)
    print(f"\nsizes: {SIZES}; device {args.device}; {cpus} CPUs")
    print(_table(rows, args.device))


if __name__ == "__main__":
    main()

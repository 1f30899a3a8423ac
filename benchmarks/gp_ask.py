"""How long `--sampler gp` takes to ask for a setting, with and without ``greenlet``.

    python benchmarks/gp_ask.py [--histories 16,32,64] [--asks 5] [--repeats 2]

Optuna's GPSampler maximises its acquisition function from many starting points with
L-BFGS-B. With the ``greenlet`` package it runs those restarts as one batch (one
evaluation of the Gaussian process for all of them per step); without it, it warns and
runs them one after another. This measures what that costs a sweep, per ask.

The space is the search-quality benchmark's: the sweep's own space at 6 epochs with the
levers ranged (``build_space(6, ranges=RANGES)``). A study's history is N trials drawn by
the random sampler (seed 0) and told made-up objective values that depend smoothly on
the parameters, every fifth one infeasible (the collapse constraint): the time of an ask
depends on N and on the space, not on what the values mean. Then ``--asks`` GP asks are
timed (the sampler made as a sweep makes it, ``search.db.study.make_sampler``), each told
its made-up value.

Each history size runs in two child processes, one where ``greenlet`` imports and one
where it is blocked, alternating which goes first, ``--repeats`` times; both must suggest
the same parameters (batching changes how the restarts are scheduled, not where they
end). One torch thread per process. Prints the median ask time of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RANGES = ("beta_ay=0.25:4", "beta_x=0.25:4", "penalty_pairs=zy_za,zy_za_zx")
EPOCHS = 6


def made_up_values(params: dict) -> list[float]:
    """Two objectives that vary smoothly with every parameter (none of them is a score)."""
    x = 0.0
    for i, (_, value) in enumerate(sorted(params.items())):
        v = float(value) if isinstance(value, (int, float)) else float(len(str(value)) % 3)
        x += math.sin((i + 1) * math.log1p(abs(v)))
    return [0.7 + 0.05 * math.tanh(x), 0.5 + 0.1 * math.tanh(-x / 2)]


def child(n_history: int, asks: int, block: bool) -> dict:
    if block:
        sys.modules["greenlet"] = None  # an import of greenlet now raises ImportError
    import warnings

    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")

    from search.db.study import make_sampler
    from search.space import build_space
    from trainer.objectives import COLLAPSE_FLAG

    space = build_space(EPOCHS, ranges=list(RANGES))
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def tell(trial, params: dict, i: int) -> None:
        trial.set_constraint(COLLAPSE_FLAG, 1.0 if i % 5 == 4 else -1.0)
        study.tell(trial, made_up_values(params))

    for i in range(n_history):
        trial = study.ask()
        tell(trial, space.sample(trial), i)
    times, suggested = [], []
    for k in range(asks):
        t0 = time.perf_counter()
        study.sampler = make_sampler("gp", 1000 + k)
        trial = study.ask()
        params = space.sample(trial)
        times.append(time.perf_counter() - t0)
        suggested.append({p: round(v, 9) if isinstance(v, float) else v
                          for p, v in sorted(params.items())})
        tell(trial, params, n_history + k)
    from optuna._gp import batched_lbfgsb

    return {"n_history": n_history, "greenlet": batched_lbfgsb._greenlet_imports
            .is_successful(), "ask_s": times, "params": suggested}


def run_child(n_history: int, asks: int, block: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(n_history), "--asks", str(asks)]
    if block:
        command.append("--block-greenlet")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", default="16,32,64",
                        help="finished trials before the timed asks")
    parser.add_argument("--asks", type=int, default=5, help="timed asks per process")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairs of processes per history size (alternating order)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--block-greenlet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.asks, args.block_greenlet)))
        return 0
    try:
        import greenlet  # noqa: F401
    except ImportError:
        print("error: greenlet is not installed; install it (pip install greenlet) to "
              "compare", file=sys.stderr)
        return 2
    print(f"GP asks on the search-quality space ({EPOCHS} epochs, {', '.join(RANGES)}); "
          f"{args.asks} asks per process, {args.repeats} pairs of processes per size")
    print("| finished trials | asks | median ask without greenlet (s) | with greenlet (s) "
          "| ratio | same suggestions |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in args.histories.split(",")):
        without, with_, same = [], [], True
        for r in range(args.repeats):
            order = (True, False) if r % 2 == 0 else (False, True)
            runs = {block: run_child(n, args.asks, block) for block in order}
            assert not runs[True]["greenlet"] and runs[False]["greenlet"]
            without += runs[True]["ask_s"]
            with_ += runs[False]["ask_s"]
            same &= runs[True]["params"] == runs[False]["params"]
        a, b = statistics.median(without), statistics.median(with_)
        print(f"| {n} | {len(without)} + {len(with_)} | {a:.3f} | {b:.3f} | {a / b:.2f}x "
              f"| {'yes' if same else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

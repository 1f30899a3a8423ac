"""``shapes`` out of domain: does any staged-training setting lift the accuracy on an
unseen domain above chance, and where does the colour live?

    OMP_NUM_THREADS=1 python benchmarks/shapes_ood.py check        # fixed settings x seeds
    OMP_NUM_THREADS=1 python benchmarks/shapes_ood.py sweep        # the service's sweep
    python benchmarks/shapes_ood.py report                         # what finished
    python benchmarks/shapes_ood.py gpu-command                    # the full-size run

The data (``trainer._shapes``): six shapes (the class y) in six domains a (rotation and
background texture); the colour family is s = (y + a) mod 2. Domain 5 (75 degrees, dots)
is the **test** domain, reported only; domain 4 (60 degrees, diagonal stripes) is the
**validation** domain the sweep selects on (``--task-metric acc_y_val_domain``); domains
0 to 3 are trained on. Chance is 1/6.

**The parity flip.** A model that reads the class partly from the colour cannot do it
without the domain: y = s - a (mod 2) for the parity of y. On an unseen domain it can
only guess the domain from what it saw; a guess of the wrong parity turns every class
into one of the other parity (circle <-> square, ...). The **parity-flip rate** is the
share of a held-out domain's images whose predicted class has the other parity than the
true one (from the analysis' confusion matrix): 0 for a correct classifier, 1/2 for one
that guesses uniformly, towards 1 when the colour rule decides the class with a guessed
domain of the wrong parity. Above 1/2 is the flip the full-size run showed (32 px, 20,000
images, 60 epochs: held-out accuracy 0.1665, ``benchmarks/README.md``).

``check`` trains the method's default, ``unsuppressed`` (no staging, no penalty),
``kl_weight`` suppression and the ``diva`` variant (no zay) on seeds 0..S-1, one data
split (``split_seed`` 0: seeds vary the model only, so seed s of one setting is paired
with seed s of another), as ``fit_population`` populations; ``sweep`` runs
``stagetune sweep`` with ``--task-metric acc_y_val_domain`` at the same sizes and then
``stagetune confirm`` of its best settings against the default on fresh seeds. ``report``
prints both from ``--out`` and the study database. ``check --val-domain 3 --out F`` trains
the same with a validation domain of the test domain's parity (training domains 0, 1, 2,
4): whether a validation domain can show the parity flip depends on its parity.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from search.space import reference_settings  # noqa: E402 (the project, from ROOT)

#: the scaled-down problem (the full one: 20,000 images, 60 epochs; see gpu-command)
SIZES: dict[str, Any] = dict(dataset="shapes", arch="conv", image_size=32,
                             max_samples=3600, epochs=12, batch_size=128,
                             eval_max_samples=1000)
VAL_DOMAIN, TEST_DOMAIN = 4, 5
SETTINGS = reference_settings()
SPLIT_SEED = 0
#: the sweep's ranges beyond the default space (stage lengths, penalty on/off, lambda):
#: every lever that can move the colour between groups
RANGES = ("zay_suppression=gate,kl_weight", "penalty_pairs=zy_za,zy_za_zx",
          "beta_y=0.25:4", "beta_ay=0.25:4", "beta_x=0.25:4")
S_ROW = [f"factor_s_from_{g}" for g in ("zy", "za", "zay", "zx")]
ACCURACIES = ["acc_y_val", "acc_y_val_domain", "acc_y_test_domain"]
OUT = ROOT / "benchmarks/out/shapes_ood.json"
STORAGE = f"sqlite:///{ROOT / 'benchmarks/out/shapes_ood.db'}"
STUDY = "shapes_ood"


def parity_flip(confusion: list[list[int]]) -> float:
    """Share of images whose predicted class has the other parity than the true class."""
    total = sum(map(sum, confusion))
    flipped = sum(c for t, row in enumerate(confusion) for p, c in enumerate(row)
                  if (t + p) % 2)
    return flipped / total if total else float("nan")


def run_config(setting: str, seed: int, sizes: dict[str, Any], val_domain: int = VAL_DOMAIN):
    from search.space import baseline_params
    from trainer import RunConfig

    flat = {**baseline_params(sizes["epochs"]), **sizes, **SETTINGS[setting]}
    return RunConfig().replace(seed=seed, split_seed=SPLIT_SEED, val_domain=val_domain,
                               test_domain=TEST_DOMAIN, device="cpu", write_plots=False,
                               **flat)


def check(out: Path, settings: list[str], seeds: list[int], sizes: dict[str, Any],
          val_domain: int = VAL_DOMAIN) -> None:
    """Train every (setting, seed) not yet in ``out``; record accuracies, flips, s row."""
    import torch

    from trainer import DivergenceError, fit_population, group_population, load_dataset

    torch.set_num_threads(1)
    records = json.loads(out.read_text())["runs"] if out.exists() else []
    if records and (records[0]["sizes"], records[0].get("val_domain", VAL_DOMAIN)) != (
            sizes, val_domain):
        raise SystemExit(f"{out} holds runs at other sizes or another validation domain; "
                         "give another --out")
    done = {(r["setting"], r["seed"]) for r in records}
    wanted = [(s, seed) for s in settings for seed in seeds if (s, seed) not in done]
    configs = [run_config(s, seed, sizes, val_domain) for s, seed in wanted]
    data = load_dataset(configs[0].data, SPLIT_SEED) if configs else None
    for group in group_population(configs):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        results = fit_population([configs[i] for i in group], data=data)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        for i, result in zip(group, results, strict=True):
            setting, seed = wanted[i]
            record: dict[str, Any] = {"setting": setting, "seed": seed, "sizes": sizes,
                                      "val_domain": val_domain,
                                      "population_wall_s": wall, "population_cpu_s": cpu}
            if isinstance(result, DivergenceError):
                record["error"] = str(result)
            else:
                record["final"] = {k: v for k, v in result.final.items()
                                   if isinstance(v, int | float)}
                record["confusion"] = result.analysis.get("confusion", {})
            records.append(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"runs": records}, indent=1))
        print(f"{'+'.join(sorted({wanted[i][0] for i in group}))} x {len(group)}: "
              f"{wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)


def check_report(out: Path) -> str:
    """Per setting, mean ± sd over seeds; each setting against the default (paired)."""
    from search.checks.paired import mean_sd_text, paired_by_seed

    runs = [r for r in json.loads(out.read_text())["runs"] if "final" in r]
    settings = list(dict.fromkeys(r["setting"] for r in runs))
    cols = [*ACCURACIES, "flip val domain", "flip test domain", *S_ROW, "zay_collapsed"]
    lines = ["| setting | n | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]

    def value(r: dict[str, Any], col: str) -> float | None:
        if col.startswith("flip "):
            matrix = r["confusion"].get(col.split(" ", 1)[1].replace(" ", "_"))
            return parity_flip(matrix) if matrix else None
        return r["final"].get(col)

    table: dict[str, dict[str, dict[int, float]]] = {}
    for s in settings:
        mine = [r for r in runs if r["setting"] == s]
        table[s] = {c: {r["seed"]: v for r in mine if (v := value(r, c)) is not None}
                    for c in cols}
        lines.append(f"| {s} | {len(mine)} | "
                     + " | ".join(mean_sd_text(list(table[s][c].values())) for c in cols) + " |")
    lines += ["", "Against the default (paired over seeds; mean ± SE, p of a two-sided "
              "paired t test):", "",
              "| setting | " + " | ".join(ACCURACIES) + " |", "|---|" + "---|" * 3]
    for s in settings:
        if s == "default":
            continue
        cells = []
        for c in ACCURACIES:
            d = paired_by_seed(table[s][c], table["default"][c])
            if d is None:
                cells.append("–")
                continue
            cells.append(f"{d.mean:+.3f} ± {d.se:.3f} (p = {d.p:.2f}, n = {d.n})")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_args(n_trials: int, replicates: int, population: int, sampler: str,
               seed: int) -> list[str]:
    s = SIZES
    return ["stagetune", "sweep", "--storage", STORAGE, "--study", STUDY,
            "--dataset", "shapes", "--epochs", str(s["epochs"]),
            "--max-samples", str(s["max_samples"]), "--batch-size", str(s["batch_size"]),
            "--val-domain", str(VAL_DOMAIN), "--test-domain", str(TEST_DOMAIN),
            "--task-metric", "acc_y_val_domain",
            "--disentanglement-metric", "disentanglement_score",
            "--n-trials", str(n_trials), "--replicates", str(replicates),
            "--population", str(population), "--sampler", sampler, "--seed", str(seed),
            "--cpus-per-trial", "1", "--num-cpus", "1", "--quiet",
            *[a for r in RANGES for a in ("--range", r)]]


def confirm_args(top: int, seeds: int) -> list[str]:
    return ["stagetune", "confirm", "--storage", STORAGE, "--study", STUDY,
            "--top", str(top), "--seeds", str(seeds), "--population"]


def run(cmd: list[str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.time()
    code = subprocess.call(cmd, cwd=ROOT)
    print(f"exit {code} after {time.time() - t0:.0f} s", flush=True)
    if code:
        raise SystemExit(code)


def sweep_report() -> str:
    """The study's trials ranked by the validation domain, with what the test domain
    says (reported only) and where s lives; then the newest confirmation, with the test
    domain and the s row compared seed by seed as well."""
    import io

    import optuna

    from search.checks.confirm_summary import print_confirmation, summarize
    from search.checks.paired import paired_difference
    from search.db import storage as db
    from search.db.study import open_storage_read_only

    study = optuna.load_study(study_name=STUDY, storage=open_storage_read_only(STORAGE))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    done.sort(key=lambda t: -t.values[0])
    cols = ["acc_y_val_domain", "acc_y_val_domain_se", "acc_y_test_domain",
            "acc_y_test_domain_se", "task_accuracy", "disentanglement_score",
            *S_ROW, "zay_collapsed"]
    lines = [f"{len(done)} finished trials of {len(study.trials)}; ranked by "
             "acc_y_val_domain (the objective); the test domain is reported only", "",
             "| trial | " + " | ".join(cols) + " | parameters |",
             "|---|" + "---|" * (len(cols) + 1)]
    for t in done:
        cells = [f"{v:.3f}" if isinstance(v := t.user_attrs.get(c), int | float) else "–"
                 for c in cols]
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.params.items())
        lines.append(f"| {t.number} | " + " | ".join(cells) + f" | {params} |")
    stored = db.read_confirmations(db.make_engine(STORAGE, read_only=True), STUDY)
    if not stored:
        return "\n".join(lines)
    confirmation = stored[-1]
    buffer = io.StringIO()
    print_confirmation(summarize(confirmation), file=buffer)
    lines += ["", buffer.getvalue().rstrip(), "",
              "| setting | metric | setting mean | default mean | difference (paired) "
              "| 95% CI | p | n |", "|---|---|---|---|---|---|---|---|"]
    runs = {(r["setting"], r["seed"]): r["metrics"] for r in confirmation["runs"]
            if r["state"] == "complete"}
    default = confirmation["settings"][0]["key"]
    for setting in confirmation["settings"][1:]:
        key = setting["key"]
        seeds = [s for s in confirmation["seeds"] if (key, s) in runs and (default, s) in runs]
        for metric in ["acc_y_val_domain", "acc_y_test_domain", "task_accuracy",
                       "disentanglement_score", *S_ROW]:
            a = [runs[(key, s)].get(metric) for s in seeds]
            b = [runs[(default, s)].get(metric) for s in seeds]
            if len(seeds) < 2 or None in a or None in b:
                continue
            d = paired_difference(a, b)
            lines.append(f"| {key} | {metric} | {statistics.mean(a):.3f} | "
                         f"{statistics.mean(b):.3f} | {d.mean:+.3f} ± {d.se:.3f} | "
                         f"{d.low:+.3f} to {d.high:+.3f} | {d.p:.2f} | {d.n} |")
    return "\n".join(lines)


#: the full-size run on a GPU; it validates on domain 3, of the test domain's parity, the
#: one that shows the parity flip (domain 4 hides it: benchmarks/README.md)
GPU_COMMAND = (
    "stagetune sweep --storage postgresql://USER@HOST/stagetune --study shapes_ood_full "
    "--dataset shapes --epochs 60 --max-samples 20000 --val-domain 3 --test-domain 5 "
    "--task-metric acc_y_val_domain --disentanglement-metric disentanglement_score "
    + " ".join(f"--range {r}" for r in RANGES)
    + " --replicates 3 --population 4 --gpus-per-trial 1 --n-trials 64 --sampler tpe && "
    "stagetune confirm --storage postgresql://USER@HOST/stagetune --study shapes_ood_full "
    "--top 3 --seeds 10 --population"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["check", "sweep", "report", "gpu-command"])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--seeds", type=int, default=3, help="check: seeds 0..S-1")
    p.add_argument("--val-domain", type=int, default=VAL_DOMAIN,
                   help="check: the validation domain (the sweep's is 4)")
    p.add_argument("--epochs", type=int, default=SIZES["epochs"])
    p.add_argument("--max-samples", type=int, default=SIZES["max_samples"])
    p.add_argument("--n-trials", type=int, default=24)
    p.add_argument("--replicates", type=int, default=2)
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--confirm-top", type=int, default=2)
    p.add_argument("--confirm-seeds", type=int, default=6)
    args = p.parse_args(argv)
    SIZES.update(epochs=args.epochs, max_samples=args.max_samples)
    if args.what == "gpu-command":
        print(GPU_COMMAND)
    elif args.what == "check":
        check(args.out, args.settings.split(","), list(range(args.seeds)), dict(SIZES),
              args.val_domain)
        print(check_report(args.out))
    elif args.what == "sweep":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run(sweep_args(args.n_trials, args.replicates, args.population, args.sampler,
                       args.sampler_seed))
        run(confirm_args(args.confirm_top, args.confirm_seeds))
        print(sweep_report())
    else:
        if args.out.exists():
            print(check_report(args.out))
        print(sweep_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())

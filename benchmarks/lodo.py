"""Leave-one-domain-out (LODO) on ``digits``: held-out-domain accuracy of four settings.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/lodo.py   # train, report
    python benchmarks/lodo.py --report-only                      # report what finished
    python benchmarks/lodo.py --time-one --epochs 12 --max-samples 800   # size a run
    python benchmarks/lodo.py --colour-check 1 3   # how much of the error is the colour

What it measures: DIVA's rotated-digit protocol (Ilse et al. 2020) on the built-in
``digits`` data (six rotation domains, 0 to 75 degrees, no test domain). For each held-out
domain k (a *fold*) and each seed, a model is trained with ``val_domain=k``: domain k is
left out of training, and its accuracy there (q(y|zy) on the ``val_domain`` split, the
final metric ``acc_y_val_domain``) is the fold's score. The LODO mean of a seed is the
mean of its six folds' held-out accuracies (``search.worker.replicates.combine``'s
``lodo_accuracy``); the in-domain validation accuracy (``task_accuracy``, q(y|zy) on the
training domains' validation split) is reported beside it for contrast.

Settings (``--settings``), each on top of the method's default
(``search.space.baseline_params``: staged in thirds, ``gate`` suppression, penalty on,
lambda = 10):

- ``default``: the method's default as it is;
- ``unsuppressed``: no staging and no penalty (zay never suppressed);
- ``kl_weight``: staged with the published ``kl_weight`` suppression;
- ``diva``: the ``diva`` model variant (no zay; no penalty applies).

Every run pins the data split (``split_seed=0``), so a seed varies the model only
(initialisation, batch order, posterior noise), as the sweep's replicates do; seed s of
one setting is therefore paired with seed s of another. Within a fold, the members that
can share one model (``trainer.group_population``: ``default`` and ``unsuppressed``, all
seeds) train as one vectorised population (``trainer.fit_population``); ``kl_weight``
and ``diva`` each form their own.

Resumable: each population's members are appended to ``--out`` (JSON) as soon as it
ends; a rerun trains only the (setting, seed, fold) runs that are not there. One torch
thread (the machine this was written on has two shared cores).

The report prints, for every setting, the held-out accuracy of each domain (mean +- sd
over seeds), the LODO mean (per seed over folds, then mean +- sd over seeds), the
in-domain validation accuracy, and each setting against ``default`` on the LODO mean: a
paired t test over seeds (``search.checks.paired.paired_difference``).

``--colour-check FOLD ...`` asks how much of a fold's held-out error comes from the data's
colour rule (s = class parity XOR domain parity flips between neighbouring domains): see
``colour_check``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from search.space import reference_settings  # noqa: E402 (the project, from ROOT)

#: sizes beside the epochs and samples (the project's benchmark sizes)
SIZES: dict[str, Any] = dict(image_size=8, hidden_dim=64, zy_dim=8, za_dim=8, zay_dim=8,
                             zx_dim=8, batch_size=64, eval_max_samples=500)
#: what each setting changes on top of the method's default
SETTINGS = reference_settings()
#: the data split every run shares (seeds vary the model only)
SPLIT_SEED = 0
#: a fold's held-out accuracy
HELD_OUT = "acc_y_val_domain"
#: the in-domain validation accuracy
IN_DOMAIN = "task_accuracy"


def run_config(setting: str, seed: int, fold: int, epochs: int, max_samples: int | None,
               sizes: dict[str, Any] | None = None):
    """The ``RunConfig`` of one run: ``setting`` at ``seed`` with domain ``fold`` held out."""
    from search.space import baseline_params
    from trainer import RunConfig

    flat = {**baseline_params(epochs), **(sizes or SIZES), **SETTINGS[setting]}
    return RunConfig().replace(
        dataset="digits", epochs=epochs, max_samples=max_samples, seed=seed,
        split_seed=SPLIT_SEED, val_domain=fold, test_domain=None, device="cpu",
        write_plots=False, **flat)


def load_records(out: Path) -> list[dict[str, Any]]:
    """The runs recorded so far (an empty list when ``out`` does not exist)."""
    if not out.exists():
        return []
    return json.loads(out.read_text())["runs"]


def _save(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": records}, indent=1, sort_keys=True))
    os.replace(tmp, out)


def _key(setting: str, seed: int, fold: int) -> tuple[str, int, int]:
    return setting, int(seed), int(fold)


def train_missing(out: Path, settings: list[str], seeds: list[int], epochs: int,
                  max_samples: int | None) -> None:
    """Train every (setting, seed, fold) not yet in ``out``, fold by fold, one population
    per group of members that can share a model; append each population's members."""
    import torch

    from trainer import DataConfig, DivergenceError, fit_population, group_population

    torch.set_num_threads(1)
    meta = {"epochs": epochs, "max_samples": max_samples, "sizes": SIZES,
            "split_seed": SPLIT_SEED}
    records = load_records(out)
    for r in records:  # a rerun must not mix sizes
        if (r["epochs"], r["max_samples"]) != (epochs, max_samples):
            raise SystemExit(f"{out} holds runs at epochs={r['epochs']}, max_samples="
                             f"{r['max_samples']}; give those sizes or another --out")
    done = {_key(r["setting"], r["seed"], r["fold"]) for r in records}
    folds = range(len(DataConfig().domains))
    for fold in folds:
        wanted = [(s, seed) for s in settings for seed in seeds
                  if _key(s, seed, fold) not in done]
        if not wanted:
            continue
        configs = [run_config(s, seed, fold, epochs, max_samples) for s, seed in wanted]
        for group in group_population(configs):
            members = [configs[i] for i in group]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            results = fit_population(members)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            for i, result in zip(group, results, strict=True):
                setting, seed = wanted[i]
                record: dict[str, Any] = {
                    "setting": setting, "seed": seed, "fold": fold, "epochs": epochs,
                    "max_samples": max_samples, "population": [wanted[j] for j in group],
                    "population_wall_s": wall, "population_cpu_s": cpu,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                if isinstance(result, DivergenceError):
                    record["error"] = str(result)
                else:
                    record["final"] = {k: v for k, v in result.final.items()
                                       if isinstance(v, int | float)}
                    record["best_epoch"] = result.best_epoch
                records.append(record)
            _save(out, meta, records)
            names = sorted({wanted[j][0] for j in group})
            print(f"fold {fold}: {'+'.join(names)} x {len(group)} members: "
                  f"{wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)


def time_one(epochs: int, max_samples: int | None, seeds: list[int]) -> None:
    """Wall and CPU seconds of one fold's population of ``default`` x ``seeds``."""
    import torch

    from trainer import fit_population

    torch.set_num_threads(1)
    configs = [run_config("default", seed, 0, epochs, max_samples) for seed in seeds]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = fit_population(configs)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    held = [round(r.final.get(HELD_OUT, float("nan")), 3) for r in results]
    inside = [round(r.final.get(IN_DOMAIN, float("nan")), 3) for r in results]
    print(f"epochs={epochs} max_samples={max_samples} seeds={seeds}: {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU; held-out accuracy {held}, in-domain {inside}", flush=True)


def colour_check(folds: list[int], epochs: int, max_samples: int | None, seed: int = 0
                 ) -> str:
    """How much of a fold's held-out error is the colour rule flipping.

    ``digits`` colours each image by s = (y mod 2) XOR (domain index mod 2), so a held-out
    domain's colour-to-class rule is the opposite of both its neighbours'. For each fold,
    ``default`` at ``seed`` is trained alone (``trainer.fit``, same sizes; its held-out
    accuracy equals the population member's) and q(y|zy) is read on the held-out domain:
    as given, the share of its predictions whose parity is wrong, and with every image
    recoloured to the hue of the other s (its own hue noise kept), i.e. the colour rule
    of the training domains' neighbours. Same for the in-domain validation split.
    """
    import tempfile

    import numpy as np
    import torch

    from trainer import fit
    from trainer._bundle import HUE_MEANS
    from trainer._data import hue_to_rgb, load_dataset
    from trainer._fit import build_model

    torch.set_num_threads(1)
    lines = ["| held-out domain | split | n | accuracy | predictions of wrong parity | "
             "accuracy, hue of the other s |", "|---|---|---|---|---|---|"]
    for fold in folds:
        cfg = run_config("default", seed, fold, epochs, max_samples)
        with tempfile.TemporaryDirectory() as tmp:
            fit(cfg, checkpoint_dir=tmp)
            ckpt = torch.load(Path(tmp) / "checkpoint.pt", map_location="cpu",
                              weights_only=True)
        data = load_dataset(cfg.data, cfg.data_seed)
        model = build_model(cfg, data)
        model.load_state_dict(ckpt["best_state"] or ckpt["model"])
        model.eval()
        for split in ("val", "val_domain"):
            idx = data.splits[split]
            y = data.y[idx]
            s = data.factors["s"][idx.numpy()]
            hue = (np.asarray(HUE_MEANS)[1 - s] + data.factors["hue_residual"][idx.numpy()]) % 1
            # colours are fully saturated at full value: the brightest channel is the grey
            grey = data.x[idx].amax(dim=1, keepdim=True)
            swapped = (grey * torch.from_numpy(hue_to_rgb(hue))[:, :, None, None]).clamp(0, 1)
            with torch.no_grad():
                pred, pred_swapped = model.predict_y(data.x[idx]), model.predict_y(swapped)
            lines.append(
                f"| {cfg.data.domains[fold]:g}° | {split} | {len(y)} | "
                f"{(pred == y).float().mean():.3f} | "
                f"{((pred % 2) != (y % 2)).float().mean():.3f} | "
                f"{(pred_swapped == y).float().mean():.3f} |")
    return "\n".join(lines)


def report(out: Path, settings: list[str]) -> str:
    """Markdown tables: held-out accuracy per domain and LODO mean, in-domain validation
    accuracy, and each setting against ``default`` (paired over seeds)."""
    from search.checks.paired import format_p, mean_sd_text, paired_by_seed
    from trainer import DataConfig

    domains = DataConfig().domains
    records = load_records(out)
    ok = [r for r in records if "final" in r]
    failed = [r for r in records if "error" in r]
    # acc[setting][metric][seed][fold]
    acc: dict[str, dict[str, dict[int, dict[int, float]]]] = {
        s: {HELD_OUT: {}, IN_DOMAIN: {}} for s in settings}
    for r in ok:
        if r["setting"] not in acc:
            continue
        for metric in (HELD_OUT, IN_DOMAIN):
            acc[r["setting"]][metric].setdefault(r["seed"], {})[r["fold"]] = \
                r["final"][metric]

    def lodo(setting: str, metric: str) -> dict[int, float]:
        """Per seed, the mean over folds (seeds with every fold only)."""
        return {seed: statistics.fmean(by_fold.values())
                for seed, by_fold in acc[setting][metric].items()
                if len(by_fold) == len(domains)}

    def per_domain(setting: str, metric: str, k: int) -> list[float]:
        return [f[k] for f in acc[setting][metric].values() if k in f]

    lines = []
    if records:
        meta = json.loads(out.read_text())["meta"]
        lines += [f"sizes: epochs={meta['epochs']}, max_samples={meta['max_samples']}, "
                  + ", ".join(f"{k}={v}" for k, v in meta["sizes"].items())
                  + f", split_seed={meta['split_seed']}", ""]
    for metric, title in ((HELD_OUT, "held-out domain accuracy (acc_y_val_domain)"),
                          (IN_DOMAIN, "in-domain validation accuracy (task_accuracy)")):
        lines += [f"**{title}**, mean ± sd over seeds (seeds with every fold: "
                  + ", ".join(f"{s} {len(lodo(s, metric))}" for s in settings) + ")", "",
                  "| held-out domain | " + " | ".join(settings) + " |",
                  "|---" * (1 + len(settings)) + "|"]
        for k, angle in enumerate(domains):
            lines.append(f"| {angle:g}° | " + " | ".join(
                mean_sd_text(per_domain(s, metric, k)) for s in settings) + " |")
        label = "LODO mean" if metric == HELD_OUT else "mean over folds"
        lines.append(f"| **{label}** | " + " | ".join(
            f"**{mean_sd_text(list(lodo(s, metric).values()))}**" for s in settings) + " |")
        lines.append("")

    lines += ["**extremes vs middle** (held-out accuracy; per seed, mean of 0° and 75° "
              "minus mean of 15°–60°; mean ± sd over seeds)", "",
              "| setting | 0° & 75° | 15°–60° | extremes − middle |", "|---|---|---|---|"]
    last = len(domains) - 1
    for s in settings:
        ext, mid, gap = [], [], []
        for by_fold in acc[s][HELD_OUT].values():
            if len(by_fold) < len(domains):
                continue
            e = statistics.fmean([by_fold[0], by_fold[last]])
            m = statistics.fmean([by_fold[k] for k in range(1, last)])
            ext.append(e), mid.append(m), gap.append(e - m)
        lines.append(f"| {s} | {mean_sd_text(ext)} | {mean_sd_text(mid)} | {mean_sd_text(gap)} |")
    lines.append("")

    base = lodo("default", HELD_OUT) if "default" in acc else {}
    others = [s for s in settings if s != "default"]
    if base and others:
        lines += ["**against default on the LODO mean** (paired over seeds: setting − "
                  "default; two-sided paired t test, unadjusted)", "",
                  "| setting | n | difference ± se | 95% CI | t | p |", "|---|---|---|---|---|---|"]
        for s in others:
            mine = lodo(s, HELD_OUT)
            d = paired_by_seed(mine, base)
            if d is None:
                lines.append(f"| {s} | {len(set(mine) & set(base))} | – | – | – | – |")
                continue
            lines.append(f"| {s} | {d.n} | {d.mean:+.3f} ± {d.se:.3f} | "
                         f"{d.low:+.3f} to {d.high:+.3f} | {d.t:.2f} | {format_p(d.p)} |")
        lines.append("")

    if ok:
        pops: dict[tuple, float] = {}
        for r in ok:
            pops[(r["fold"], tuple(map(tuple, r["population"])))] = r["population_wall_s"]
        lines.append(f"training + evaluation wall time: {sum(pops.values()):.0f} s over "
                     f"{len(pops)} populations ({len(ok)} runs)")
    if failed:
        lines.append("diverged: " + ", ".join(
            f"{r['setting']} seed {r['seed']} fold {r['fold']}" for r in failed))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/lodo.json"),
                   help="the results JSON (appended to; a rerun skips what it holds)")
    p.add_argument("--epochs", type=int, default=16, help="epochs per run (thirds)")
    p.add_argument("--max-samples", type=int, default=800,
                   help="digits images drawn (of 1797), each in all six domains")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="model seeds (the split is pinned: split_seed 0)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--report-only", action="store_true", help="train nothing; report --out")
    p.add_argument("--colour-check", type=int, nargs="+", metavar="FOLD",
                   help="only train default (first --seeds seed) on these folds and print "
                        "how much of the held-out error the colour rule explains")
    p.add_argument("--time-one", action="store_true",
                   help="only time fold 0's population of default x --seeds, and exit")
    args = p.parse_args(argv)
    if args.time_one:
        time_one(args.epochs, args.max_samples, args.seeds)
        return 0
    if args.colour_check:
        print(colour_check(args.colour_check, args.epochs, args.max_samples, args.seeds[0]))
        return 0
    if not args.report_only:
        t0 = time.perf_counter()
        train_missing(args.out, args.settings, args.seeds, args.epochs, args.max_samples)
        print(f"this invocation's training: {time.perf_counter() - t0:.0f} s wall", flush=True)
    print(report(args.out, args.settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

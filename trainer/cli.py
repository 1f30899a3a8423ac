"""``python -m trainer``: one staged training run from the command line.

Accepts the method's flags as users know them (``--staged_training --epochs 60
--stage1_epochs 30 --stage2_epochs 15 --independence_penalty 10.0
--no_independence_penalty --beta_annealing --out DIR``), dashed spellings too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from trainer import params
from trainer._config import (
    EARLY_STOPPING_METRICS,
    MODEL_ARCHS,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    flat_field_index,
)

#: the configuration the flags change when no --config file is given: staged training off
CLI_BASE = {"staged_training": False}


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--snake_case`` and its ``--dashed-case`` spelling."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*names, dest=name, **kwargs)


def _param_flags(p: argparse.ArgumentParser) -> None:
    """A flag per registry entry (``trainer.params``), with its help and default.

    A bool gets ``--NAME`` (and its ``off_flag``), unset meaning the config's setting; a
    choice parameter lists its allowed values (``RunConfig`` refuses others in one line).
    """
    for param in params.PARAMS:
        text = param.help.replace("%", "%%")
        if param.kind is bool:
            base = CLI_BASE.get(param.name, param.default)
            on = f" (None: the --config file's setting, else {'on' if base else 'off'})"
            group = p.add_mutually_exclusive_group() if param.off_flag else p
            _flag(group, param.name, action="store_true", default=None, help=text + on)
            if param.off_flag:
                off, off_help = param.off_flag
                _flag(group, off, action="store_true", default=None,
                      help=off_help.replace("%", "%%"))
            continue
        if param.share:
            text += f" (None: epochs // {param.share})"
        if param.allowed:
            text += f": {', '.join(map(str, param.allowed))}"
        kind = {int: int, float: float}.get(param.kind)
        _flag(p, param.name, **({"type": kind} if kind else {}), default=param.default,
              help=text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stagetune train",
        description="Staged training of a four-latent VAE (zy, za, zay, zx).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _flag(p, "epochs", type=int, default=OptimConfig.epochs, help="epoch budget of the run")
    _param_flags(p)
    _flag(p, "penalty_in_stage3", action="store_true",
          help="keep the independence penalty on in stage 3")
    _flag(p, "beta_annealing", action="store_true", help="anneal the KL weights from 0")
    _flag(p, "variant", default=ModelConfig.variant, help="staged (zy, za, zay, zx) or diva")
    _flag(p, "arch", choices=MODEL_ARCHS, default=ModelConfig.arch,
          help="encoders/decoder: mlp, conv, or auto (the data set's default)")
    _flag(p, "conv_channels", type=int, default=ModelConfig.conv_channels,
          help="channels of the first conv block (--arch conv)")
    _flag(p, "image_size", type=int, default=DataConfig.image_size,
          help="side of the (square) images in pixels (None: the data set's native size)")
    _flag(p, "dataset", default=DataConfig.dataset, help="data set name")
    _flag(p, "data_root", default=None, help="folder of downloaded data sets")
    _flag(p, "test_domain", type=int, default=None, help="domain index held out entirely")
    _flag(p, "val_domain", type=int, default=None,
          help="domain index held out of training as out-of-domain validation (metric "
               "acc_y_val_domain; camelyon17: 1, WILDS' OOD val hospital)")
    _flag(p, "max_samples", type=int, default=None, help="cap on samples (None: all)")
    _flag(p, "seed", type=int, default=0, help="random seed (data split, init, batches)")
    _flag(p, "split_seed", type=int, default=None,
          help="seed of the data split alone (None: --seed's)")
    _flag(p, "lr", type=float, default=OptimConfig.lr, help="Adam learning rate")
    _flag(p, "batch_size", type=int, default=OptimConfig.batch_size, help="batch size")
    _flag(p, "patience", type=int, default=OptimConfig.patience,
          help="stage-3 epochs without a better --early_stopping_metric before stopping")
    _flag(p, "early_stopping_metric", choices=tuple(EARLY_STOPPING_METRICS),
          default=OptimConfig.early_stopping_metric,
          help="what stage-3 early stopping and the best weights follow: the validation "
               "loss, or val_acc_y_val_domain (maximised; needs --val_domain)")
    _flag(p, "device", default="auto", help="auto, cpu or cuda")
    _flag(p, "no_plots", action="store_true", help="skip the figures")
    _flag(p, "config", default=None, help="JSON file of a RunConfig (flags given override it)")
    _flag(p, "out", default="results", help="output directory")
    _flag(p, "resume", action="store_true", help="continue the run in --out from its checkpoint")
    _flag(p, "quiet", action="store_true", help="print only the final line and errors")
    return p


def _flat_value(cfg: RunConfig, name: str) -> Any:
    section = flat_field_index()[name]
    return getattr(getattr(cfg, section) if section else cfg, name)


def config_from_args(args: argparse.Namespace, argv: list[str]) -> RunConfig:
    """A RunConfig from the flags (and an optional base config file)."""
    base = RunConfig.from_dict(json.loads(Path(args.config).read_text())) if args.config \
        else RunConfig().replace(**CLI_BASE)
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    flat = {
        "penalty_in_stage3": args.penalty_in_stage3 or base.stages.penalty_in_stage3,
        "beta_annealing": args.beta_annealing or base.optim.beta_annealing,
        "write_plots": not args.no_plots and base.write_plots,
    }
    names = ["epochs"]
    for param in params.PARAMS:
        if param.kind is not bool:
            names.append(param.name)
            continue
        value = _flat_value(base, param.name)
        if param.off_flag and getattr(args, param.off_flag[0]):
            value = False
        elif getattr(args, param.name):
            value = True
        flat[param.name] = value
    for name in (*names, "variant", "arch", "conv_channels", "image_size", "dataset",
                 "data_root", "test_domain", "val_domain", "max_samples", "seed",
                 "split_seed", "lr", "batch_size", "patience", "early_stopping_metric",
                 "device"):
        if not args.config or name in given:
            flat[name] = getattr(args, name)
    return base.replace(**flat)


class EpochProgress:
    """Per-epoch lines; on a terminal also a bar over the epoch's batches.

    ``on_batch`` goes to ``fit``; ``report`` prints the epoch's line once it ends (above
    the bar on a terminal, a plain line in a log file).
    """

    def __init__(self, cfg: RunConfig, quiet: bool, stream=None, live: bool | None = None):
        self.cfg, self.quiet = cfg, quiet
        self.stream = stream or sys.stdout
        if live is None:
            live = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.live = live
        self._bar = None

    def on_batch(self, epoch: int, done: int, total: int) -> None:
        if not self.live:
            return
        if self._bar is None:
            from tqdm import tqdm

            from trainer._stages import stage_of

            self._bar = tqdm(total=total, file=self.stream, leave=False, unit="batch",
                             dynamic_ncols=True,
                             desc=f"epoch {epoch + 1}/{self.cfg.optim.epochs} stage "
                                  f"{stage_of(epoch, self.cfg)}")
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def report(self, row: dict[str, float]) -> None:
        self.close()
        if self.quiet:
            return
        cfg = self.cfg
        e = int(row["epoch"])
        line = (
            f"epoch {e + 1:3d}/{cfg.optim.epochs} stage {int(row['stage'])} "
            f"c={row['capacity']:.2f} loss {row.get('train_loss', float('nan')):8.2f} "
            f"val {row['val_loss']:8.2f} acc_y {row['val_acc_y']:.3f}"
        )
        if "val_acc_y_val_domain" in row:
            line += f" acc_y_val_domain {row['val_acc_y_val_domain']:.3f}"
        if "val_zay_independence" in row:
            line += f" zay_indep {row['val_zay_independence']:.3f}"
        if row.get("train_penalty"):
            line += f" penalty {row['train_penalty']:.3f}"
        line += f" ({row['samples_per_s']:.0f} samples/s)"
        print(line, file=self.stream, flush=True)


def finished_run(cfg: RunConfig, out: Path) -> str | None:
    """How far the run in ``out`` went, if it is complete: its checkpoint (of this very
    configuration, else ``ConfigError``) ends its training and its final evaluation was
    written (``final_metrics.json``); ``None`` while there is something to resume.

    Raises:
        ConfigError: the checkpoint was written by another configuration, or is no
            stagetune checkpoint.
    """
    from trainer._fit import CHECKPOINT_NAME, load_checkpoint

    final = out / "final_metrics.json"
    if not final.is_file() or not (out / CHECKPOINT_NAME).is_file():
        return None
    ckpt = load_checkpoint(out / CHECKPOINT_NAME, cfg)
    epochs, trained = cfg.optim.epochs, int(ckpt["epoch"]) + 1
    if ckpt.get("stopped_early"):
        return f"stopped early after {trained} of {epochs} epochs; results in {final}"
    if trained < epochs:
        return None
    return f"{epochs} of {epochs} epochs; results in {final}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from trainer._fit import CHECKPOINT_NAME, DivergenceError, fit

    try:
        cfg = config_from_args(args, argv)
        out = Path(args.out)
        if not args.resume and (out / CHECKPOINT_NAME).exists():
            raise ConfigError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        if args.resume and (done := finished_run(cfg, out)) is not None:
            print(f"{out} holds a complete run ({done}); nothing to resume", flush=True)
            return 0
        if not args.quiet:
            st = cfg.stages
            penalty = (f"{st.penalty_measure} x {st.independence_penalty}"
                       if st.use_independence_penalty else "off")
            print(f"stagetune: {cfg.optim.epochs} epochs, stages "
                  f"{cfg.stage1_epochs}/{cfg.stage2_epochs}/"
                  f"{cfg.optim.epochs - cfg.stage3_start}, zay suppression "
                  f"{st.zay_suppression}, penalty {penalty} -> {out}", flush=True)
        t0 = time.perf_counter()
        progress = EpochProgress(cfg, args.quiet)
        try:
            result = fit(cfg, report=progress.report, on_batch=progress.on_batch,
                         checkpoint_dir=out, resume=args.resume, out_dir=out)
        finally:
            progress.close()
    except (ConfigError, DivergenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    f = result.final
    print(
        f"done in {time.perf_counter() - t0:.1f}s: acc_y val {f['acc_y_val']:.3f} "
        f"test {f['acc_y_test']:.3f}"
        + (f" val_domain {f['acc_y_val_domain']:.3f}" if "acc_y_val_domain" in f else "")
        + (f", zay_independence_score {f['zay_independence_score']:.3f}, "
           f"disentanglement_score {f['disentanglement_score']:.3f}, "
           f"zay active dims {int(f['zay_active_dims'])}"
           if "zay_independence_score" in f else "")
        + f"; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

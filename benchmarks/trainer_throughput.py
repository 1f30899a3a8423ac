"""Throughput of the staged trainer against a loop written the way the published code works.

Both train the same model on the same data with the same loss, in one process, side by
side. The reference loop does what the published code does: a DataLoader over the
tensors, separate encoder passes for the loss, for the independence penalty and for the
training metrics, and a host sync (``.item()``) per batch for logging.

    python benchmarks/trainer_throughput.py [--epochs 6] [--device cpu|cuda] [--repeats 2]

Prints samples/s of both, the ratio, and the validation loss each reaches.

With ``--arch conv`` it measures the convolutional model instead: the staged trainer's
samples/s on ``shapes`` images at each ``--sizes`` (default 28 64 96), default model
widths (``conv_channels`` 32, latents 16 each), batch 128, one epoch per stage:

    python benchmarks/trainer_throughput.py --arch conv [--device cuda] [--samples 4096]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from trainer import RunConfig, fit, load_dataset
from trainer._independence import independence_penalty
from trainer._model import staged_loss
from trainer._optimiser import clip_gradients, make_optimiser
from trainer._schedule import epoch_knobs
from trainer._setup import build_model, resolve_device
from trainer._validation import validate_epoch


def reference_loop(cfg: RunConfig, data) -> tuple[float, float, int]:
    """The published structure. Returns (train seconds, final val loss, samples seen).

    Schedule, optimiser, warm-up and clipping are the trainer's own (``trainer._schedule``,
    ``trainer._optimiser``),
    so the two loops optimise the same thing and differ only in how the loop is built.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data.to(device)
    model = build_model(cfg, data).to(device)
    idx = data.splits["train"].cpu()
    ds = TensorDataset(data.x[idx.to(device)].cpu(), data.y[idx.to(device)].cpu(),
                       data.a[idx.to(device)].cpu())
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True)
    opt, sched = make_optimiser(model, cfg, len(loader))
    seen, train_s = 0, 0.0
    log = []
    for epoch in range(cfg.optim.epochs):
        knobs = epoch_knobs(epoch, cfg, has_zay=model.has_zay)
        model.train()
        t0 = time.perf_counter()
        for x, y, a in loader:
            x, y, a = x.to(device), y.to(device), a.to(device)
            out = model(x, zay_gate=knobs.gate, zay_frozen=knobs.frozen)
            terms = staged_loss(model, out, x, y, a, cfg, capacity=knobs.capacity,
                                beta_scale=knobs.beta)
            loss = terms.total
            if knobs.penalty:  # re-encodes the batch, as _compute_independence_penalty does
                zay, zy, za = (model.encode(x, g)[0] for g in ("zay", "zy", "za"))
                loss = loss + knobs.penalty_weight * independence_penalty(
                    cfg.stages.penalty_measure, zay, zy, za)
            opt.zero_grad()
            loss.backward()
            clip_gradients(model, cfg.optim.grad_clip)
            opt.step()
            sched.step()
            with torch.no_grad():  # training metrics from yet another pass
                acc = (model.predict_y(x) == y).float().mean()
            log.append({"loss": loss.item(), "recon": terms.recon.item(), "acc": acc.item()})
            seen += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
    val = validate_epoch(model, data, cfg, capacity=1.0, beta=1.0)
    return train_s, float(val["val_loss"]), seen


def stagetune_loop(cfg: RunConfig, data) -> tuple[float, float, int]:
    rows = []
    fit(cfg, report=rows.append, data=data)
    train_s = sum(r["epoch_time_s"] for r in rows)
    seen = sum(r["samples_per_s"] * r["epoch_time_s"] for r in rows)
    return train_s, rows[-1]["val_loss"], round(seen)


def conv_throughput(size: int, *, device: str, samples: int, batch_size: int) -> dict:
    """samples/s of ``fit`` with ``--arch conv`` on ``shapes`` at ``size`` px, per stage.

    Three epochs, one per stage (stage 1: zay gated out and frozen; stage 2: ramped in,
    independence penalty on; stage 3: everything). The first epoch includes warm-up.
    """
    from trainer._shapes import shapes_bundle

    cfg = RunConfig().replace(
        dataset="shapes", image_size=size, max_samples=samples, arch="conv", epochs=3,
        stage1_epochs=1, stage2_epochs=1, staged_training=True, device=device,
        batch_size=batch_size, write_plots=False, eval_max_samples=500,
    )
    data = shapes_bundle(cfg.data, cfg.seed)
    rows = []
    t0 = time.perf_counter()
    fit(cfg, report=rows.append, data=data)
    wall = time.perf_counter() - t0
    return {
        "size": size,
        "train_samples": int(data.split_size("train")),
        "stage_samples_per_s": [r["samples_per_s"] for r in rows],
        "wall_s": wall,
    }


def main_conv(args: argparse.Namespace) -> None:
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"conv throughput: device {args.device} ({name}), torch threads "
          f"{torch.get_num_threads()}, {args.samples} shapes images, batch {args.batch_size}")
    print(f"{'size':>6} {'stage 1':>10} {'stage 2':>10} {'stage 3':>10}  samples/s   wall")
    results = []
    for size in args.sizes:
        r = conv_throughput(size, device=args.device, samples=args.samples,
                            batch_size=args.batch_size)
        s1, s2, s3 = r["stage_samples_per_s"]
        print(f"{size:>4}px {s1:>10.0f} {s2:>10.0f} {s3:>10.0f}  {r['wall_s']:>14.1f}s",
              flush=True)
        results.append(r)
    print(json.dumps({"device": args.device, "device_name": name, "results": results}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp",
                   help="mlp: trainer vs published loop; conv: conv samples/s per size")
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 96])
    p.add_argument("--samples", type=int, default=4096, help="shapes images (--arch conv)")
    args = p.parse_args()
    if args.arch == "conv":
        main_conv(args)
        return
    # penalty on for stage 2 and 3: the extra passes are where the published loop pays
    cfg = RunConfig().replace(epochs=args.epochs, stage1_epochs=args.epochs // 3,
                              stage2_epochs=args.epochs // 3, staged_training=True,
                              penalty_in_stage3=True, device=args.device, write_plots=False,
                              batch_size=args.batch_size, warmup_epochs=0)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.epochs} epochs, batch {args.batch_size}")
    results = {"reference": [], "stagetune": []}
    for r in range(args.repeats):  # interleaved, so drift on a shared machine hits both
        for name, loop in (("reference", reference_loop), ("stagetune", stagetune_loop)):
            data = load_dataset(cfg.data, cfg.data_seed)
            train_s, val_loss, seen = loop(cfg, data)
            results[name].append({"samples_per_s": seen / train_s, "val_loss": val_loss})
            print(f"  run {r + 1} {name:9s}: {seen / train_s:8.0f} samples/s, "
                  f"val loss {val_loss:.2f}")
    best = {k: max(v, key=lambda x: x["samples_per_s"]) for k, v in results.items()}
    ratio = best["stagetune"]["samples_per_s"] / best["reference"]["samples_per_s"]
    print(f"reference  {best['reference']['samples_per_s']:8.0f} samples/s  "
          f"val loss {best['reference']['val_loss']:.2f}")
    print(f"stagetune  {best['stagetune']['samples_per_s']:8.0f} samples/s  "
          f"val loss {best['stagetune']['val_loss']:.2f}")
    print(f"ratio      {ratio:.2f}x (target >= 2x at equal loss)")
    print(json.dumps({"ratio": ratio, **best}))


if __name__ == "__main__":
    main()

"""The staged training loop: ``fit(config, *, report, checkpoint_dir)``.

One forward pass per training batch; the loss, the independence penalty and the
training accuracies all reuse it. Batch statistics stay on the device and are read
back once per epoch. The loop knows nothing of logging or search: it calls ``report``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer._config import ConfigError, RunConfig
from trainer._data import DataBundle, check_evaluable, load_dataset
from trainer.metrics import epoch_proxies
from trainer._model import StagedVAE, resolve_arch, staged_loss
from trainer._stages import beta_scale, penalty_active, stage_of, zay_capacity

ReportFn = Callable[[dict[str, float]], None]
CHECKPOINT_NAME = "checkpoint.pt"


class DivergenceError(RuntimeError):
    """Training kept producing non-finite losses."""


@dataclass
class FitResult:
    """What a finished run returns."""

    config: RunConfig
    history: list[dict[str, float]]
    final: dict[str, float]
    stopped_early: bool
    best_epoch: int
    analysis: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunProgress:
    """A run's end-of-epoch state: its rows, the divergence streak, early stopping and the
    best weights. ``fit`` keeps one; ``fit_population`` keeps one per member."""

    cfg: RunConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = -1
    since_best: int = 0
    bad_streak: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False

    CHECKPOINTED = ("history", "best_loss", "best_epoch", "since_best", "bad_streak",
                    "best_state", "stopped_early")

    def checkpoint(self) -> dict[str, Any]:
        """The fields a checkpoint holds."""
        return {name: getattr(self, name) for name in self.CHECKPOINTED}

    def load(self, ckpt: dict[str, Any]) -> None:
        for name in self.CHECKPOINTED:
            setattr(self, name, ckpt.get(name, False) if name == "stopped_early" else ckpt[name])

    def end_epoch(self, row: dict[str, float], *, bad: int, batches_per_epoch: int,
                  epoch: int, stage: int, state: Callable[[], dict[str, torch.Tensor]]
                  ) -> None:
        """Apply the end-of-epoch rules to the epoch's ``row`` and keep it.

        Raises:
            DivergenceError: too many non-finite batches for too many epochs in a row.
        """
        o = self.cfg.optim
        if bad > o.max_bad_batch_fraction * batches_per_epoch:
            self.bad_streak += 1
            if self.bad_streak >= o.max_bad_epochs:
                raise DivergenceError(
                    f"training diverged: {bad}/{batches_per_epoch} batches had a non-finite "
                    f"loss for {self.bad_streak} epochs in a row (epoch {epoch}, stage "
                    f"{stage}); lower --lr or the loss weights"
                )
        else:
            self.bad_streak = 0
        # Early stopping only compares stage-3 losses: earlier stages optimise another
        # objective (zay suppressed or ramping), so their losses are not comparable.
        if stage == 3 and math.isfinite(row["val_loss"]):
            if row["val_loss"] < self.best_loss:
                self.best_loss, self.best_epoch, self.since_best = row["val_loss"], epoch, 0
                self.best_state = state()
            else:
                self.since_best += 1
                if self.since_best >= o.patience:
                    self.stopped_early = True
        row["stopped_early"] = float(self.stopped_early)
        self.history.append(row)

    def result(self, analysis: dict[str, Any], out_dir: str | Path | None = None
               ) -> FitResult:
        """The run's ``FitResult`` from its final evaluation (outputs written if asked)."""
        final = dict(analysis["metrics"])
        final["epochs_run"] = float(len(self.history))
        final["best_epoch"] = float(self.best_epoch)
        final["stopped_early"] = float(self.stopped_early)
        final["final_stage"] = float(self.history[-1]["stage"]) if self.history else 0.0
        result = FitResult(self.cfg, self.history, final, self.stopped_early, self.best_epoch,
                           analysis)
        if out_dir is not None:
            from trainer._outputs import write_run_outputs

            write_run_outputs(result, Path(out_dir))
        return result


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def build_model(cfg: RunConfig, data: DataBundle) -> StagedVAE:
    """The run's model, with ``--arch auto`` resolved to the data set's default."""
    return StagedVAE(
        cfg.model, input_shape=data.input_shape, n_classes=data.n_classes,
        n_domains=data.n_domains, arch=resolve_arch(cfg),
    )


@torch.no_grad()
def encode_split(
    model: StagedVAE, data: DataBundle, split: str, *, max_samples: int | None = None,
    chunk: int = 4096,
) -> dict[str, torch.Tensor]:
    """Encoder means of a split (optionally its first ``max_samples``), in chunks."""
    idx = data.splits[split]
    if max_samples is not None:
        idx = idx[:max_samples]
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    for start in range(0, idx.numel(), chunk):
        means = model.encode_means(data.x[idx[start : start + chunk]])
        for g, mu in means.items():
            parts[g].append(mu)
    return {g: torch.cat(v) for g, v in parts.items()}


@torch.no_grad()
def validate_epoch(
    model: StagedVAE, data: DataBundle, cfg: RunConfig, *, capacity: float, beta: float,
    chunk: int = 4096,
) -> dict[str, torch.Tensor]:
    """Validation loss (at posterior means), accuracies and disentanglement proxies (on
    posterior samples).

    All device tensors (read back once per epoch by the caller). The proxies
    (``trainer.metrics._proxies``) are the per-epoch stand-ins of every disentanglement
    metric the search can select.
    """
    model.eval()
    idx = data.splits["val"]
    sums = {"val_loss": 0.0, "val_acc_y": 0.0, "val_acc_a": 0.0}
    means: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    stds: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    gate = capacity if cfg.stages.zay_suppression == "gate" else 1.0
    for start in range(0, idx.numel(), chunk):
        b = idx[start : start + chunk]
        x, y, a = data.x[b], data.y[b], data.a[b]
        out = model(x, zay_gate=gate, sample=False)
        terms = staged_loss(model, out, x, y, a, cfg, capacity=capacity, beta_scale=beta)
        n = b.numel()
        sums["val_loss"] = sums["val_loss"] + terms.total * n
        sums["val_acc_y"] = sums["val_acc_y"] + (out["y_logits"].argmax(-1) == y).sum()
        sums["val_acc_a"] = sums["val_acc_a"] + (out["a_logits"].argmax(-1) == a).sum()
        for g, p in out["posteriors"].items():
            means[g].append(p.mu)
            stds[g].append((0.5 * p.logvar).exp())
    n_val = idx.numel()
    result = {k: v / n_val for k, v in sums.items()}
    if "zay" in means and n_val >= 8:
        factors: dict[str, tuple[torch.Tensor, int | None]] = {
            "y": (data.y[idx], data.n_classes), "a": (data.a[idx], data.n_domains)}
        for name, values in data.factors.items():
            if name in data.factor_groups:
                t = torch.from_numpy(values).to(idx.device)[idx]
                discrete = not t.is_floating_point()
                factors[name] = (t, int(values.max()) + 1 if discrete else None)
        # probes: fit on the sources with an even id, scored on the others
        half = data.source[idx] % 2 == 0
        one_sided = half.all() | (~half).all()  # a tensor: no host sync
        by_position = torch.arange(n_val, device=idx.device) % 2 == 0
        half = torch.where(one_sided, by_position, half)
        latents = {g: torch.cat(v) for g, v in means.items()}
        scales = {g: torch.cat(v) for g, v in stds.items()}
        result.update(epoch_proxies(latents, factors, data.factor_groups, half, std=scales))
    return result


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random state of the run, as tensors and plain Python values only (what
    ``torch.load(weights_only=True)`` accepts: no numpy objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "generator": gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """A config without the fields that may differ on resume (where it runs)."""
    out = copy.deepcopy(cfg_dict)
    out.pop("device", None)
    return out


def _flatten(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"optim": {"lr": ..}}`` -> ``{"optim.lr": ..}``."""
    flat: dict[str, Any] = {}
    for section, value in cfg_dict.items():
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[section] = value
    return flat


def load_checkpoint(path: Path, cfg: RunConfig) -> dict[str, Any]:
    """Load a checkpoint, refusing one written by another configuration.

    Only tensors and plain Python values are unpickled (``weights_only=True``): a
    tampered or foreign file cannot run code, it is refused.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # objects other than tensors and plain data
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"refusing checkpoint {path}: it holds objects other than tensors and plain "
            f"data, so it was tampered with or not written by stagetune ({detail[:200]})"
        ) from None
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"cannot read checkpoint {path}: {exc}") from exc
    check_checkpoint_config(ckpt, cfg, str(path))
    return ckpt


def check_checkpoint_config(ckpt: Any, cfg: RunConfig, name: str) -> None:
    """Refuse a checkpoint (``name`` says which, in the message) of another configuration."""
    raw = ckpt.get("config_json") if isinstance(ckpt, dict) else None
    if isinstance(ckpt, dict) and raw is None and isinstance(ckpt.get("config"), dict):
        raw = json.dumps(ckpt["config"])  # an entry written as a plain dict
    if not isinstance(raw, str):
        raise ConfigError(f"{name} is not a stagetune checkpoint")
    try:
        stored = RunConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name} holds an unreadable configuration: {exc}") from None
    theirs = _flatten(_comparable(stored.to_dict()))
    ours = _flatten(_comparable(cfg.to_dict()))
    diff = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    if diff:
        raise ConfigError(
            f"checkpoint {name} was written by another configuration (differs in "
            f"{', '.join(diff)}); resume with the same flags or choose another --out"
        )


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def fit(
    config: RunConfig,
    *,
    report: ReportFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    data: DataBundle | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> FitResult:
    """Train one staged run and evaluate it.

    Args:
        config: the whole configuration.
        report: called once per epoch with a flat ``dict[str, float]``.
        checkpoint_dir: where ``checkpoint.pt`` is written after every epoch.
        resume: continue from ``checkpoint_dir/checkpoint.pt`` (same config required).
        out_dir: where the final analysis files and plots go (none if ``None``).
        data: an already-loaded data set (tests and benchmarks); loaded by name if None.
        on_batch: called after every batch with ``(epoch, batches_done, batches_per_epoch)``
            (a progress bar; nothing is read back from the device for it).

    Returns:
        The history, the final metrics and the disentanglement analysis.

    Raises:
        ConfigError: bad configuration, missing data or a mismatched checkpoint.
        DivergenceError: the loss kept being non-finite.
    """
    cfg = config
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if data is None:
        data = load_dataset(cfg.data, cfg.seed)
    check_evaluable(data, cfg.data.dataset)
    data.to(device)
    model = build_model(cfg, data).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay)
    train_idx = data.splits["train"]
    n_train = train_idx.numel()
    bs = min(cfg.optim.batch_size, n_train)
    batches_per_epoch = math.ceil(n_train / bs)
    warmup_steps = max(1, cfg.optim.warmup_epochs * batches_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup_steps))
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    progress = RunProgress(cfg)
    start_epoch = 0
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise ConfigError(f"nothing to resume: no {CHECKPOINT_NAME} in {checkpoint_dir}")
        ckpt = load_checkpoint(ckpt_path, cfg)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(gen, ckpt["rng"])
        progress.load(ckpt)
        start_epoch = ckpt["epoch"] + 1
    elif ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    has_zay = model.has_zay
    mode = cfg.stages.zay_suppression
    for epoch in range(start_epoch, cfg.optim.epochs):
        if progress.stopped_early:
            break
        t0 = time.perf_counter()
        stage = stage_of(epoch, cfg)
        c = zay_capacity(epoch, cfg) if has_zay else 0.0
        beta = beta_scale(epoch, cfg)
        with_penalty = penalty_active(epoch, cfg)
        gate = c if mode == "gate" else 1.0
        frozen = has_zay and mode == "gate" and stage == 1
        model.train()
        perm = train_idx[torch.randperm(n_train, generator=gen, device=device)]
        sums: dict[str, torch.Tensor] = {}
        bad = 0
        for start in range(0, n_train, bs):
            b = perm[start : start + bs]
            x, y, a = data.x[b], data.y[b], data.a[b]
            out = model(x, zay_gate=gate, zay_frozen=frozen, generator=gen)
            terms = staged_loss(model, out, x, y, a, cfg, capacity=c, beta_scale=beta,
                                with_penalty=with_penalty)
            if not torch.isfinite(terms.total):
                bad += 1
                opt.zero_grad(set_to_none=True)
                continue
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            n = b.numel()
            batch_stats = {
                "train_loss": terms.total.detach() * n,
                "train_recon": terms.recon.detach() * n,
                "train_ce_y": terms.ce_y.detach() * n,
                "train_ce_a": terms.ce_a.detach() * n,
                "train_penalty": terms.penalty.detach() * n,
                "train_kl_zay_term": terms.kl_zay_term.detach() * n,
                "train_acc_y": (out["y_logits"].argmax(-1) == y).sum(),
                "train_acc_a": (out["a_logits"].argmax(-1) == a).sum(),
                "train_n": torch.tensor(n, device=device),
            }
            for g, v in terms.kl.items():
                batch_stats[f"train_kl_{g}"] = v.detach() * n
            for k, v in batch_stats.items():
                sums[k] = sums[k] + v if k in sums else v
            if on_batch is not None:
                on_batch(epoch, start // bs + 1, batches_per_epoch)
        val = validate_epoch(model, data, cfg, capacity=c, beta=beta)
        # One host sync per epoch: everything the epoch measured, read back together.
        keys = list(sums) + list(val)
        values = torch.stack([*(sums[k].float() for k in sums), *(val[k].float() for k in val)])
        read = dict(zip(keys, values.tolist(), strict=True))
        n_done = read.pop("train_n", 0.0)
        row: dict[str, float] = {
            "epoch": float(epoch), "stage": float(stage), "capacity": float(c),
            "beta_scale": float(beta), "penalty_active": float(with_penalty),
            "lr": float(opt.param_groups[0]["lr"]), "bad_batches": float(bad),
        }
        for k, v in read.items():
            row[k] = v / n_done if k.startswith("train_") and n_done else v
        elapsed = time.perf_counter() - t0
        row["epoch_time_s"] = elapsed
        row["samples_per_s"] = n_done / elapsed if elapsed > 0 else 0.0

        progress.end_epoch(
            row, bad=bad, batches_per_epoch=batches_per_epoch, epoch=epoch, stage=stage,
            state=lambda: {k: v.detach().clone() for k, v in model.state_dict().items()})
        if ckpt_path is not None:
            _atomic_save(
                {
                    "config_json": cfg.to_json(), "epoch": epoch, "stage": stage,
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": _rng_state(gen),
                    **progress.checkpoint(),
                },
                ckpt_path,
            )
        if report is not None:
            report(dict(row))

    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    from trainer._evaluation import evaluate  # the evaluation pulls in scikit-learn

    return progress.result(evaluate(model, data, cfg), out_dir)

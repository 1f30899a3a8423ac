"""Checkpoints: entries in one format, atomic writes, reads that refuse a tampered file or
another configuration, and the random state they capture and restore."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainer._config import ConfigError, RunConfig, flatten_config

if TYPE_CHECKING:
    from trainer._progress import ModelState, RunProgress


def checkpoint_path(checkpoint_dir: str | Path | None, name: str, *, resume: bool
                    ) -> Path | None:
    """Where the run's checkpoint ``name`` goes (None: no checkpoints).

    Raises:
        ConfigError: ``resume`` with no checkpoint to resume from.
    """
    path = Path(checkpoint_dir) / name if checkpoint_dir is not None else None
    if resume and (path is None or not path.exists()):
        raise ConfigError(f"nothing to resume: no {name} in {checkpoint_dir}")
    if path is not None and not resume:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def rng_state(gen: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state of a run (``gen``'s too if given), as tensors and plain Python
    values only (what ``torch.load(weights_only=True)`` accepts: no numpy objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {} if gen is None else {"generator": gen.get_state()}
    state |= {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    # a process that never started CUDA has no CUDA stream in use (reading one starts it)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator | None = None) -> None:
    """Restore what ``rng_state`` captured (``gen``'s state too if given)."""
    if gen is not None:
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


def checkpoint_entry(cfg: RunConfig, epoch: int, stage: int, *, model: ModelState,
                     optimizer: dict, scheduler: dict, rng: dict[str, Any],
                     progress: RunProgress, **extra: Any) -> dict[str, Any]:
    """A run's checkpoint after ``epoch``: what ``fit(resume=True)`` continues from."""
    return {"config_json": cfg.to_json(), "epoch": epoch, "stage": stage, "model": model,
            "optimizer": optimizer, "scheduler": scheduler, "rng": rng,
            **progress.checkpoint(), **extra}


def save_checkpoint(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` atomically: a crash mid-write leaves the last one whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, kind: str = "checkpoint") -> Any:
    """A checkpoint file's contents (``kind`` names it in messages).

    Only tensors and plain Python values are unpickled (``weights_only=True``): a
    tampered or foreign file cannot run code, it is refused.

    Raises:
        ConfigError: the file holds other objects, or cannot be read.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # objects other than tensors and plain data
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"refusing {kind} {path}: it holds objects other than tensors and plain "
            f"data, so it was tampered with or not written by stagetune ({detail[:200]})"
        ) from None
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"cannot read {kind} {path}: {exc}") from exc


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
    theirs = flatten_config(_comparable(stored.to_dict()))
    ours = flatten_config(_comparable(cfg.to_dict()))
    diff = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    if diff:
        raise ConfigError(
            f"checkpoint {name} was written by another configuration (differs in "
            f"{', '.join(diff)}); resume with the same flags or choose another --out"
        )


def load_checkpoint(path: Path, cfg: RunConfig) -> dict[str, Any]:
    """Load a run's checkpoint, refusing a tampered one or one of another configuration."""
    ckpt = read_checkpoint(path)
    check_checkpoint_config(ckpt, cfg, str(path))
    return ckpt

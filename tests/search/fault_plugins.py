"""Data sets that fail on purpose, for the fault tests (``--import tests.search.fault_plugins``).

``nan_digits``: the digits with every pixel NaN, so every batch's loss is non-finite and
the trainer raises ``DivergenceError`` after ``max_bad_epochs`` epochs: a deterministic
error at a known epoch. Each load appends a line to ``<data_root>/loads.txt``, so a test
can count how many times a trial ran.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from trainer import register_dataset
from trainer._data import load_digits


@register_dataset("nan_digits")
def load_nan_digits(cfg, seed):
    with open(Path(cfg.data_root) / "loads.txt", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    bundle = load_digits(replace(cfg, dataset="digits"), seed)
    bundle.x = torch.full_like(bundle.x, float("nan"))
    return bundle

"""A data set that kills its worker process the first time it loads (worker failure)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from trainer import register_dataset
from trainer._data import load_digits


@register_dataset("flaky_digits")
def load_flaky(cfg, seed):
    marker = Path(cfg.data_root) / "crashed-once"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)  # the worker dies, as on a lost node
    return load_digits(replace(cfg, dataset="digits"), seed)

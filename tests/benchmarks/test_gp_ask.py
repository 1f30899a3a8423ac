"""``benchmarks/gp_ask.py``: the GP sampler suggests the same settings whether its
acquisition restarts run batched (``greenlet``) or one by one, and the blocked process
really runs without greenlet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gp_ask.py"


def _child(block: bool) -> str:
    command = [sys.executable, str(SCRIPT), "--child", "6", "--asks", "2"]
    if block:
        command.append("--block-greenlet")
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def test_batched_and_sequential_restarts_suggest_the_same_settings():
    import json

    # 6 finished trials: past the GP's 5 random start-up trials, so both asks are the GP's
    batched, sequential = json.loads(_child(False)), json.loads(_child(True))
    assert batched["greenlet"] and not sequential["greenlet"]
    assert len(batched["params"]) == 2
    assert batched["params"] == sequential["params"]

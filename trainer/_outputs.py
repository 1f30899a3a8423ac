"""Files a run leaves in ``--out``: config, metrics, the analysis and its figures."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.figures import (
    correlation_heatmap,
    correlation_heatmap_png,
    export_figures,
    label_prediction_figure,
    label_prediction_png,
)

if TYPE_CHECKING:
    from trainer._fit import FitResult


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def write_history(history: list[dict[str, float]], out: Path) -> None:
    """Per-epoch metrics as JSON lines and CSV."""
    with open(out / "metrics.jsonl", "w") as fh:
        for row in history:
            fh.write(json.dumps(row) + "\n")
    if history:
        keys = sorted({k for row in history for k in row})
        with open(out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def write_run_outputs(result: FitResult, out: Path) -> None:
    """Everything a finished run writes into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(result.config.to_dict(), out / "config.json")
    write_history(result.history, out)
    _write_json(result.final, out / "final_metrics.json")
    _write_json(result.analysis, out / "disentanglement_analysis.json")
    if result.config.write_plots:
        write_figures(result.analysis, out)


def write_figures(analysis: dict[str, Any], out: Path) -> list[Path]:
    """The method's two figures as HTML and PNG; the PNGs by matplotlib where plotly's
    static export has no browser, so every machine gets them."""
    correlations, probe_accuracy = analysis["correlations"], analysis["probe_accuracy"]
    return export_figures(
        {"correlation_heatmap": correlation_heatmap(correlations),
         "label_prediction_accuracy": label_prediction_figure(probe_accuracy)},
        out,
        static_drawers={
            "correlation_heatmap": lambda path, scale: correlation_heatmap_png(
                correlations, path, scale),
            "label_prediction_accuracy": lambda path, scale: label_prediction_png(
                probe_accuracy, path, scale),
        },
    )

"""The method's two PNG figures on a machine without Chromium: drawn by matplotlib."""

from __future__ import annotations

import importlib.util
import logging
import struct

import numpy as np
import pytest

from trainer import figures

RUN_PNGS = {"correlation_heatmap.png": (1200, 560), "label_prediction_accuracy.png": (800, 480)}


@pytest.fixture
def no_browser(monkeypatch, tmp_path):
    """kaleido finds no browser: BROWSER_PATH (which it reads first) names a missing file.
    The export warning is reset so this process says it again."""
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium-here"))
    monkeypatch.setattr(figures, "_static_export_warned", False)


def _png_header(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.mark.usefixtures("one_thread", "no_browser")
def test_a_run_without_chromium_writes_both_pngs_with_matplotlib(tiny, tmp_path, caplog):
    import matplotlib.image

    from trainer import fit

    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="stagetune.figures"):
        fit(tiny(epochs=2, stage1_epochs=1, stage2_epochs=1, write_plots=True), out_dir=out)
    for name, size in RUN_PNGS.items():
        path = out / name
        assert _png_header(path) == size  # the plotly figure's own layout size
        assert path.stat().st_size > 10_000
        pixels = matplotlib.image.imread(path)[..., :3]
        # a drawn figure, not a blank canvas: many colours, white not everywhere
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
        assert (pixels < 0.9).any(axis=-1).mean() > 0.05
        assert (out / name.replace(".png", ".html")).exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    if importlib.util.find_spec("kaleido"):  # else the warning names kaleido's install
        assert "Chromium" in warnings[0] and "apt-get install chromium" in warnings[0]
    assert warnings[0].endswith("label_prediction_accuracy.png with matplotlib instead")


@pytest.mark.usefixtures("no_browser")
def test_figures_without_a_static_drawer_stay_html_only(tmp_path):
    import plotly.graph_objects as go

    assert figures.export_png({"bars": go.Figure(go.Bar(x=["a"], y=[1]))}, tmp_path) == []
    assert not (tmp_path / "bars.png").exists()


def test_the_export_warning_quotes_a_long_cause_in_whole_words():
    cause = ("the renderer stopped because " + "something rather verbose happened, " * 8
             + "and installation instructions follow")
    msg = figures._export_failure(RuntimeError(cause))
    assert "\n" not in msg and msg.endswith("'apt-get install chromium' provides one)")
    quoted = msg.split("RuntimeError: ", 1)[1].split(" ...", 1)[0]
    assert len(quoted) <= figures.CAUSE_CHARS
    assert set(quoted.replace(",", "").split()) <= set(cause.replace(",", "").split())
    assert cause.startswith(quoted)  # a prefix of whole words: no word is cut in two
    assert cause[len(quoted)] in " ,"

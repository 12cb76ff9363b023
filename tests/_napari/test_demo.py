"""``napari-pix2pix demo`` without a display: train, restore, figure and metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_pix2pix import _demo


@pytest.fixture
def one_torch_thread():
    """One thread: on a shared 2-core machine two OpenMP threads can run many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("bundled", [True, False])
def test_headless_demo_writes_figure_and_metrics(tmp_path, monkeypatch, capsys, one_torch_thread, bundled):
    from napari_pix2pix.engine import registry

    if not bundled:  # as in a build without pretrained models: it trains a tiny denoiser
        monkeypatch.setattr(registry, "default_model_name", lambda task: None)
    else:
        assert registry.default_model_name("denoise") is not None, "the bundled denoiser ships in the package"
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(_demo.sys, "platform", "linux")
    assert not _demo.has_display()
    # no display: even headless=False runs the headless pipeline (a few steps keep it fast)
    assert _demo.run_demo(headless=False, out=tmp_path, steps=4) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("noisy", "restored"):
        assert set(metrics[key]) == {"psnr", "ssim"} and np.isfinite(metrics[key]["psnr"])
    assert 15 < metrics["noisy"]["psnr"] < 20  # the sample's noise level
    fig = Image.open(tmp_path / "demo_comparison.png")
    assert fig.size[0] > 3 * 384 and fig.size[1] > 384
    assert (tmp_path / "demo-denoiser.safetensors").is_file() is not bundled
    if bundled:  # the bundled denoiser never saw this image (phantom seed 4; training uses 1000-1047)
        assert "bundled model" in metrics["model"]
        assert metrics["restored"]["psnr"] > metrics["noisy"]["psnr"] + 8
    out = capsys.readouterr().out
    assert "restored PSNR" in out and "metrics.json" in out


@pytest.mark.parametrize("env, platform, expected", [
    ({"DISPLAY": ":0"}, "linux", True), ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
    ({}, "linux", False), ({}, "darwin", True), ({}, "win32", True),
])
def test_has_display(monkeypatch, env, platform, expected):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(_demo.sys, "platform", platform)
    assert _demo.has_display() is expected


@pytest.mark.gui
def test_gui_demo_docks_the_widgets(monkeypatch, qtbot):
    import napari

    from napari_pix2pix.engine.registry import default_model_name

    monkeypatch.setattr(napari, "run", lambda *a, **k: None)
    assert _demo._gui() == 0
    viewer = napari.current_viewer()
    try:
        assert {"noisy", "clean reference"} <= {layer.name for layer in viewer.layers}
        docks = viewer.window.dock_widgets  # name -> the widget inside; its parent is the dock
        names = " ".join(docks)
        assert "Denoise" in names and "Train" in names
        if default_model_name("denoise") is not None:  # the bundled denoiser in front, ready to run
            inner = next(w for k, w in docks.items() if "Denoise" in k)
            denoise = getattr(inner, "native", inner).parent()
            assert denoise.isVisible() and not denoise.visibleRegion().isEmpty()
    finally:
        viewer.close()

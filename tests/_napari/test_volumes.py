"""Volumes in napari (Xvfb): the Train widget trains a tiny 3D model, Denoise applies it to the volume."""

from __future__ import annotations

import napari  # noqa: E402, F401 - the testing extra has these: a missing package must fail CI
import numpy as np
import pytest
import pytestqt  # noqa: E402, F401

from napari_pix2pix import load_model
from napari_pix2pix._napari._qt.restore import DenoiseWidget
from napari_pix2pix._napari._qt.train import PREVIEW_NAME, TrainWidget

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _volume(shape=(16, 80, 80), seed=0):
    zz, yy, xx = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    clean = (np.sin(yy / 6 + seed) * np.cos(xx / 8) + 0.5 * np.sin(zz / 3)) * 0.3 + 0.5
    noisy = clean + np.random.default_rng(seed).normal(0, 0.1, shape).astype(np.float32)
    return clean.astype(np.float32), noisy.astype(np.float32)


def test_train_3d_from_volume_layers_and_denoise_the_volume(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    clean, noisy = _volume()
    viewer.add_image(clean, name="clean")
    src = viewer.add_image(noisy, name="noisy")
    viewer.add_image(noisy[0], name="one plane")
    before = src.data.copy()

    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._config_overrides = {"generator": {"ngf": 4}, "ndf": 4, "n_layers": 2}
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("denoise"))
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("layers"))
    w._settings._dims_combo.setCurrentIndex(w._settings._dims_combo.findData("3d"))
    assert w._settings._preset_combo.currentData() == "unet3d_tiny" and not w._settings._patch_spin.isEnabled()
    assert w._settings._start_combo.findData("denoise") >= 0  # the 2D bundled denoiser starts a 3D run (inflated)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    w._settings._batch_spin.setValue(1)
    w.set_steps(3)
    w._settings._val_every_spin.setValue(3)
    w._settings._output.setText(str(tmp_path / "vol.safetensors"))
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._start_btn.click()
    assert blocker.args[0] == "finished", w._status.text()
    path = tmp_path / "vol.safetensors"
    assert load_model(path).spatial_dims == 3
    assert viewer.layers[PREVIEW_NAME].data.ndim == 2  # the preview: the middle plane of the patch

    d = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(d)
    assert d.use_model_file(path), d._status.text()
    d._image_combo.set_layer("one plane")
    d._run_btn.click()
    assert d._status.is_error and "3D model" in d._status.text() and "single plane" in d._status.text()
    d._image_combo.set_layer("noisy")
    assert not d._scope_combo.isEnabled()  # a 3D model restores the whole volume
    with qtbot.waitSignal(d.done, timeout=TIMEOUT) as blocker:
        d._run_btn.click()
    assert blocker.args[0] == "finished", d._status.text()
    out = viewer.layers["noisy denoised"]
    assert out.data.shape == noisy.shape and not np.array_equal(out.data, noisy)
    np.testing.assert_array_equal(src.data, before)  # the input layer is never modified


def test_a_multiscale_layer_is_restored_into_a_lazy_multiscale_zarr_layer(make_napari_viewer, qtbot, tmp_path,
                                                                           tiny_model_files):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    full = (rng.random((600, 520)) * 3000 + 100).astype(np.uint16)
    viewer.add_image([full, full[::2, ::2]], name="slide", multiscale=True)
    d = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(d)
    assert d.use_model_file(tiny_model_files["denoise"]), d._status.text()
    d._big_dir.setText(str(tmp_path))
    d._image_combo.set_layer("slide")
    with qtbot.waitSignal(d.done, timeout=TIMEOUT) as blocker:
        d._run_btn.click()
    assert blocker.args[0] == "finished", d._status.text()
    out = viewer.layers["slide denoised"]
    assert out.multiscale and [tuple(a.shape) for a in out.data] == [(600, 520), (300, 260)]
    assert (tmp_path / "slide-denoised.zarr").is_dir()
    assert not isinstance(out.data[0], np.ndarray)  # lazy: read from the store
    d._uncertainty_check.setChecked(True)
    d._run_btn.click()
    assert d._status.is_error and "zarr" in d._status.text()

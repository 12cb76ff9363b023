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
    w._data._input_combo.set_layer("one plane")
    w._settings._dims_combo.setCurrentIndex(w._settings._dims_combo.findData("3d"))
    # said when chosen, not only at Start: a single plane for a 3D network
    assert w._status.is_error and "single plane" in w._status.text() and "one plane" in w._status.text()
    w._settings._dims_combo.setCurrentIndex(w._settings._dims_combo.findData("2.5d"))
    assert "2.5D" in w._status.text()
    w._settings._dims_combo.setCurrentIndex(w._settings._dims_combo.findData("3d"))
    assert w._settings._preset_combo.currentData() == "unet3d_tiny" and not w._settings._patch_spin.isEnabled()
    assert w._settings._start_combo.findData("denoise") >= 0  # the 2D bundled denoiser starts a 3D run (inflated)
    w._data._input_combo.set_layer("noisy")
    assert w._status.text() == ""  # a stack now: the problem is gone
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
    d._image_combo.set_layer("one plane")  # said when chosen, and again at Run
    assert d._status.is_error and "3D model" in d._status.text() and "single plane" in d._status.text()
    d._status.info("")
    d._run_btn.click()
    assert d._status.is_error and "3D model" in d._status.text() and "single plane" in d._status.text()
    d._image_combo.set_layer("noisy")
    assert d._status.text() == ""
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


def _denoise_a_slide(viewer, full, model_file, folder):
    """A Denoise widget set to restore the multiscale layer "slide" (level 0: `full`) into a store in `folder`."""
    viewer.add_image([full, full[:, ::2, ::2]], name="slide", multiscale=True)
    d = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(d)
    assert d.use_model_file(model_file), d._status.text()
    d._big_dir.setText(str(folder))
    d._image_combo.set_layer("slide")
    return d


@pytest.fixture
def _clusters():
    """Close the local clusters the widgets start (they are kept for the session otherwise)."""
    from napari_pix2pix._napari.jobs import close_clusters

    yield
    close_clusters()


def test_compute_on_a_local_cluster_drives_the_same_engine_call_and_is_remembered(
        make_napari_viewer, qtbot, tmp_path, tiny_model_files, _clusters):
    from napari_pix2pix._napari.choices import compute_setting

    viewer = make_napari_viewer()
    full = (np.random.default_rng(1).random((3, 300, 260)) * 3000 + 100).astype(np.uint16)
    d = _denoise_a_slide(viewer, full, tiny_model_files["denoise"], tmp_path)
    assert not d._advanced.is_expanded()  # folded away: the defaults run here
    d._advanced.expand()
    where = d._compute._where
    where.setCurrentIndex(where.findData("local"))
    d._compute._workers.setValue(2)
    assert not d._compute._workers.isHidden() and d._compute._address.isHidden()
    assert compute_setting().where == "local" and compute_setting().workers == 2  # remembered at once
    calls = []
    from napari_pix2pix._napari import jobs

    real = jobs.cluster_client
    jobs.cluster_client = lambda address, workers: (calls.append((address, workers)), real(address, workers))[1]
    try:
        with qtbot.waitSignal(d.done, timeout=TIMEOUT) as blocker:
            d._run_btn.click()
    finally:
        jobs.cluster_client = real
    assert blocker.args[0] == "finished", d._status.text()
    assert calls == [(None, 2)]  # the widget's choice reached the engine call
    out = viewer.layers["slide denoised"]
    expect = load_model(tiny_model_files["denoise"]).predict(full)  # the widget's defaults are predict's
    assert np.array_equal(np.asarray(out.data[0]), expect)  # the same result as in this process
    again = DenoiseWidget(viewer)  # a new widget (a new session) starts from the remembered choice
    assert again._compute.setting().where == "local" and again._compute._workers.value() == 2
    again._compute._where.setCurrentIndex(again._compute._where.findData("scheduler"))
    again._image_combo.set_layer("slide")
    again._run_btn.click()
    assert again._status.is_error and "scheduler's address" in again._status.text()


def test_a_cancelled_store_prediction_keeps_its_blocks_and_the_next_run_continues(
        make_napari_viewer, qtbot, tmp_path, tiny_model_files):
    from napari_pix2pix.engine.images import zarrstore

    viewer = make_napari_viewer()
    full = (np.random.default_rng(2).random((4, 256, 256)) * 3000 + 100).astype(np.uint16)
    d = _denoise_a_slide(viewer, full, tiny_model_files["denoise"], tmp_path)
    marked = []
    real = zarrstore.ZarrTarget.mark_done

    def mark(self, i):
        marked.append(i)
        real(self, i)
        if len(marked) == 2:
            d._cancel.set()  # Cancel, after two of the four planes

    zarrstore.ZarrTarget.mark_done = mark
    try:
        with qtbot.waitSignal(d.done, timeout=TIMEOUT) as blocker:
            d._run_btn.click()
        assert blocker.args[0] == "cancelled"
        assert "kept in .slide-denoised.zarr.partial" in d._status.text() and "continue" in d._status.text()
        assert (tmp_path / ".slide-denoised.zarr.partial").is_dir() and not (tmp_path / "slide-denoised.zarr").exists()
        with qtbot.waitSignal(d.done, timeout=TIMEOUT) as blocker:
            d._run_btn.click()
    finally:
        zarrstore.ZarrTarget.mark_done = real
    assert blocker.args[0] == "finished", d._status.text()
    assert sorted(marked) == [0, 1, 2, 3]  # the two missing planes only, the second time
    out = viewer.layers["slide denoised"]
    assert np.array_equal(np.asarray(out.data[0]), load_model(tiny_model_files["denoise"]).predict(full))


def test_cancel_during_a_long_3d_prediction_gives_the_widget_back_within_10_s(make_napari_viewer, qtbot):
    """The bundled denoise3d with 16 flips averaged on the volume sample (a minute's work here): Cancel mid-run."""
    import time

    from napari_pix2pix._napari.sample_data import volume_sample

    viewer = make_napari_viewer()
    for data, kw, _ in volume_sample():
        viewer.add_image(data, **kw)
    d = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(d)
    assert d._models.choose_bundled("denoise3d")
    d._image_combo.set_layer("noisy volume")
    d._tta_check.setChecked(True)
    with qtbot.waitSignal(d.done, timeout=TIMEOUT) as blocker:
        d._run_btn.click()
        qtbot.waitUntil(lambda: "tiles" in d._status.text(), timeout=TIMEOUT)  # computing
        qtbot.wait(500)
        t = time.perf_counter()
        d._cancel_btn.click()
    waited = time.perf_counter() - t
    assert blocker.args[0] == "cancelled" and d._run_btn.isEnabled()
    assert waited < 10, f"the widget came back {waited:.1f} s after Cancel"
    assert "noisy volume denoised" not in viewer.layers

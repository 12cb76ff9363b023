"""What a new user runs into in napari: each item of the napari-experience issue, driven as a user does (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QLabel

import napari_pix2pix as p2p
from napari_pix2pix import Pix2PixModel
from napari_pix2pix._napari._qt import restore as restore_mod
from napari_pix2pix._napari._qt import train as train_mod
from napari_pix2pix._napari._qt.restore import DenoiseWidget
from napari_pix2pix._napari._qt.train import PREVIEW_NAME, PREVIEW_UNCERTAINTY_NAME, TrainWidget
from napari_pix2pix.engine.images import phantoms

pytestmark = pytest.mark.gui
TIMEOUT = 120_000
TINY = {"generator": {"ngf": 4, "levels": 3}, "ndf": 8, "n_layers": 2}


def _pair(viewer, shape=(96, 96), names=("noisy", "clean")):
    clean = phantoms.fluorescence(shape, seed=3)
    noisy = clean + np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
    viewer.add_image(noisy, name=names[0])
    viewer.add_image(clean, name=names[1])


def _train(viewer, tmp_path, steps=4, name="denoise"):
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._config_overrides = dict(TINY)
    w._settings._patch_spin.setValue(32)
    w._settings._batch_spin.setValue(2)
    w.set_steps(steps)
    w._settings._val_every_spin.setValue(2)
    w._settings._output.setText(str(tmp_path / f"{name}.safetensors"))
    return w


def _done(qtbot, w, button):
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        button.click()
    return blocker.args[0]


def _notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


# 1 ---------------------------------------------------------------------------------------------
def test_a_runtime_error_ends_the_run_with_a_message_and_usable_buttons(make_napari_viewer, qtbot, monkeypatch,
                                                                        tiny_model_files):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="img")
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.use_model_file(tiny_model_files["denoise"])

    def out_of_memory(*args, **kwargs):
        yield p2p.Progress(0, 0, "loading the model")
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(restore_mod, "predict_job", out_of_memory)
    before = len(_notifications())
    assert _done(qtbot, w, w._run_btn) == "failed"
    text = w._status.text()
    assert w._status.is_error and "Denoise failed: CUDA out of memory" in text
    assert "smaller tile size" in text and "CPU" in text  # what to do about it
    assert w._run_btn.isEnabled() and not w._cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: len(_notifications()) > before, timeout=5000)  # napari's notification
    assert any("out of memory" in n for n in _notifications()[before:])


def test_training_errors_end_the_run_and_a_gray_colorize_target_is_refused(make_napari_viewer, qtbot, tmp_path,
                                                                           monkeypatch):
    viewer = make_napari_viewer()
    _pair(viewer)
    w = _train(viewer, tmp_path)
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("colorize"))
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("layers"))
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    w._start_btn.click()
    assert not w._runner.running and w._status.is_error and "grayscale" in w._status.text()

    def diverging(*args, **kwargs):
        yield from ()
        raise RuntimeError("shape mismatch in a convolution")

    monkeypatch.setattr(train_mod, "train_job", diverging)
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("denoise"))
    assert _done(qtbot, w, w._start_btn) == "failed"
    assert "Training failed: shape mismatch" in w._status.text()
    assert w._start_btn.isEnabled() and w._resume_btn.isEnabled() and not w._stop_btn.isEnabled()


# 2 ---------------------------------------------------------------------------------------------
def test_input_and_target_start_on_different_layers_and_the_same_layer_is_caught(make_napari_viewer, qtbot,
                                                                                  tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer, names=("noisy", "clean reference"))
    viewer.layers.selection.active = viewer.layers["noisy"]
    _, w = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Train")  # napari hands it a proxy viewer
    assert w._data._input_combo.currentData() == "noisy"
    assert w._data._target_combo.currentData() == "clean reference"  # preselected: a different, fitting layer
    w._data._target_combo.set_layer("noisy")
    w._start_btn.click()
    assert w._status.is_error and "same layer" in w._status.text() and not w._runner.running


# 3 ---------------------------------------------------------------------------------------------
def test_closing_the_dock_stops_the_training_and_saves_it(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    dock, w = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Train")
    w._config_overrides = dict(TINY)
    w._settings._patch_spin.setValue(32)
    w._settings._batch_spin.setValue(2)
    w.set_steps(100_000)
    w._settings._output.setText(str(tmp_path / "closed.safetensors"))
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._start_btn.click()
        qtbot.waitUntil(lambda: w._progress._progress_bar.value() >= 2, timeout=TIMEOUT)
        viewer.window.remove_dock_widget(dock)  # the dock's ×: napari takes the widget out of the dock
    assert blocker.args[0] == "stopped"
    saved = Pix2PixModel.load(tmp_path / "closed.safetensors").training_summary
    assert saved["status"] == "stopped" and 2 <= saved["steps_done"] < 100_000


def test_closing_a_restoration_dock_cancels_its_run(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 512, 512)).astype(np.float32), name="stack")
    dock, w = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Denoise")
    assert w.use_model_file(tiny_model_files["denoise"])
    w._image_combo.set_layer("stack")
    w._tile_spin.setValue(64)
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._run_btn.click()
        qtbot.waitUntil(lambda: w._progress_bar.value() >= 1, timeout=TIMEOUT)
        viewer.window.remove_dock_widget(dock)
    assert blocker.args[0] == "cancelled" and "stack denoised" not in viewer.layers


# 4 ---------------------------------------------------------------------------------------------
def _dock_of(widget):
    from qtpy.QtWidgets import QDockWidget

    w = widget.parentWidget()
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def test_five_docks_share_tabs_instead_of_slivers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    win = viewer.window._qt_window
    win.resize(1366, 768)
    widgets = [viewer.window.add_plugin_dock_widget("napari-pix2pix", name)[1]
               for name in ("Denoise", "Inpaint", "Colorize", "Translate", "Train")]
    qtbot.wait(500)  # the docks join their tabs once napari has placed them
    docks = [_dock_of(w) for w in widgets]
    tabbed = set(win.tabifiedDockWidgets(docks[0])) | {docks[0]}
    assert tabbed >= set(docks)  # one tabbed dock, not five stacked slivers
    assert docks[-1].height() >= 400  # the tab shown (the one opened last) has the whole height


def test_the_docks_fit_a_laptop_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    _pair(viewer)
    win = viewer.window._qt_window
    win.resize(1366, 768)
    _, train = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Train")
    _, denoise = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Denoise")
    for _ in range(20):
        QApplication.processEvents()
    assert win.minimumSizeHint().width() <= 1366 and win.minimumSizeHint().height() <= 768
    assert win.width() <= 1366 and win.height() <= 768
    qtbot.wait(300)
    _dock_of(train).raise_()  # the plugin's docks share tabs: show the Train tab
    qtbot.wait(100)
    assert not train._settings._advanced.is_expanded()  # the rarely changed settings are folded away
    assert not train._settings._lr_spin.isVisible() and train._start_btn.isVisible()
    assert denoise._status.isVisible() or denoise._scroll.verticalScrollBar().maximum() > 0  # reachable
    assert train._progress._loss_plot.height() <= 110


# 5 ---------------------------------------------------------------------------------------------
def test_the_training_preview_is_on_screen_and_its_uncertainty_hidden(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    _pair(viewer, (128, 128))
    w = _train(viewer, tmp_path)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    assert _done(qtbot, w, w._start_btn) == "finished", w._status.text()
    preview = viewer.layers[PREVIEW_NAME]
    (lo, hi) = np.asarray(preview.extent.world)[:, -2:]
    center = np.asarray(viewer.camera.center)[-2:]
    width = viewer.window._qt_viewer.canvas.size[0] / viewer.camera.zoom  # world units across the canvas
    assert abs(center[1] - (lo[1] + hi[1]) / 2) < width / 2  # the preview's middle is in view
    assert not viewer.layers[PREVIEW_UNCERTAINTY_NAME].visible  # it would tint the output panel


def test_the_preview_of_small_patches_is_drawn_large_enough_to_read(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer, (1024, 1024))
    w = _train(viewer, tmp_path, steps=2)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    assert _done(qtbot, w, w._start_btn) == "finished", w._status.text()
    preview = viewer.layers[PREVIEW_NAME]
    (lo, hi) = np.asarray(preview.extent.world)[:, -2:]
    assert 0.2 * 1024 <= hi[0] - lo[0] <= 0.4 * 1024  # 32-px patches: zoomed by whole pixels, not a speck
    assert lo[1] > 1024  # beside the images, covering nothing
    spread = viewer.layers[PREVIEW_UNCERTAINTY_NAME]
    np.testing.assert_allclose(spread.scale, preview.scale)  # over the output panel, at the same zoom


def test_a_noisy_layer_given_as_the_clean_images_is_called_out(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pix2pix", "denoise")
    w = _train(viewer, tmp_path, steps=2)
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("clean"))
    w._data._clean_combo.set_layer("noisy")
    assert _done(qtbot, w, w._start_btn) == "finished", w._status.text()
    text = w._status.text()
    assert "Model saved" in text and "look noisy" in text and "learn from the noisy images alone" in text
    w._data._clean_combo.set_layer("clean reference")  # the real clean image: nothing to say
    assert _done(qtbot, w, w._start_btn) == "finished"
    assert "Model saved" in w._status.text() and "look noisy" not in w._status.text()


@pytest.mark.parametrize("sample, task, target", [("translate", "translate", "sharp target"),
                                                   ("colorize", "colorize", "colour reference"),
                                                   ("denoise", "denoise", "clean reference")])
def test_the_task_follows_the_sample(make_napari_viewer, qtbot, sample, task, target):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="mine")
    w = TrainWidget(viewer)  # opened first: the default task, on the user's layer
    viewer.window.add_dock_widget(w)
    w._data.set_task("inpaint")
    assert w._data.task() == "inpaint"
    viewer.open_sample("napari-pix2pix", sample)
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("layers"))
    w._data._input_combo.set_layer(next(lyr.name for lyr in viewer.layers
                                         if lyr.metadata.get("napari_pix2pix_sample", {}).get("role") == "input"))
    assert w._data.task() == task  # the sample's layer brings its task
    assert w._data._target_combo.currentData() == target
    opened_after = TrainWidget(viewer)  # opened on the sample: its task at once
    assert opened_after._data.task() == task


def test_the_inpaint_sample_trains_from_its_intact_image(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pix2pix", "inpaint")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w._data.task() == "inpaint" and w._data._source_combo.currentData() == "clean"
    assert w._data._clean_combo.currentData() == "intact reference"


# 6 ---------------------------------------------------------------------------------------------
def test_a_second_start_saves_a_new_model(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    w = _train(viewer, tmp_path, steps=2, name="mine")
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    assert _done(qtbot, w, w._start_btn) == "finished"
    first = (tmp_path / "mine.safetensors").read_bytes()
    assert _done(qtbot, w, w._start_btn) == "finished"
    assert (tmp_path / "mine.safetensors").read_bytes() == first  # untouched
    assert (tmp_path / "mine-2.safetensors").is_file() and "mine-2.safetensors" in w._status.text()


# 7 ---------------------------------------------------------------------------------------------
def test_uncertainty_on_the_denoise_sample_flags_little_and_keeps_the_result_readable(make_napari_viewer, qtbot):
    assert "denoise" in p2p.list_models(), "the bundled denoiser ships in the package"
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pix2pix", "denoise")
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.set_layer("noisy")
    w._uncertainty_check.setChecked(True)
    w._samples_spin.setValue(2)
    assert _done(qtbot, w, w._run_btn) == "finished", w._status.text()
    flagged_share = float(np.mean(viewer.layers["noisy flagged"].data)) if "noisy flagged" in viewer.layers else 0.0
    assert flagged_share <= 0.05, w._status.text()
    assert not viewer.layers["noisy uncertainty"].visible and not viewer.layers["noisy residual"].visible
    assert viewer.layers["noisy denoised"].visible


# 8, 9 -----------------------------------------------------------------------------------------
def test_model_names_fit_and_the_labels_speak_plainly(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    _, train = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Train")
    _, w = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Denoise")
    for _ in range(10):
        QApplication.processEvents()
    combo = w._models._model_combo
    text = combo.currentText()
    if combo.currentData() is not None:
        assert combo.fontMetrics().horizontalAdvance(text) < combo.width() - 20, text  # not cut
    labels = " | ".join(lbl.text() for lbl in train.findChildren(QLabel))
    for jargon in ("unet_tiny", "λ L1", "G_GAN", "G_L1", "Validation 0.10"):
        assert jargon not in labels
    assert "Held out" in labels and "Network size" in labels and "Start from" in labels
    assert train._settings._val_every_spin.suffix() == " steps" and train._settings._val_spin.suffix() == " %"
    s = train._settings
    assert s._recipe_combo.toolTip() and s._start_combo.toolTip() and s._val_spin.toolTip()


# 10 ---------------------------------------------------------------------------------------------
def test_small_things(make_napari_viewer, qtbot, tmp_path, tiny_model_files):
    viewer = make_napari_viewer()
    _pair(viewer)
    viewer.add_image(np.random.default_rng(0).random((3, 64, 64)).astype(np.float32), name="stack")
    w = _train(viewer, tmp_path, steps=2)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    assert _done(qtbot, w, w._start_btn) == "finished"
    bar = w._progress._progress_bar
    assert bar.value() == bar.maximum() and w._progress._loss_plot.points("G_L1")
    # a problem on the next Start: no 100 % bar and no last run's curves beside it
    w._data._target_combo.set_layer("stack")
    w._start_btn.click()
    assert w._status.is_error and w._progress._progress_bar.value() == 0 and not w._progress._loss_plot.points("G_L1")
    # a newly docked restoration widget chooses the model just trained; "Done" names the model
    d = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(d)
    assert d._models._model_combo.currentData().ref == str((tmp_path / "denoise.safetensors").resolve())
    d._image_combo.set_layer("noisy")
    assert _done(qtbot, d, d._run_btn) == "finished"
    assert "with denoise" in d._status.text() or "denoise.safetensors" in d._status.text() or \
        d._models._model_combo.currentData().name in d._status.text()
    # "Current plane only" is off in the 3D view (every plane is on screen there)
    d._image_combo.set_layer("stack")
    assert d._scope_combo.isEnabled()
    viewer.dims.ndisplay = 3
    assert not d._scope_combo.isEnabled() and d._scope_combo.currentData() == "stack"
    viewer.dims.ndisplay = 2
    assert d._scope_combo.isEnabled()


# 11 ---------------------------------------------------------------------------------------------
def test_a_public_way_to_show_a_result_from_the_console(make_napari_viewer, tiny_model_files):
    viewer = make_napari_viewer()
    src = viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="noisy", scale=(2, 3))
    out = p2p.denoise(src.data, model=tiny_model_files["denoise"])
    layer = p2p.add_result(viewer, src, out, "denoised")
    assert layer.name == "noisy denoised" and tuple(layer.scale) == (2, 3)
    assert p2p.add_result(viewer, src, out, "denoised") is layer  # a rerun updates it


def test_the_colorize_sample_is_h_and_e_and_gets_the_model_for_it(make_napari_viewer, qtbot):
    from napari_pix2pix._napari._qt.restore import ColorizeWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-pix2pix", "colorize")
    w = ColorizeWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image_combo.set_layer("grayscale H&E")
    info = w._models.current()
    if "colorize-he" in p2p.list_models():
        assert info.ref == "colorize-he"  # the sample's stain: the bundled model for it
        w._models._model_combo.setCurrentIndex(w._models._model_combo.findText("colorize (bundled)"))
        w._image_combo.set_layer("colour reference")
        w._image_combo.set_layer("grayscale H&E")
        assert w._models.current().ref == "colorize"  # chosen once: the user's choice is kept after
    assert "H&E" in w._help.text() and "IHC" in w._help.text()  # which stains the models are for

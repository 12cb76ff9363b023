"""Restoration widgets end to end on a real napari viewer (Xvfb), with tiny model files."""

from __future__ import annotations

import napari  # noqa: E402, F401 - the testing extra has these: a missing package must fail CI
import numpy as np
import pytest
import pytestqt  # noqa: E402, F401

from napari_pix2pix._napari._qt.restore import (  # noqa: E402
    ColorizeWidget,
    DenoiseWidget,
    InpaintWidget,
    TranslateWidget,
)
from napari_pix2pix._napari.choices import RECENT  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT = 60_000


def _dock(viewer, cls, model_file=None):
    widget = cls(viewer)
    viewer.window.add_dock_widget(widget)
    if model_file is not None:
        assert widget.use_model_file(model_file), widget._status.text()
    return widget


def _run(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.done, timeout=TIMEOUT) as blocker:
        widget._run_btn.click()
    return blocker.args[0]


def _image(shape=(96, 80), dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 3000 + 100).astype(dtype)


def test_denoise_end_to_end_metadata_and_rerun_in_place(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    src = viewer.add_image(_image(), name="noisy", scale=(0.5, 2.0), translate=(10, -5))
    before = src.data.copy()
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    assert w._tile_spin.text() == "auto"  # the default: the largest tile within the memory budget
    w._tile_spin.setValue(64)
    assert _run(qtbot, w) == "finished", w._status.text()
    out = viewer.layers["noisy denoised"]
    assert out.data.dtype == np.uint16 and out.data.shape == src.data.shape
    np.testing.assert_allclose(out.scale, (0.5, 2.0))
    np.testing.assert_allclose(out.translate, (10, -5))
    assert not np.array_equal(out.data, before)
    np.testing.assert_array_equal(src.data, before)
    assert out.metadata["napari_pix2pix"]["source"] == "noisy" and "Done" in w._status.text()
    # again: the output layer is updated, not duplicated
    n = len(viewer.layers)
    w._image_combo.set_layer("noisy")
    assert _run(qtbot, w) == "finished"
    assert len(viewer.layers) == n and viewer.layers["noisy denoised"] is out
    assert w._run_btn.isEnabled() and not w._cancel_btn.isEnabled()


def test_no_bundled_model_message_and_choose_file(make_napari_viewer, qtbot, tiny_model_files, monkeypatch):
    from napari_pix2pix._napari import choices as models

    monkeypatch.setattr(models, "bundled_paths", lambda: {})  # as in a build without pretrained models
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="x")
    w = _dock(viewer, DenoiseWidget)
    assert "No pretrained denoise model is bundled" in w._models._model_note.text()
    w._run_btn.click()
    assert w._status.is_error and "Choose a model" in w._status.text() and not w._runner.running
    # a model of another task is refused with a clear message
    assert not w.use_model_file(tiny_model_files["inpaint"])
    assert "does inpaint" in w._status.text() and "needs a denoise model" in w._status.text()
    assert not w.use_model_file(tiny_model_files["denoise"].with_suffix(".missing"))
    # a chosen file is remembered for every widget of its task, at once
    other = _dock(viewer, DenoiseWidget)
    inpaint = _dock(viewer, InpaintWidget)
    assert w.use_model_file(tiny_model_files["denoise"])
    assert other._models._model_combo.currentData().ref == str(tiny_model_files["denoise"].resolve())
    assert inpaint._models._model_combo.currentData() is None
    assert [str(p) for p in RECENT.paths()] == [str(tiny_model_files["denoise"].resolve())]
    fresh = _dock(viewer, DenoiseWidget)
    assert fresh._models._model_combo.currentData() is not None
    refs = [fresh._models._model_combo.itemData(i).ref for i in range(fresh._models._model_combo.count())]
    assert str(tiny_model_files["denoise"].resolve()) in refs  # the file chosen elsewhere is offered here too


def test_bad_choices_are_reported_before_work(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise-levels6"])
    w._run_btn.click()
    assert "Choose an image layer" in w._status.text()
    viewer.add_image(_image(), name="x")
    w._tile_spin.setValue(32)
    w._run_btn.click()
    assert w._status.is_error and "smaller than this model's size multiple 64" in w._status.text()
    assert not w._runner.running and "x denoised" not in viewer.layers


def test_worker_errors_are_shown(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="gray")
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise-rgb"])  # a 3-channel model on a gray image
    assert _run(qtbot, w) == "failed"
    assert w._status.is_error and "channel" in w._status.text() and "gray denoised" not in viewer.layers


def test_rgb_input_is_denoised_channel_by_channel(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    viewer.add_image(_image((64, 72, 3), np.uint8), name="photo", rgb=True)
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    assert _run(qtbot, w) == "finished", w._status.text()
    out = viewer.layers["photo denoised"]
    assert out.rgb and out.data.shape == (64, 72, 3) and out.data.dtype == np.uint8


def test_average_over_flips_is_the_engines_tta(make_napari_viewer, qtbot, tiny_model_files):
    from napari_pix2pix import Pix2PixModel

    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="noisy")
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    assert not w._tta_check.isChecked()  # off by default: it multiplies the time
    w._tta_check.setChecked(True)
    assert _run(qtbot, w) == "finished", w._status.text()
    model = Pix2PixModel.load(tiny_model_files["denoise"])
    got = viewer.layers["noisy denoised"].data.astype(np.float64)
    assert np.abs(got - model.predict(_image(), tta=True)).max() <= 1
    assert np.abs(got - model.predict(_image())).max() > 1


def test_current_plane_only(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    stack = viewer.add_image(_image((4, 48, 48)).astype(np.float32), name="stack")
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    assert w._scope_combo.isEnabled()
    w._scope_combo.setCurrentIndex(w._scope_combo.findData("plane"))
    viewer.dims.set_current_step(0, 2)
    assert _run(qtbot, w) == "finished"
    out = viewer.layers["stack denoised"]
    assert out.data.shape == stack.data.shape
    assert out.data[2].any() and not out.data[[0, 1, 3]].any()
    viewer.dims.set_current_step(0, 0)
    assert _run(qtbot, w) == "finished"
    assert viewer.layers["stack denoised"] is out and out.data[0].any() and out.data[2].any()
    assert not out.data[[1, 3]].any()


def test_cancel_leaves_everything_unchanged(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    viewer.add_image(_image((24, 128, 128)).astype(np.float32), name="big")
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    w._tile_spin.setValue(32)
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._run_btn.click()
        w._runner.worker.yielded.connect(lambda p: w._cancel_btn.click() if p.total and p.done else None)
    assert blocker.args[0] == "cancelled"
    assert "Cancelled" in w._status.text() and "big denoised" not in viewer.layers
    assert w._run_btn.isEnabled()


def test_inpaint_with_labels_and_shapes(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    img = viewer.add_image(_image((64, 64)), name="damaged", scale=(2, 2))
    w = _dock(viewer, InpaintWidget, tiny_model_files["inpaint"])
    w._run_btn.click()
    assert "Choose the mask" in w._status.text()
    labels = viewer.add_labels(np.zeros((64, 64), np.uint8), name="holes", scale=(2, 2))
    w._image_combo.set_layer(img)
    w._mask_combo.set_layer(labels)
    w._run_btn.click()
    assert "is empty" in w._status.text()
    labels.data[10:20, 30:40] = 1
    before, mask_before = img.data.copy(), labels.data.copy()
    assert _run(qtbot, w) == "finished", w._status.text()
    np.testing.assert_array_equal(img.data, before)  # the input layer, and the mask, are never modified
    np.testing.assert_array_equal(labels.data, mask_before)
    out = viewer.layers["damaged inpainted"]
    m = labels.data > 0
    np.testing.assert_array_equal(out.data[~m], img.data[~m])  # only masked pixels change
    assert not np.array_equal(out.data[m], img.data[m])
    np.testing.assert_allclose(out.scale, (2, 2))
    # a rectangle on a Shapes layer, in world coordinates (scale 2): pixels y 5..14, x 20..29
    shapes = viewer.add_shapes([np.array([[10, 40], [10, 58], [28, 58], [28, 40]])], shape_type="rectangle",
                               name="box")
    w._image_combo.set_layer(img)
    w._mask_combo.set_layer(shapes)
    assert _run(qtbot, w) == "finished"
    assert viewer.layers["damaged inpainted"] is out
    changed = out.data != img.data
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 5 and ys.max() <= 14 and xs.min() >= 20 and xs.max() <= 29
    # a mask of another size is refused with both shapes named
    viewer.add_labels(np.ones((32, 32), np.uint8), name="small")
    w._mask_combo.set_layer("small")
    w._image_combo.set_layer(img)
    w._run_btn.click()
    assert "(32, 32)" in w._status.text() and "(64, 64)" in w._status.text()


def test_colorize_makes_an_rgb_layer(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    src = viewer.add_image(_image((56, 64), np.uint8), name="gray", translate=(3, 4))
    before = src.data.copy()
    w = _dock(viewer, ColorizeWidget, tiny_model_files["colorize"])
    assert _run(qtbot, w) == "finished", w._status.text()
    np.testing.assert_array_equal(src.data, before)  # the input layer is never modified
    out = viewer.layers["gray colorized"]
    assert out.rgb and out.data.shape == (56, 64, 3) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.translate, (3, 4))


def test_translate_applies_any_model_but_inpaint(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    src = viewer.add_image(_image((48, 48)).astype(np.float32), name="wide")
    before = src.data.copy()
    w = _dock(viewer, TranslateWidget)
    assert "No model yet" in w._models._model_note.text()
    assert not w.use_model_file(tiny_model_files["inpaint"]) and "Inpaint widget" in w._status.text()
    assert w.use_model_file(tiny_model_files["translate"])
    assert w.use_model_file(tiny_model_files["denoise"])  # any other model is fine
    w._models._model_combo.setCurrentIndex(
        [w._models._model_combo.itemData(i).task for i in range(w._models._model_combo.count())].index("translate"))
    assert _run(qtbot, w) == "finished", w._status.text()
    assert viewer.layers["wide translated"].data.dtype == np.float32
    np.testing.assert_array_equal(src.data, before)  # the input layer is never modified


def test_widgets_and_samples_through_napari_plugin_system(make_napari_viewer):
    viewer = make_napari_viewer()
    kinds = {"denoise": ["Image", "Image"], "inpaint": ["Image", "Image", "Labels"], "colorize": ["Image", "Image"],
             "translate": ["Image", "Image"]}
    for key, expected in kinds.items():
        viewer.layers.clear()
        layers = viewer.open_sample("napari-pix2pix", key)
        assert [type(layer).__name__ for layer in layers] == expected
    assert viewer.layers["widefield"].data.dtype == np.uint16
    for name in ("Denoise", "Inpaint", "Colorize", "Translate", "Train"):
        _, widget = viewer.window.add_plugin_dock_widget("napari-pix2pix", name)
        assert type(widget).__name__.startswith(name)


def test_cancel_from_napari_activity_dock(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    viewer.add_image(_image((24, 128, 128)).astype(np.float32), name="big")
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    w._tile_spin.setValue(32)
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._run_btn.click()
        assert w._pbar.cancel_callback is not None  # the activity dock shows a Cancel button
        w._runner.worker.yielded.connect(lambda p: w._pbar.cancel() if w._pbar is not None and p.done else None)
    assert blocker.args[0] == "cancelled" and "big denoised" not in viewer.layers


def test_uncertainty_and_residual_layers_over_the_result(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    src = viewer.add_image(_image(), name="noisy", scale=(0.5, 2.0), translate=(10, -5))
    w = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    w._tile_spin.setValue(64)
    assert not w._samples_spin.isEnabled() and w._samples_spin.value() == 8
    assert "multiplies the prediction time" in w._uncertainty_check.toolTip()
    w._uncertainty_check.setChecked(True)
    assert w._samples_spin.isEnabled()
    w._samples_spin.setValue(2)
    assert _run(qtbot, w) == "finished", w._status.text()
    out = viewer.layers["noisy denoised"]
    unc = viewer.layers["noisy uncertainty"]
    res = viewer.layers["noisy residual"]
    assert unc.data.shape == src.data.shape and unc.data.dtype == np.float32
    assert np.isfinite(unc.data).all() and (unc.data >= 0).all() and unc.data.max() > 0
    for layer in (unc, res):
        np.testing.assert_allclose(layer.scale, (0.5, 2.0))
        np.testing.assert_allclose(layer.translate, (10, -5))
    assert unc.blending == "additive" and unc.colormap.name == "magma"
    assert viewer.layers.index(unc) > viewer.layers.index(out)  # drawn over the result
    np.testing.assert_allclose(res.data, src.data.astype(np.float32) - out.data.astype(np.float32))
    assert res.contrast_limits[0] == -res.contrast_limits[1] < 0  # centred on 0
    assert "structure score" in w._status.text() and "noisy uncertainty" in w._status.text()
    # again: every layer is updated in place
    layers = list(viewer.layers)
    w._image_combo.set_layer("noisy")
    assert _run(qtbot, w) == "finished", w._status.text()
    assert list(viewer.layers) == layers and viewer.layers["noisy uncertainty"] is unc
    np.testing.assert_allclose(res.data, src.data.astype(np.float32) - out.data.astype(np.float32))


def test_uncertainty_of_colour_results_and_single_planes(make_napari_viewer, qtbot, tiny_model_files):
    viewer = make_napari_viewer()
    gray = viewer.add_image(_image((56, 64), np.uint8), name="gray", translate=(3, 4))
    w = _dock(viewer, ColorizeWidget, tiny_model_files["colorize"])
    w._uncertainty_check.setChecked(True)
    w._samples_spin.setValue(2)
    assert _run(qtbot, w) == "finished", w._status.text()
    unc = viewer.layers["gray uncertainty"]  # colour averaged: the gray image's shape
    assert unc.data.shape == gray.data.shape and (unc.data >= 0).all() and not unc.rgb
    np.testing.assert_allclose(unc.translate, (3, 4))
    assert "gray residual" not in viewer.layers  # denoising only
    # an RGB input: the residual of the colour means
    photo = viewer.add_image(_image((40, 48, 3), np.uint8), name="photo", rgb=True)
    d = _dock(viewer, DenoiseWidget, tiny_model_files["denoise"])
    d._image_combo.set_layer(photo)
    d._uncertainty_check.setChecked(True)
    d._samples_spin.setValue(2)
    assert _run(qtbot, d) == "finished", d._status.text()
    out = viewer.layers["photo denoised"]
    assert viewer.layers["photo uncertainty"].data.shape == (40, 48)
    expected = photo.data.astype(np.float32).mean(-1) - out.data.astype(np.float32).mean(-1)
    np.testing.assert_allclose(viewer.layers["photo residual"].data, expected, rtol=1e-5, atol=1e-4)
    # one plane of a stack: the maps are written into that plane
    stack = viewer.add_image(_image((3, 32, 32)).astype(np.float32), name="stack")
    d._image_combo.set_layer(stack)
    d._scope_combo.setCurrentIndex(d._scope_combo.findData("plane"))
    viewer.dims.set_current_step(0, 1)
    assert _run(qtbot, d) == "finished", d._status.text()
    unc = viewer.layers["stack uncertainty"]
    assert unc.data.shape == (3, 32, 32) and unc.data[1].any() and not unc.data[[0, 2]].any()

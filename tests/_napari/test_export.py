"""The Export dialog from the model chooser and the Train widget (Xvfb), and packages in the widgets."""

from __future__ import annotations

import napari  # noqa: E402, F401 - the testing extra has these: a missing package must fail CI
import numpy as np
import onnxruntime  # noqa: E402, F401
import pytest
import pytestqt  # noqa: E402, F401

import napari_pix2pix as p2p  # noqa: E402
from napari_pix2pix._napari._qt.restore import DenoiseWidget  # noqa: E402
from napari_pix2pix._napari._qt.train import TrainWidget  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _export(qtbot, dialog) -> str:
    with qtbot.waitSignal(dialog.export_finished, timeout=TIMEOUT) as blocker:
        dialog._export_btn.click()
    return blocker.args[0]


def test_export_from_model_chooser_then_use_the_package(make_napari_viewer, qtbot, tiny_model_files, tmp_path):
    import bioimageio.core  # noqa: F401
    viewer = make_napari_viewer()
    image = (np.random.default_rng(0).random((48, 40)) * 3000 + 100).astype(np.uint16)
    viewer.add_image(image, name="noisy")
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.use_model_file(tiny_model_files["denoise"])
    dialog = w.open_export()
    assert dialog._model_combo.currentData().ref == str(tiny_model_files["denoise"].resolve())
    assert dialog._dest.text().endswith("tiny-denoise.zip")  # beside the model, the format's suffix

    dialog.set_format("onnx")
    assert dialog._dest.text().endswith("tiny-denoise.onnx")
    dialog.set_destination(tmp_path / "out" / "tiny.onnx")
    assert _export(qtbot, dialog) == "finished", dialog._status.text()
    assert (tmp_path / "out" / "tiny.onnx").is_file() and "onnxruntime max |Δ|" in dialog._status.text()
    assert dialog.report.max_abs_diff["onnxruntime"] < 1e-4

    dialog.set_format("bioimageio")
    assert dialog._dest.text() == str(tmp_path / "out" / "tiny.zip")  # the user's name, new suffix
    assert _export(qtbot, dialog) == "finished", dialog._status.text()
    package = tmp_path / "out" / "tiny.zip"
    assert "pytorch_state_dict max |Δ|" in dialog._status.text()

    # the package is a model like any other: chosen in the widget, it predicts as the model file does
    assert w.use_model_file(package), w._status.text()
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._run_btn.click()
    assert blocker.args[0] == "finished", w._status.text()
    expected = p2p.load_model(tiny_model_files["denoise"]).predict(image, tile_size=512)
    np.testing.assert_array_equal(viewer.layers["noisy denoised"].data, expected)

    # problems are reported in the dialog before any work
    dialog.set_destination("")
    dialog._export_btn.click()
    assert dialog._status.is_error and "Choose where" in dialog._status.text() and not dialog._runner.running


def test_export_from_train_widget_uses_the_last_trained_model(make_napari_viewer, qtbot, tiny_model_files, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._last_model = str(tiny_model_files["colorize"].resolve())  # as after a training run
    dialog = w.open_export()
    assert dialog._model_combo.currentData().task == "colorize"
    dialog.set_format("torchscript")
    dialog.set_destination(tmp_path / "colorize.pt")
    assert _export(qtbot, dialog) == "finished", dialog._status.text()
    assert (tmp_path / "colorize.pt").is_file() and dialog.report.max_abs_diff["torchscript"] < 1e-4
    dialog.reject()  # Esc / the title-bar close: QDialog.done must still be Qt's
    assert not dialog.isVisible()


def test_a_fresh_export_dialog_picks_no_model_for_the_user_and_names_only_missing_extras(make_napari_viewer):
    from napari_pix2pix._napari._qt import export as export_mod

    viewer = make_napari_viewer()
    dialog = TrainWidget(viewer).open_export()  # a fresh session: nothing trained yet
    assert dialog._model_combo.currentData() is None and "choose" in dialog._model_combo.currentText()
    dialog.set_format("bioimageio")
    assert "Needs" not in dialog._format_note.text()  # the testing extra installs bioimageio
    real = export_mod.missing_extra
    try:
        export_mod.missing_extra = lambda fmt: True
        dialog.set_format("onnx")
        dialog.set_format("bioimageio")
        assert "Needs pip install" in dialog._format_note.text()
    finally:
        export_mod.missing_extra = real
    dialog.reject()

"""The Train widget end to end on a real napari viewer (Xvfb), with tiny networks."""

from __future__ import annotations

import napari  # noqa: E402, F401 - the testing extra has these: a missing package must fail CI
import numpy as np
import pytest
import pytestqt  # noqa: E402, F401
from PIL import Image  # noqa: E402

from napari_pix2pix import Pix2PixModel  # noqa: E402
from napari_pix2pix._napari._qt.restore import DenoiseWidget  # noqa: E402
from napari_pix2pix._napari._qt.train import PREVIEW_NAME, PREVIEW_UNCERTAINTY_NAME, TrainWidget  # noqa: E402
from napari_pix2pix.engine.images import phantoms  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT = 120_000
TINY = {"generator": {"ngf": 4, "levels": 3}, "ndf": 8, "n_layers": 2}


def _train_widget(viewer, tmp_path, steps=6, task="denoise", source="layers"):
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._config_overrides = dict(TINY)
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData(task))
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData(source))
    w._settings._patch_spin.setValue(32)
    w._settings._batch_spin.setValue(2)
    w.set_steps(steps)
    w._settings._val_every_spin.setValue(3)
    w._settings._output.setText(str(tmp_path / f"{task}.safetensors"))
    return w


def _pair(viewer, shape=(96, 96)):
    clean = phantoms.fluorescence(shape, seed=3)
    noisy = clean + np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")


def _start(qtbot, w, button=None) -> str:
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        (button or w._start_btn).click()
    return blocker.args[0]


def test_train_from_layers_saves_and_model_is_listed_at_once(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    denoise = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(denoise)
    before = denoise._models._model_combo.currentData()
    assert before is not None and before.bundled and before.ref == "denoise"  # the bundled denoiser
    w = _train_widget(viewer, tmp_path)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    with qtbot.waitSignal(w.model_saved, timeout=TIMEOUT) as saved:
        assert _start(qtbot, w) == "finished", w._status.text()
    path = tmp_path / "denoise.safetensors"
    assert saved.args[0] == str(path) and path.is_file()
    assert "Model saved after 6 steps" in w._status.text()
    model = Pix2PixModel.load(path)
    assert model.task.name == "denoise" and model.training_summary["steps_done"] == 6
    # the curves and the preview followed the run
    assert [x for x, _ in w._progress._loss_plot.points("G_L1")] == [1, 2, 3, 4, 5, 6]
    psnr = w._progress._psnr_plot
    assert [x for x, _ in psnr.points("model")] == [3, 6] and len(psnr.points("input")) == 2
    assert "held-out part at step 6" in w._progress._val_label.text()
    preview = viewer.layers[PREVIEW_NAME]
    assert preview.data.shape[0] == 32 and preview.data.shape[1] == 3 * 32 + 8 and preview.data.max() > 0
    # the validation patch's uncertainty, over the preview's output panel
    assert "uncertainty" in w._progress._val_label.text()
    spread = viewer.layers[PREVIEW_UNCERTAINTY_NAME]
    assert spread.data.shape == (32, 32) and spread.data.dtype == np.float32 and (spread.data >= 0).all()
    assert viewer.layers.index(spread) > viewer.layers.index(preview) and spread.blending == "additive"
    np.testing.assert_allclose(spread.translate[-1] - preview.translate[-1], 36 * preview.scale[-1])
    assert w._settings._resume_path.text().endswith("checkpoint.safetensors")
    # the restoration widget lists (and chose) the new model, and it runs
    assert denoise._models._model_combo.currentData().ref == str(path.resolve())
    denoise._image_combo.set_layer("noisy")
    with qtbot.waitSignal(denoise.done, timeout=TIMEOUT) as blocker:
        denoise._run_btn.click()
    assert blocker.args[0] == "finished" and "noisy denoised" in viewer.layers


def test_stop_saves_and_resume_continues(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    w = _train_widget(viewer, tmp_path, steps=2000)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._start_btn.click()
        assert w._stop_btn.isEnabled() and not w._start_btn.isEnabled()
        w._runner.worker.yielded.connect(lambda ev: w._stop_btn.click() if getattr(ev, "step", 0) >= 3 else None)
    assert blocker.args[0] == "stopped", w._status.text()
    path = tmp_path / "denoise.safetensors"
    stopped = Pix2PixModel.load(path).training_summary
    assert stopped["status"] == "stopped" and 3 <= stopped["steps_done"] < 2000
    checkpoint = w._settings._resume_path.text()
    assert checkpoint.endswith("checkpoint.safetensors")
    # resume: too few steps is refused, more steps continue from the checkpoint
    w.set_steps(stopped["steps_done"])
    w._resume_btn.click()
    assert w._status.is_error and "set “Train for” above" in w._status.text()
    w.set_steps(stopped["steps_done"] + 3)
    assert _start(qtbot, w, w._resume_btn) == "finished", w._status.text()
    resumed = Pix2PixModel.load(path).training_summary
    assert resumed["status"] == "finished" and resumed["steps_done"] == stopped["steps_done"] + 3
    assert w._progress._loss_plot.points("G_L1")[0][0] == 1  # a resumed run keeps the curves of the run so far
    assert w._progress._loss_plot.points("G_L1")[-1][0] == stopped["steps_done"] + 3


@pytest.mark.parametrize("task, source", [("inpaint", "clean"), ("colorize", "clean_dir")])
def test_pairs_synthesized_from_clean_layer_or_folder(make_napari_viewer, qtbot, tmp_path, task, source):
    viewer = make_napari_viewer()
    w = _train_widget(viewer, tmp_path, steps=3, task=task, source=source)
    if source == "clean":
        viewer.add_image(phantoms.to_uint16(phantoms.nuclei((80, 80), 1)), name="cells")
        w._data._clean_combo.set_layer("cells")
    else:
        folder = tmp_path / "rgb"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(2):
            Image.fromarray((rng.random((72, 72, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
        w._data._clean_dir.setText(str(folder))
    assert _start(qtbot, w) == "finished", w._status.text()
    assert Pix2PixModel.load(tmp_path / f"{task}.safetensors").task.name == task


def test_bad_choices_are_reported_before_any_step(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((96, 96), np.float32), name="a")
    viewer.add_image(np.zeros((96, 90), np.float32), name="b")
    viewer.add_image(np.random.default_rng(0).random((40, 40)).astype(np.float32), name="small")
    viewer.add_image(np.random.default_rng(1).random((96, 96)).astype(np.float32), name="gray")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "in" / "x.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "out" / "y.png")
    model_file = tmp_path / "m.safetensors"
    Pix2PixModel("denoise", "unet_tiny", ngf=4, levels=3).save(model_file)

    w = _train_widget(viewer, tmp_path)

    def expect(message: str, button=None) -> None:  # found on the GUI thread at once: no worker starts
        (button or w._start_btn).click()
        assert not w._runner.running, message
        assert w._status.is_error and message in w._status.text(), w._status.text()

    def expect_from_worker(message: str) -> None:  # found while the worker prepares the pairs: before any step
        w._start_btn.click()
        qtbot.waitUntil(lambda: not w._runner.running, timeout=30_000)
        assert w._status.is_error and message in w._status.text(), w._status.text()
        assert w._status.text().startswith("Cannot start training") and w._start_btn.isEnabled()
        assert not (tmp_path / "denoise.safetensors").exists()  # no step: no model written

    w._data._input_combo.set_layer("a")
    w._data._target_combo.set_layer("b")
    expect("differ in shape")
    w._data._target_combo.set_layer("a")
    expect("same layer")
    w._data._input_combo.set_layer("small")
    w._data._target_combo.set_layer("gray")
    expect("differ in shape")
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("clean"))
    w._data._clean_combo.set_layer("small")
    w._settings._patch_spin.setValue(36)
    expect("patch_size 36 must be a multiple of 8")
    w._settings._patch_spin.setValue(40)
    expect_from_worker("too small to hold out 10% for validation")
    w._settings._val_spin.setValue(0)
    w._settings._patch_spin.setValue(64)
    expect_from_worker("is larger than clean image 1")
    w._settings._val_spin.setValue(10)
    w._settings._patch_spin.setValue(32)
    w._config_overrides = {}
    w.set_start_from("scratch")
    expect("must be a multiple of 64")  # unet_tiny without the tiny overrides
    w.set_start_from("auto")
    w._config_overrides = dict(TINY)
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("colorize"))
    w._data._clean_combo.set_layer("gray")
    expect("is grayscale")
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("translate"))
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("clean"))
    expect("Translate models need real pairs")
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("inpaint"))
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("layers"))
    w._data._input_combo.set_layer("gray")
    w._data._target_combo.set_layer("a")
    expect("trained from clean images")
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("denoise"))
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("clean_dir"))
    expect("Choose the folder of clean images")
    w._data._clean_dir.setText(str(empty))
    expect("holds no TIFF/PNG/JPEG images")
    w._data._clean_dir.setText(str(tmp_path / "nowhere"))
    expect("does not exist")
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("folders"))
    w._data._input_dir.setText(str(tmp_path / "in"))
    w._data._target_dir.setText(str(tmp_path / "out"))
    expect("not paired by file name")
    w._settings._resume_path.setText(str(model_file))
    expect("not a training checkpoint", w._resume_btn)
    w._data._source_combo.setCurrentIndex(w._data._source_combo.findData("clean"))
    w._data._clean_combo.set_layer("gray")
    w._settings._lr_spin.setValue(0.001)
    w._settings._output.setText(str(tmp_path))
    expect("is a folder")
    assert PREVIEW_NAME not in viewer.layers


def test_quit_from_napari_still_saves_the_run(make_napari_viewer, qtbot, tmp_path):
    """napari's activity dock (and closing napari) quits workers: the run is saved all the same."""
    viewer = make_napari_viewer()
    _pair(viewer)
    w = _train_widget(viewer, tmp_path, steps=2000)
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    with qtbot.waitSignal(w.done, timeout=TIMEOUT) as blocker:
        w._start_btn.click()
        worker = w._runner.worker
        worker.yielded.connect(lambda ev: worker.quit() if getattr(ev, "step", 0) >= 2 else None)
    assert blocker.args[0] == "stopped", w._status.text()
    saved = Pix2PixModel.load(tmp_path / "denoise.safetensors").training_summary
    assert saved["status"] == "stopped" and saved["steps_done"] >= 2
    assert w._start_btn.isEnabled() and not w._stop_btn.isEnabled()


def test_the_widgets_recipe_warm_start_and_time_budget_drive_the_engine(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    start = Pix2PixModel("denoise", "unet_tiny", levels=3, ngf=4)
    start.save(tmp_path / "start.safetensors")
    w = _train_widget(viewer, tmp_path, task="translate")
    w._config_overrides = {"ndf": 8, "n_layers": 2}
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.set_layer("clean")
    w._settings._recipe_combo.setCurrentIndex(w._settings._recipe_combo.findData("paper"))
    assert w._settings._recipe_combo.findData("noise2noise") < 0  # noise2noise is for denoising only
    w.set_start_from(str(tmp_path / "start.safetensors"))
    assert not w._settings._preset_combo.isEnabled()  # a warm start keeps the starting model's network
    w.set_minutes(0.1)
    assert _start(qtbot, w) == "finished", w._status.text()
    saved = Pix2PixModel.load(tmp_path / "translate.safetensors")
    cfg = saved.training_settings
    assert cfg["recipe"] == "paper" and saved.training_summary["minutes"] == 0.1
    assert saved.training_summary["started_from"] == str((tmp_path / "start.safetensors").resolve())
    assert saved.config == start.config and saved.task.name == "translate"
    assert w._settings._batch_spin.specialValueText() == f"auto ({cfg['batch_size']})"  # what "auto" decided, shown
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("denoise"))
    assert w._settings._recipe_combo.findData("noise2noise") >= 0


def test_the_none_target_learns_from_the_noisy_layer_alone(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The Train widget's target "none — learn from the noisy images" drives the same engine call as the API."""
    from napari_pix2pix._napari import jobs
    from napari_pix2pix._napari._qt.train_data import NO_TARGET

    viewer = make_napari_viewer()
    _pair(viewer)
    w = _train_widget(viewer, tmp_path, steps=4)
    w.set_start_from("scratch")
    calls = []
    real = jobs.train_iter
    monkeypatch.setattr(jobs, "train_iter", lambda **kw: calls.append(kw) or real(**kw))
    w._data._input_combo.set_layer("noisy")
    w._data._target_combo.setCurrentIndex(w._data._target_combo.findText(NO_TARGET))
    assert _start(qtbot, w) == "finished", w._status.text()
    assert "input" in calls[0] and "target" not in calls[0]  # the noisy layer alone, as p2p.train(input=...)
    saved = Pix2PixModel.load(tmp_path / "denoise.safetensors").training_summary
    assert saved["plan"]["recipe"] == "noise2self"
    assert "estimated" in w._progress._val_label.text()
    w._data._task_combo.setCurrentIndex(w._data._task_combo.findData("translate"))
    w._data._target_combo.setCurrentIndex(w._data._target_combo.findText(NO_TARGET))
    w._start_btn.click()
    assert not w._runner.running and "Only a denoiser" in w._status.text()

"""The Train widget: pairs from layers or folders, live curves and preview, Start / Stop / Resume.

The widget checks every choice before work starts (shapes, folders, patch size, settings),
runs :func:`..jobs.train_job` in a worker thread and listens to the engine's typed updates.
The saved model is added to the remembered models, so it shows up in the restoration
widgets at once.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...engine.device import resolve_device
from ...engine.io import list_images
from ...engine.modelfile import ModelFileError
from ...engine.tasks import TASKS
from ...engine.train_config import resume_config
from ...engine.training import (
    CHECKPOINT,
    RESUMABLE,
    CheckpointSaved,
    StepUpdate,
    TrainConfig,
    ValidationUpdate,
)
from .. import layers as lyr
from ..choices import RECENT, read_header
from ..jobs import train_job, training_data, warm_up_in_background
from .common import (
    LayerCombo,
    Outcome,
    StatusLabel,
    WorkerRunner,
    device_combo,
    napari_progress,
    open_file,
    open_folder,
    save_file,
)
from .plot import CurvesPlot

if TYPE_CHECKING:
    import napari

PRESETS = {
    "unet_tiny": "tiny: ~2 M parameters, fast on a CPU (patch multiple of 64)",
    "unet_small": "small: ~10 M parameters, CPU or GPU (multiple of 128)",
    "unet_128": "paper's U-Net-128: 42 M parameters, GPU (multiple of 128)",
    "unet_256": "paper's U-Net-256: 54 M parameters, GPU (multiple of 256)",
}
SOURCES = (
    ("layers", "Image layers: input → target"),
    ("clean", "Clean image layer (pairs synthesized)"),
    ("folders", "Folders: input → target (paired by file name)"),
    ("clean_dir", "Folder of clean images (pairs synthesized)"),
)
PREVIEW_NAME = "pix2pix preview (input | output | target)"
PREVIEW_UNCERTAINTY_NAME = "pix2pix preview uncertainty"  # over the preview's output panel
PREVIEW_GAP = 4  # pixels between the preview's panels
UI_INTERVAL = 0.25  # seconds between updates of the progress display and curves (repaints cost GUI time)
PBAR_INTERVAL = 1.0  # seconds between updates of napari's activity progress bar (it processes events)
MODEL_FILTER = "Pix2Pix models (*.safetensors)"


@dataclass(frozen=True)
class TrainJob:
    """A training run of the widget (the layer stays on the GUI thread)."""

    config: TrainConfig
    model_path: Path
    data: Any  # PairedData prepared from layers, or None (folders: prepared in the worker)
    source: dict[str, Any]  # make_data keywords naming folders (when data is None)
    layer: Any  # the layer the data come from (for the preview's scale), or None
    resume: str | None  # checkpoint to continue from


def default_model_path(task: str) -> Path:
    """Where a new model is saved unless the user chooses: ``~/napari-pix2pix-models/<task>-<time>.safetensors``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path.home() / "napari-pix2pix-models" / f"{task}-{stamp}.safetensors"


def _fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class _PathEdit(QWidget):
    """A line edit with a browse button."""

    def __init__(self, browse: Any, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.button = QPushButton("…")
        self.button.setFixedWidth(28)
        self.button.clicked.connect(lambda: browse(self))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt style
        self.edit.setText(text)


class TrainWidget(QWidget):
    """Train a Pix2Pix model from napari layers or folders.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari passes it in).
    """

    done = Signal(str)  # "finished", "stopped", "cancelled" or "failed"
    model_saved = Signal(str)  # path of the saved model file

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._stop = threading.Event()
        self._runner = WorkerRunner(self._on_event, self._on_finished, self._stop)
        self._pbar: Any = None
        self._job: TrainJob | None = None
        self._config_overrides: dict[str, Any] = {}  # extra TrainConfig fields (tests, experts)
        self._last_ui = self._last_pbar = 0.0
        self._export_dialog: Any = None
        self._last_model: str | None = None  # the model file saved last
        self._make_source_widgets(viewer)
        self._make_setting_widgets()
        self._make_run_widgets()
        self._lay_out()
        self._connect()
        self._on_task()
        self._warm = warm_up_in_background()  # torch's first optimizer import, off the GUI thread

    def _make_source_widgets(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image

        self._task_combo = QComboBox()
        for t in TASKS:
            self._task_combo.addItem(t, t)
        self._source_combo = QComboBox()
        for key, label in SOURCES:
            self._source_combo.addItem(label, key)
        self._input_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._target_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._clean_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._input_dir = _PathEdit(self._browse_folder, "folder of input images")
        self._target_dir = _PathEdit(self._browse_folder, "folder of target images (same file names)")
        self._clean_dir = _PathEdit(self._browse_folder, "folder of clean images")
        self._source_stack = QStackedWidget()
        pages: list[list[tuple[str, QWidget]]] = [
            [("Input", self._input_combo), ("Target", self._target_combo)],
            [("Clean", self._clean_combo)],
            [("Input folder", self._input_dir), ("Target folder", self._target_dir)],
            [("Clean folder", self._clean_dir)],
        ]
        for rows in pages:
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            for label, w in rows:
                form.addRow(label, w)
            self._source_stack.addWidget(page)

    def _make_setting_widgets(self) -> None:
        self._preset_combo = QComboBox()
        for name, text in PRESETS.items():
            self._preset_combo.addItem(name, name)
            self._preset_combo.setItemData(self._preset_combo.count() - 1, text, 3)  # 3: ToolTipRole
        self._patch_spin = _spin(32, 2048, 64, 32, " px")
        self._batch_spin = _spin(1, 256, 4)
        self._steps_spin = _spin(1, 10_000_000, 2000, 100)
        self._lr_spin = QDoubleSpinBox()
        self._lr_spin.setDecimals(6)
        self._lr_spin.setRange(1e-6, 1.0)
        self._lr_spin.setSingleStep(1e-4)
        self._lr_spin.setValue(2e-4)
        self._l1_spin = QDoubleSpinBox()
        self._l1_spin.setRange(0, 10_000)
        self._l1_spin.setValue(100)
        self._l1_spin.setToolTip("Weight of the L1 loss against the adversarial loss (paper: 100)")
        self._val_spin = QDoubleSpinBox()
        self._val_spin.setRange(0, 0.5)
        self._val_spin.setSingleStep(0.05)
        self._val_spin.setValue(0.1)
        self._val_spin.setToolTip("Share of the data held out for validation (0: no validation)")
        self._val_every_spin = _spin(1, 1_000_000, 100, 10)
        self._device_combo = device_combo()
        self._output = _PathEdit(self._browse_output, "default: ~/napari-pix2pix-models/<task>-<time>.safetensors")
        self._resume_path = _PathEdit(self._browse_checkpoint, "a checkpoint.safetensors to continue from")

    def _make_run_widgets(self) -> None:
        self._start_btn = QPushButton("Start")
        self._stop_btn = QPushButton("Stop")
        self._stop_btn.setEnabled(False)
        self._stop_btn.setToolTip("Stop after the current step; the model and a checkpoint are saved")
        self._resume_btn = QPushButton("Resume")
        self._resume_btn.setToolTip("Continue from the checkpoint (with the data chosen above)")
        self._export_btn = QPushButton("Export…")
        self._export_btn.setToolTip("Export a model (by default the one trained last) as a bioimage.io package, "
                                    "ONNX or TorchScript")
        self._progress_bar = QProgressBar()
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._status = StatusLabel()
        self._val_label = StatusLabel()
        self._loss_plot = CurvesPlot("losses (log)", log_y=True)
        for name in ("G_GAN", "G_L1", "D"):
            self._loss_plot.add_series(name)
        self._psnr_plot = CurvesPlot("validation PSNR (dB)")
        self._psnr_plot.add_series("model", "#00e676")
        self._psnr_plot.add_series("input", "#bdbdbd", dashed=True)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("Task", self._task_combo)
        form.addRow("Training data", self._source_combo)
        form.addRow(self._source_stack)
        form.addRow("Model size", self._preset_combo)
        grid = QFormLayout()
        grid.addRow("Patch size", self._patch_spin)
        grid.addRow("Batch size", self._batch_spin)
        grid.addRow("Steps", self._steps_spin)
        grid2 = QFormLayout()
        grid2.addRow("Learning rate", self._lr_spin)
        grid2.addRow("λ L1", self._l1_spin)
        grid2.addRow("Validation", self._val_spin)
        two = QHBoxLayout()
        two.addLayout(grid)
        two.addLayout(grid2)
        form.addRow(two)
        form.addRow("Validate every", self._val_every_spin)
        form.addRow("Device", self._device_combo)
        form.addRow("Save model as", self._output)
        form.addRow("Resume from", self._resume_path)
        buttons = QHBoxLayout()
        buttons.addWidget(self._start_btn, 1)
        buttons.addWidget(self._stop_btn)
        buttons.addWidget(self._resume_btn)
        buttons.addWidget(self._export_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self._progress_bar)
        layout.addWidget(self._status)
        layout.addWidget(self._val_label)
        layout.addWidget(self._loss_plot)
        layout.addWidget(self._psnr_plot)
        layout.addStretch(1)

    def _connect(self) -> None:
        self._source_combo.currentIndexChanged.connect(self._source_stack.setCurrentIndex)
        self._task_combo.currentIndexChanged.connect(self._on_task)
        self._preset_combo.currentIndexChanged.connect(self._on_preset)
        self._start_btn.clicked.connect(self._start_clicked)
        self._stop_btn.clicked.connect(self._request_stop)
        self._resume_btn.clicked.connect(self._resume_clicked)
        self._export_btn.clicked.connect(self.open_export)
        # closing napari deletes docked widgets without closeEvent: stop (and save) a running training then too
        self.destroyed.connect(lambda *_, stop=self._stop: stop.set())

    # ------------------------------------------------------------------ choices
    def _on_task(self, *_: Any) -> None:
        task = self._task_combo.currentData()
        source = self._source_combo.currentData()
        if task == "inpaint" and source in ("layers", "folders"):  # masks are synthesized from clean images
            self._source_combo.setCurrentIndex(1 if source == "layers" else 3)
        elif task == "translate" and source in ("clean", "clean_dir"):
            self._source_combo.setCurrentIndex(0 if source == "clean" else 2)

    def _on_preset(self, *_: Any) -> None:
        multiple = TrainConfig(preset=self._preset_combo.currentData(), patch_size=256).generator_config(1, 1).multiple
        self._patch_spin.setSingleStep(max(multiple, 32))
        if self._patch_spin.value() % multiple:
            self._patch_spin.setValue(max(multiple, 32))

    def _browse_folder(self, target: _PathEdit) -> None:
        path = open_folder(self, "Choose a folder of images", target.text())
        if path:
            target.setText(path)

    def _browse_output(self, target: _PathEdit) -> None:
        start = target.text() or str(default_model_path(self._task_combo.currentData()))
        path = save_file(self, "Save the model as", start, MODEL_FILTER)
        if path:
            target.setText(path)

    def _browse_checkpoint(self, target: _PathEdit) -> None:
        start = target.text() or (str(Path(self._output.text()).with_suffix(".checkpoints")) if self._output.text()
                                  else str(Path.home()))
        path = open_file(self, "Resume from a training checkpoint", start, "Checkpoints (*.safetensors)")
        if path:
            target.setText(path)

    def config(self) -> TrainConfig:
        """The settings as a :class:`TrainConfig` (raises ValueError with a message if invalid)."""
        steps = self._steps_spin.value()
        kwargs: dict[str, Any] = dict(
            task=self._task_combo.currentData(), preset=self._preset_combo.currentData(),
            patch_size=self._patch_spin.value(), batch_size=self._batch_spin.value(), steps=steps,
            lr=self._lr_spin.value(), lambda_l1=self._l1_spin.value(), val_fraction=self._val_spin.value(),
            val_every=self._val_every_spin.value(), device=self._device_combo.currentData(),
            checkpoint_every=max(100, steps // 5),
        )
        kwargs.update(self._config_overrides)
        return TrainConfig(**kwargs)

    def _source(self, config: TrainConfig) -> tuple[dict[str, Any], Any]:
        """(make_data keyword arguments, layer the data come from) for the chosen source; checks it."""
        kind = self._source_combo.currentData()
        if kind == "layers":
            a, b = self._input_combo.layer(), self._target_combo.layer()
            if a is None or b is None:
                raise ValueError("Choose the input and the target image layers (File › Open Sample › Pix2Pix "
                                 "has pairs), or train from clean images.")
            if a is b:
                raise ValueError(f"Input and target are the same layer ({a.name!r}); choose the paired target "
                                 "(e.g. the clean image) or train from clean images.")
            xa, ca = lyr.image_array(a)
            xb, cb = lyr.image_array(b)
            sa, sb = _spatial(xa.shape, ca), _spatial(xb.shape, cb)
            if sa != sb:
                raise ValueError(f"Input {a.name!r} {sa} and target {b.name!r} {sb} differ in shape; paired "
                                 "images must match pixel for pixel.")
            channel_axis = -1 if (ca is not None or cb is not None) else None
            return {"input": np.asarray(xa), "target": np.asarray(xb), "channel_axis": channel_axis}, a
        if kind == "clean":
            c = self._clean_combo.layer()
            if c is None:
                raise ValueError("Choose the layer of clean images to synthesize training pairs from.")
            if config.task == "translate":
                raise ValueError("Translate models need real pairs: choose input and target layers or folders.")
            xc, cc = lyr.image_array(c)
            return {"clean": np.asarray(xc), "channel_axis": cc}, c
        if kind == "folders":
            din, dtg = self._input_dir.text(), self._target_dir.text()
            if not din or not dtg:
                raise ValueError("Choose both an input folder and a target folder.")
            for d in (din, dtg):
                _check_folder(d)
            from ...engine.data import pair_folders

            pair_folders(din, dtg)  # names every unpaired file
            rgb = _folder_is_rgb(din) or _folder_is_rgb(dtg)
            return {"input_dir": din, "target_dir": dtg, "channel_axis": -1 if rgb else None}, None
        dc = self._clean_dir.text()
        if not dc:
            raise ValueError("Choose the folder of clean images.")
        if config.task == "translate":
            raise ValueError("Translate models need real pairs: choose input and target layers or folders.")
        _check_folder(dc)
        return {"clean_dir": dc, "channel_axis": -1 if _folder_is_rgb(dc) else None}, None

    def _prepare(self, resume: str | None = None) -> TrainJob:
        """Check everything and collect the job; raise ValueError with a message for the user."""
        config = self.config()
        resolve_device(config.device)
        if resume is not None:
            config = self._settings_from_checkpoint(resume, config)
        out = self._output.text() or str(default_model_path(config.task))
        model_path = Path(out).expanduser()
        if model_path.is_dir():
            raise ValueError(f"{model_path} is a folder; choose a file name for the model (…/name.safetensors).")
        if model_path.suffix != ".safetensors":
            model_path = model_path.with_name(model_path.name + ".safetensors")
        source, layer = self._source(config)
        data = None
        if any(k in source for k in ("input", "clean")):  # arrays: prepare now, every problem shows here
            data = training_data(config, source)
            source = {}
        return TrainJob(config, model_path, data, source, layer, resume)

    def _settings_from_checkpoint(self, path: str, config: TrainConfig) -> TrainConfig:
        """Show the checkpoint's settings in the widget; the run's settings by the engine's resume rule."""
        meta = read_header(path)
        if meta.get("kind") != "training-checkpoint":
            raise ValueError(f"{Path(path).name} is a model file, not a training checkpoint: resume from the "
                             f"{CHECKPOINT} in the run's .checkpoints folder.")
        saved = TrainConfig.from_dict(meta["config"])
        for combo, value in ((self._task_combo, saved.task), (self._preset_combo, saved.preset)):
            combo.setCurrentIndex(max(combo.findData(value), 0))
        self._patch_spin.setValue(saved.patch_size)
        self._batch_spin.setValue(saved.batch_size)
        self._lr_spin.setValue(saved.lr)
        self._l1_spin.setValue(saved.lambda_l1)
        self._val_spin.setValue(saved.val_fraction)
        step = int(meta.get("step", 0))
        if config.steps <= step:
            raise ValueError(f"The checkpoint is at step {step}; set Steps above {step} to train further.")
        return resume_config(saved, {k: getattr(config, k) for k in RESUMABLE})

    # ------------------------------------------------------------------ running
    def _start_clicked(self) -> None:
        self._run(None)

    def _resume_clicked(self) -> None:
        path = self._resume_path.text()
        if not path:
            self._browse_checkpoint(self._resume_path)
            path = self._resume_path.text()
        if not path:
            self._status.error("Choose a checkpoint to resume from (the run's .checkpoints/checkpoint.safetensors).")
            return
        self._run(path)

    def _run(self, resume: str | None) -> None:
        if self._runner.running:
            return
        try:
            job = self._prepare(resume)
        except (ValueError, TypeError, OSError, ModelFileError) as e:
            self._status.error(str(e))
            return
        self._start(job)

    def _start(self, job: TrainJob) -> None:
        cfg = job.config
        self._job = job
        self._last_ui = self._last_pbar = 0.0
        self._loss_plot.clear()
        self._psnr_plot.clear()
        self._val_label.info("")
        self._output.setText(str(job.model_path))
        verb = "Resuming" if job.resume else "Training"
        self._status.info(f"{verb} a {cfg.task} model ({cfg.preset}, {cfg.steps} steps)…")
        self._progress_bar.setRange(0, cfg.steps)
        self._progress_bar.setValue(0)
        self._prepare_preview(cfg, job.data)
        self._pbar = napari_progress(f"Train {cfg.task} model", total=cfg.steps, on_cancel=self._request_stop)
        for b in (self._start_btn, self._resume_btn):
            b.setEnabled(False)
        self._stop_btn.setEnabled(True)
        self._runner.start(train_job, cfg, model_path=job.model_path, data=job.data, source=job.source,
                           resume=job.resume, stop=self._stop)

    def _request_stop(self) -> None:
        """Stop after the current step; the engine saves the model and a checkpoint."""
        if self._runner.running:
            self._runner.stop()
            self._stop_btn.setEnabled(False)
            self._status.info("Stopping after the current step; saving…")

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, StepUpdate):
            for name, value in ev.losses.items():
                self._loss_plot.add_point(name, ev.step, value, redraw=False)
            now = time.perf_counter()
            final = ev.step >= ev.total
            if not final and now - self._last_ui < UI_INTERVAL:  # keep the GUI thread free: a few updates/s
                return
            self._last_ui = now
            self._loss_plot.update()
            self._progress_bar.setValue(ev.step)
            if not self._stop.is_set():
                self._status.info(f"step {ev.step}/{ev.total} · {ev.it_per_s:.1f} it/s · "
                                  f"ETA {_fmt_time(ev.eta)} · elapsed {_fmt_time(ev.elapsed)}")
            if self._pbar is not None and (final or now - self._last_pbar > PBAR_INTERVAL):
                self._last_pbar = now  # last and rarely: napari's progress bar processes Qt events
                self._pbar.update(ev.step - self._pbar.n)
        elif isinstance(ev, ValidationUpdate):
            self._psnr_plot.add_point("model", ev.step, ev.psnr)
            self._psnr_plot.add_point("input", ev.step, ev.psnr_input)
            base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
            self._val_label.info(f"validation at step {ev.step}: PSNR {ev.psnr:.2f} dB{base}, SSIM {ev.ssim:.3f}, "
                                 f"uncertainty {ev.uncertainty:.4f}")
            self._show_preview(ev.preview)
            if ev.preview_uncertainty is not None:
                self._preview_uncertainty_layer(ev.preview_uncertainty)
        elif isinstance(ev, CheckpointSaved):
            if ev.kind == "checkpoint":
                self._resume_path.setText(ev.path)

    def _show_preview(self, preview: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Show input | output | target of the validation patch as one image layer."""
        chans = max(p.shape[0] for p in preview)
        panels = []
        for p in preview:
            p = np.repeat(p, 3, axis=0) if chans == 3 and p.shape[0] == 1 else p[:3] if chans >= 3 else p[:1]
            panels.append(np.moveaxis(p, 0, -1) if p.shape[0] == 3 else p[0])
        gap = np.ones((panels[0].shape[0], PREVIEW_GAP, *panels[0].shape[2:]), np.float32)
        self._preview_layer(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1).astype(np.float32))

    def _preview_layer(self, img: np.ndarray) -> Any:
        """Put `img` into the preview layer (made, right of everything shown, if needed)."""
        from napari.layers import Image

        rgb = img.ndim == 3
        layers = self._viewer.layers
        if PREVIEW_NAME in layers and isinstance(layers[PREVIEW_NAME], Image) and layers[PREVIEW_NAME].rgb == rgb:
            layers[PREVIEW_NAME].data = img
            return layers[PREVIEW_NAME]
        if PREVIEW_NAME in layers:
            layers.remove(PREVIEW_NAME)
        scale: tuple[float, ...] = (1.0, 1.0)
        translate = (0.0, 0.0)
        source = self._job.layer if self._job is not None else None
        if source is not None:
            scale = tuple(float(s) for s in source.scale[-2:])
        if len(layers):  # to the right of everything shown, so that it covers nothing
            (lo, hi) = np.asarray(layers.extent.world)[:, -2:]
            translate = (float(lo[0]), float(hi[1] + 0.05 * (hi[1] - lo[1])))
        return self._viewer.add_image(img, name=PREVIEW_NAME, rgb=rgb, contrast_limits=(0, 1), scale=scale,
                                      translate=translate, colormap="gray" if not rgb else None)

    def _preview_uncertainty_layer(self, spread: np.ndarray) -> Any:
        """Put the validation patch's uncertainty (h, w) over the preview's output panel (made if needed)."""
        from napari.layers import Image

        layers = self._viewer.layers
        if PREVIEW_NAME not in layers:
            return None
        preview = layers[PREVIEW_NAME]
        scale = tuple(float(s) for s in preview.scale[-2:])
        translate = (float(preview.translate[-2]),
                     float(preview.translate[-1]) + (spread.shape[1] + PREVIEW_GAP) * scale[1])
        high = float(np.percentile(spread, 99.5)) if spread.size else 0.0
        limits = (0.0, high if high > 0 else 1.0)
        name = PREVIEW_UNCERTAINTY_NAME
        if name in layers and isinstance(layers[name], Image) and layers[name].ndim == 2 and not layers[name].rgb:
            layer = layers[name]
            layer.data = spread
            if tuple(layer.translate) != translate or tuple(layer.scale) != scale:
                layer.scale, layer.translate = scale, translate
            layer.contrast_limits = limits
        else:
            if name in layers:
                layers.remove(name)
            layer = self._viewer.add_image(spread, name=name, colormap="magma", blending="additive", opacity=0.6,
                                           contrast_limits=limits, scale=scale, translate=translate)
        if layers.index(layer) < layers.index(preview):  # the preview was remade on top: stay over it
            layers.move(layers.index(layer), len(layers))
        return layer

    def _prepare_preview(self, cfg: TrainConfig, data: Any) -> None:
        """Make the preview layer before training starts (adding a layer is the slowest GUI step)."""
        if data is None or cfg.val_fraction <= 0:
            return
        img_c, tgt_c = data.channels
        chans = max(img_c, tgt_c, 3 if cfg.task == "colorize" else 1)
        size = cfg.patch_size
        if PREVIEW_NAME not in self._viewer.layers:
            shape = (size, 3 * size + 2 * PREVIEW_GAP) + ((3,) if chans >= 3 else ())
            self._preview_layer(np.zeros(shape, np.float32))
        if PREVIEW_UNCERTAINTY_NAME not in self._viewer.layers:
            self._preview_uncertainty_layer(np.zeros((size, size), np.float32))

    def _on_finished(self, outcome: Outcome) -> None:
        job, self._job = self._job, None
        pbar, self._pbar = self._pbar, None
        model_path = job.model_path if job is not None else None
        if outcome.error is not None:
            state = "failed"
            self._status.error(f"Training failed: {outcome.error}", notify=False)  # napari notifies
        else:
            model = outcome.result
            status = (model.training.get("status") if model is not None else None) or "stopped"
            state = "finished" if status == "finished" else "stopped"
            if model_path is not None and model_path.is_file():
                RECENT.add(model_path)  # the restoration widgets list it now
                steps = model.training.get("steps_done") if model is not None else None
                done = f" after {steps} steps" if steps is not None else ""
                self._status.info(f"Model saved{done} ({status}): {model_path}. It is now listed in the "
                                  "Denoise/Inpaint/Colorize/Translate widgets.")
                self._last_model = str(model_path.resolve())
                self.model_saved.emit(str(model_path))
            else:
                self._status.info("Training stopped before a model was saved.")
        for b in (self._start_btn, self._resume_btn):
            b.setEnabled(True)
        self._stop_btn.setEnabled(False)
        if pbar is not None:
            pbar.close()
        self.done.emit(state)

    def open_export(self) -> Any:
        """Open the Export dialog, with the model saved last (if any) chosen; return it."""
        from .export import ExportDialog

        if self._export_dialog is None:
            self._export_dialog = ExportDialog(None, parent=self)
        if self._last_model is not None and Path(self._last_model).exists():
            self._export_dialog.set_model(self._last_model)
        self._export_dialog.show()
        self._export_dialog.raise_()
        return self._export_dialog

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        """Stop (and save) a running training when the widget closes."""
        self._stop.set()
        super().closeEvent(event)


def _spin(lo: int, hi: int, value: int, step: int = 1, suffix: str = "") -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setSingleStep(step)
    if suffix:
        s.setSuffix(suffix)
    return s


def _spatial(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, ...]:
    """Shape without an RGB axis."""
    return tuple(shape[:-1]) if channel_axis is not None else tuple(shape)


def _folder_is_rgb(folder: str) -> bool:
    """Whether the folder's first image is RGB(A) (read channel-last)."""
    from ...engine.io import read_image

    first = list_images(Path(folder).expanduser())[0]
    shape = read_image(first).shape
    return len(shape) == 3 and shape[-1] in (3, 4)


def _check_folder(folder: str) -> None:
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise ValueError(f"The folder {folder} does not exist.")
    if not list_images(p):
        raise ValueError(f"The folder {folder} holds no TIFF/PNG/JPEG images.")

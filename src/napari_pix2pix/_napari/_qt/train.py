"""The Train widget: pairs from layers or folders, a recipe, a warm start, a time budget; live curves and preview.

The widget checks every choice before work starts (shapes, folders, patch size, settings),
runs :func:`..jobs.train_job` in a worker thread and listens to the engine's typed updates.
What is left at "auto" (batch, patch, learning rate, validation interval) is decided by the
engine once the data are known, and shown when the run starts. The saved model is added to
the remembered models, so it shows up in the restoration widgets at once. The controls
scroll inside the dock and the rarely changed ones fold away under "Advanced".
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
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...engine.core.device import resolve_device
from ...engine.core.progress import StatusUpdate
from ...engine.core.tasks import TASKS
from ...engine.formats.modelfile import ModelFileError
from ...engine.images.io import list_images
from ...engine.training.config import RESUMABLE, resume_config
from ...engine.training.data import patch_shape
from ...engine.training.loop import (
    CHECKPOINT,
    CheckpointSaved,
    StepUpdate,
    TrainConfig,
    ValidationUpdate,
)
from ...engine.training.recipes import DEFAULT_RECIPES, RECIPES
from ...engine.training.setup import checkpoint_config
from ...engine.training.warmstart import compatible_tasks
from .. import layers as lyr
from ..choices import RECENT, model_choices, read_header, short_path
from ..jobs import train_job, training_data, warm_up_in_background
from .common import (
    DockWidget,
    LayerCombo,
    Outcome,
    PathEdit,
    Section,
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

TASK_LABELS = {"denoise": "Denoise", "inpaint": "Inpaint (fill masked regions)", "colorize": "Colorize (gray → colour)",
               "translate": "Translate (any image → image)"}
PRESETS = {
    "unet_tiny": ("Tiny: 2 M parameters, fast on a CPU", "Patches: multiples of 64 px"),
    "unet_small": ("Small: 10 M parameters, CPU or GPU", "Patches: multiples of 128 px"),
    "unet_128": ("Paper's U-Net 128: 42 M parameters, GPU", "Patches: multiples of 128 px"),
    "unet_256": ("Paper's U-Net 256: 54 M parameters, GPU", "Patches: multiples of 256 px"),
}
PRESETS_3D = {
    "unet3d_tiny": ("Tiny 3D: 1.2 M parameters, CPU or GPU", "Patches: multiples of 4 planes x 16 px"),
    "unet3d_small": ("Small 3D: 7.3 M parameters, GPU", "Patches: multiples of 8 planes x 32 px"),
}
DIMS = (
    ("2d", "2D: images (stacks plane by plane)"),
    ("2.5d", "2.5D: each plane with its neighbours"),
    ("3d", "3D: volumes (Z, Y, X)"),
)
SOURCES = (
    ("layers", "Two image layers: input → target"),
    ("clean", "A clean image layer (pairs are synthesized)"),
    ("folders", "Two folders: input → target (same file names)"),
    ("clean_dir", "A folder of clean images (pairs are synthesized)"),
)
LOSS_NAMES = {"G_GAN": "adversarial", "G_L1": "L1 to target", "G_L2": "L2 to target", "D": "discriminator"}
TARGET_HINTS = ("clean", "target", "reference", "ground", "truth", "gt", "high", "sharp", "colour", "color")
PREVIEW_NAME = "pix2pix preview (input | output | target)"
PREVIEW_UNCERTAINTY_NAME = "pix2pix preview uncertainty"  # over the preview's output panel (hidden at first)
PREVIEW_GAP = 4  # pixels between the preview's panels
UI_INTERVAL = 0.25  # seconds between updates of the progress display and curves (repaints cost GUI time)
MODEL_FILTER = "Pix2Pix models (*.safetensors)"
DEFAULT_MINUTES = 5.0


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


def unused_path(path: Path) -> Path:
    """`path`, or ``<stem>-2``, ``-3``, ... if a file of that name exists (a new run never overwrites a model)."""
    if not path.exists():
        return path
    stem = path.name.removesuffix(".safetensors")
    base, _, n = stem.rpartition("-")
    start = int(n) + 1 if base and n.isdigit() else 2
    stem = base if base and n.isdigit() else stem
    for k in range(start, start + 10_000):
        candidate = path.with_name(f"{stem}-{k}.safetensors")
        if not candidate.exists():
            return candidate
    raise ValueError(f"could not find a free file name beside {path}")


def _fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _auto_spin(maximum: int, step: int, suffix: str, tip: str) -> QSpinBox:
    """A spin box whose 0 reads "auto" (decided from the data when the run starts)."""
    s = QSpinBox()
    s.setRange(0, maximum)
    s.setSingleStep(step)
    s.setSpecialValueText("auto")
    s.setValue(0)
    if suffix:
        s.setSuffix(suffix)
    s.setToolTip(tip + "\n“auto”: decided from the data when the run starts (shown then).")
    return s


class TrainWidget(DockWidget):
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
        self._preview_shown = False
        self._make_source_widgets(viewer)
        self._make_setting_widgets()
        self._make_advanced_widgets()
        self._make_run_widgets()
        self._lay_out()
        self._connect()
        self._on_task()
        self._preselect_target()
        self._warm = warm_up_in_background()  # torch's first optimizer import, off the GUI thread

    # ------------------------------------------------------------------ widgets
    def _make_source_widgets(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image

        self._task_combo = QComboBox()
        for t in TASKS:
            self._task_combo.addItem(TASK_LABELS[t], t)
        self._task_combo.setToolTip("What the model learns to do")
        self._source_combo = QComboBox()
        for key, label in SOURCES:
            self._source_combo.addItem(label, key)
        self._source_combo.setToolTip("Real pairs (an input and its target), or clean images from which the "
                                      "task's inputs are synthesized (noise, holes, gray)")
        self._input_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._input_combo.setToolTip("The degraded images the model will be given (e.g. noisy)")
        self._target_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._target_combo.setToolTip("What the model should make of them (e.g. clean), pixel for pixel")
        self._clean_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._input_dir = PathEdit(self._browse_folder, "folder of input images")
        self._target_dir = PathEdit(self._browse_folder, "folder of target images (same file names)")
        self._clean_dir = PathEdit(self._browse_folder, "folder of clean images")
        self._source_stack = QStackedWidget()
        pages: list[list[tuple[str, QWidget]]] = [
            [("Input", self._input_combo), ("Target", self._target_combo)],
            [("Clean images", self._clean_combo)],
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
        self._recipe_combo = QComboBox()
        self._recipe_combo.setToolTip("\n".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
        self._start_combo = QComboBox()
        self._start_combo.setToolTip("Scratch trains a new network; a trained model (a bundled one or a file of "
                                     "yours) starts from what it knows and usually needs far less time.\n"
                                     "Automatic: the bundled denoiser for single-channel denoise and translate runs, "
                                     "scratch otherwise.")
        self._duration_combo = QComboBox()
        self._duration_combo.addItem("minutes", "minutes")
        self._duration_combo.addItem("steps", "steps")
        self._duration_combo.setToolTip("A time budget (the steps are derived from the measured speed, and the run "
                                        "ends on time with its learning-rate schedule complete) or a number of steps")
        self._minutes_spin = QDoubleSpinBox()
        self._minutes_spin.setRange(0.1, 100_000)
        self._minutes_spin.setDecimals(1)
        self._minutes_spin.setValue(DEFAULT_MINUTES)
        self._steps_spin = _spin(1, 10_000_000, 2000, 100)
        self._duration_stack = QStackedWidget()
        self._duration_stack.addWidget(self._minutes_spin)
        self._duration_stack.addWidget(self._steps_spin)
        self._dims_combo = QComboBox()
        for key, label in DIMS:
            self._dims_combo.addItem(label, key)
        self._dims_combo.setToolTip(
            "2D: a network for planes; a stack is restored plane by plane.\n"
            "2.5D: a 2D network that also sees the neighbouring planes (as channels): cheap, uses Z.\n"
            "3D: a 3D network: volumes are restored as volumes (best for isotropic-ish stacks; slower)")
        self._context_spin = _spin(1, 8, 1, 1, " each side")
        self._context_spin.setToolTip("2.5D: how many neighbouring planes above and below the network sees")
        self._context_spin.setEnabled(False)
        self._preset_combo = QComboBox()
        self._fill_presets("2d")
        self._preset_combo.setToolTip("The size of a new network (a warm start keeps the starting model's)")
        self._output = PathEdit(self._browse_output, "default: ~/napari-pix2pix-models/<task>-<time>")
        self._output.setToolTip("Where the model is saved. A new run never overwrites a model: it adds -2, -3, …")

    def _make_advanced_widgets(self) -> None:
        self._patch_spin = _auto_spin(2048, 32, " px", "Side of the square patches cut from the images for each step")
        self._batch_spin = _auto_spin(256, 1, "", "Patches per training step")
        self._lr_spin = QDoubleSpinBox()
        self._lr_spin.setDecimals(6)
        self._lr_spin.setRange(0.0, 1.0)
        self._lr_spin.setSingleStep(1e-4)
        self._lr_spin.setSpecialValueText("auto")
        self._lr_spin.setValue(0.0)
        self._lr_spin.setToolTip("Adam's learning rate. “auto”: the recipe's (lower for a warm start)")
        self._l1_spin = QDoubleSpinBox()
        self._l1_spin.setRange(0, 10_000)
        self._l1_spin.setSpecialValueText("auto")
        self._l1_spin.setValue(0)
        self._l1_spin.setToolTip("Weight of the pixel loss (L1 to the target) against the adversarial loss. "
                                 "“auto”: the recipe's (the paper's 100)")
        self._val_spin = QDoubleSpinBox()
        self._val_spin.setRange(0, 50)
        self._val_spin.setSingleStep(5)
        self._val_spin.setDecimals(0)
        self._val_spin.setSuffix(" %")
        self._val_spin.setValue(10)
        self._val_spin.setToolTip("Share of the training images (or, for a single image, of its rows; for a "
                                  "short volume, of its planes) held out to measure progress; 0: no validation")
        self._val_every_spin = _auto_spin(1_000_000, 10, " steps", "How often the held-out part is measured")
        self._device_combo = device_combo()
        self._resume_path = PathEdit(self._browse_checkpoint, "a checkpoint.safetensors to continue from")

    def _make_run_widgets(self) -> None:
        self._start_btn = QPushButton("Start")
        self._stop_btn = QPushButton("Stop")
        self._stop_btn.setEnabled(False)
        self._stop_btn.setToolTip("Stop after the current step; the model and a checkpoint are saved")
        self._resume_btn = QPushButton("Resume")
        self._resume_btn.setToolTip("Continue from the checkpoint (“Advanced”), with the data chosen above")
        self._export_btn = QPushButton("Export…")
        self._export_btn.setToolTip("Export a model (by default the one trained last) as a bioimage.io package, "
                                    "ONNX or TorchScript")
        self._progress_bar = QProgressBar()
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._status = StatusLabel()
        self._val_label = StatusLabel()
        self._loss_plot = CurvesPlot("training losses (log scale)", log_y=True)
        for name in ("G_GAN", "G_L1", "D"):
            self._loss_plot.add_series(name, label=LOSS_NAMES[name])
        self._psnr_plot = CurvesPlot("held-out PSNR (dB)")
        self._psnr_plot.add_series("model", "#00e676", label="model")
        self._psnr_plot.add_series("input", "#bdbdbd", dashed=True, label="input")
        for plot in (self._loss_plot, self._psnr_plot):
            plot.setFixedHeight(96)

    def _lay_out(self) -> None:
        duration = QHBoxLayout()
        duration.addWidget(self._duration_stack, 1)
        duration.addWidget(self._duration_combo)
        form = QFormLayout()
        form.addRow("Task", self._task_combo)
        form.addRow("Training data", self._source_combo)
        form.addRow(self._source_stack)
        form.addRow("Recipe", self._recipe_combo)
        form.addRow("Start from", self._start_combo)
        form.addRow("Train for", duration)
        dims = QHBoxLayout()
        dims.addWidget(self._dims_combo, 1)
        dims.addWidget(self._context_spin)
        form.addRow("Dimensions", dims)
        form.addRow("Network size", self._preset_combo)
        form.addRow("Save model as", self._output)
        adv = QWidget()
        adv_form = QFormLayout(adv)
        adv_form.setContentsMargins(8, 0, 0, 0)
        adv_form.addRow("Patch size", self._patch_spin)
        adv_form.addRow("Batch size", self._batch_spin)
        adv_form.addRow("Learning rate", self._lr_spin)
        adv_form.addRow("Pixel-loss weight", self._l1_spin)
        adv_form.addRow("Held out", self._val_spin)
        adv_form.addRow("Validate every", self._val_every_spin)
        adv_form.addRow("Device", self._device_combo)
        adv_form.addRow("Resume from", self._resume_path)
        self._advanced = Section("Advanced", adv)
        buttons = QHBoxLayout()
        buttons.addWidget(self._start_btn, 1)
        buttons.addWidget(self._stop_btn)
        buttons.addWidget(self._resume_btn)
        buttons.addWidget(self._export_btn)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addWidget(self._advanced)
        layout.addLayout(buttons)
        layout.addWidget(self._progress_bar)
        layout.addWidget(self._status)
        layout.addWidget(self._val_label)
        layout.addWidget(self._loss_plot)
        layout.addWidget(self._psnr_plot)
        layout.addStretch(1)

    def _connect(self) -> None:
        changed = {  # choice -> what follows from it
            self._source_combo: self._source_stack.setCurrentIndex,
            self._task_combo: self._on_task,
            self._preset_combo: self._on_preset,
            self._dims_combo: self._on_dims,
            self._start_combo: self._on_start_from,
            self._duration_combo: self._duration_stack.setCurrentIndex,
            self._input_combo: self._preselect_target,
        }
        for combo, slot in changed.items():
            combo.currentIndexChanged.connect(slot)
        self._context_spin.valueChanged.connect(self._refresh_starts)
        buttons = {self._start_btn: self._start_clicked, self._stop_btn: self._request_stop,
                   self._resume_btn: self._resume_clicked, self._export_btn: self.open_export}
        for button, slot in buttons.items():
            button.clicked.connect(slot)
        RECENT.changed.connect(self._refresh_starts)
        # closing napari deletes docked widgets without closeEvent: stop (and save) a running training then too
        self.destroyed.connect(lambda *_, stop=self._stop: stop.set())

    # ------------------------------------------------------------------ choices
    def set_steps(self, steps: int) -> None:
        """Train for `steps` steps (instead of a time budget)."""
        self._duration_combo.setCurrentIndex(self._duration_combo.findData("steps"))
        self._steps_spin.setValue(int(steps))

    def set_minutes(self, minutes: float) -> None:
        """Train for `minutes` (the steps are derived from the measured speed)."""
        self._duration_combo.setCurrentIndex(self._duration_combo.findData("minutes"))
        self._minutes_spin.setValue(float(minutes))

    def set_start_from(self, ref: str | None) -> None:
        """Start from "scratch", "auto", a bundled model's name or a model file (added to the choices)."""
        ref = "auto" if ref is None else str(ref)
        i = self._start_combo.findData(ref)
        if i < 0 and ref not in ("auto", "scratch"):
            RECENT.add(ref)  # refreshes the choices
            i = self._start_combo.findData(str(Path(ref).resolve()))
        if i < 0:
            raise ValueError(f"{ref} cannot start a {self._task_combo.currentData()} run")
        self._start_combo.setCurrentIndex(i)

    def _on_task(self, *_: Any) -> None:
        task = self._task_combo.currentData()
        source = self._source_combo.currentData()
        if task == "inpaint" and source in ("layers", "folders"):  # masks are synthesized from clean images
            self._source_combo.setCurrentIndex(1 if source == "layers" else 3)
        elif task == "translate" and source in ("clean", "clean_dir"):
            self._source_combo.setCurrentIndex(0 if source == "clean" else 2)
        current = self._recipe_combo.currentData()
        self._recipe_combo.blockSignals(True)
        self._recipe_combo.clear()
        self._recipe_combo.addItem(f"Default for {task} ({DEFAULT_RECIPES[task]})", None)
        for r in RECIPES.values():
            if r.name != "noise2noise" or task == "denoise":
                self._recipe_combo.addItem(f"{r.name.capitalize()}: {r.description}", r.name)
                self._recipe_combo.setItemData(self._recipe_combo.count() - 1, r.description, 3)
        i = self._recipe_combo.findData(current)
        self._recipe_combo.setCurrentIndex(max(i, 0))
        self._recipe_combo.blockSignals(False)
        self._refresh_starts()

    def _refresh_starts(self, *_: Any) -> None:
        """The models a run of this task can start from: automatic, scratch, bundled ones, the user's files."""
        try:
            task = self._task_combo.currentData()
            current = self._start_combo.currentData()
        except RuntimeError:  # widget closed: stop listening
            RECENT.changed.disconnect(self._refresh_starts)
            return
        self._start_combo.blockSignals(True)
        self._start_combo.clear()
        self._start_combo.addItem("Automatic (a bundled model where it fits)", "auto")
        self._start_combo.addItem("Scratch: a new network", "scratch")
        dims = self._dims_combo.currentData()
        want = (3 if dims == "3d" else 2, self._context_spin.value() if dims == "2.5d" else 0)
        for info in model_choices(None):
            same_dims = (info.spatial_dims, info.z_context) == want or (  # a 2D model starts 2.5D and 3D runs too
                dims in ("2.5d", "3d") and info.spatial_dims == 2 and info.z_context == 0)
            if compatible_tasks(info.task, task) and same_dims:
                label = f"{info.name} (bundled)" if info.bundled else f"{Path(info.ref).name} ({info.task})"
                self._start_combo.addItem(label, info.ref)
                self._start_combo.setItemData(self._start_combo.count() - 1, info.tooltip, 3)
        i = self._start_combo.findData(current)
        self._start_combo.setCurrentIndex(max(i, 0))
        self._start_combo.blockSignals(False)
        self._on_start_from()

    def _fill_presets(self, dims: str) -> None:
        self._preset_combo.blockSignals(True)
        self._preset_combo.clear()
        for name, (text, tip) in (PRESETS_3D if dims == "3d" else PRESETS).items():
            self._preset_combo.addItem(text, name)
            self._preset_combo.setItemData(self._preset_combo.count() - 1, f"{name}. {tip}", 3)  # 3: ToolTipRole
        self._preset_combo.blockSignals(False)

    def _on_dims(self, *_: Any) -> None:
        dims = self._dims_combo.currentData()
        self._context_spin.setEnabled(dims == "2.5d")
        self._fill_presets(dims)
        volume = dims == "3d"
        self._patch_spin.setEnabled(not volume)
        self._patch_spin.setToolTip("3D: automatic (16 planes of 64² px, fewer planes for short stacks)" if volume
                                    else "Side of the square patches cut from the images for each step")
        if volume:
            self._patch_spin.setValue(0)
        self._refresh_starts()
        self._on_preset()

    def _on_start_from(self, *_: Any) -> None:
        warm = self._start_combo.currentData() not in ("auto", "scratch", None)
        self._preset_combo.setEnabled(not warm)  # a warm start keeps the starting model's network

    def _on_preset(self, *_: Any) -> None:
        multiple = TrainConfig(preset=self._preset_combo.currentData()).generator_config(1, 1).multiple
        self._patch_spin.setSingleStep(max(multiple, 32))
        if self._patch_spin.value() % multiple:
            self._patch_spin.setValue(0)

    def _preselect_target(self, *_: Any) -> None:
        """A target other than the input: a layer whose name or sample role says so, else the next one."""
        try:
            a = self._input_combo.currentData()
            if a is None or self._target_combo.currentData() not in (a, None):
                return
            names = [self._target_combo.itemData(i) for i in range(self._target_combo.count())]
            others = [n for n in names if n is not None and n != a and n in self._viewer.layers]
        except RuntimeError:  # the widget is gone
            return
        if not others:
            return

        def score(name: str) -> int:
            layer = self._viewer.layers[name]
            role = (getattr(layer, "metadata", {}) or {}).get("napari_pix2pix_sample", {}).get("role")
            return 2 * (role in ("clean", "target")) + any(h in name.lower() for h in TARGET_HINTS)

        self._target_combo.set_layer(max(others, key=score))

    def _browse_folder(self, target: PathEdit) -> None:
        path = open_folder(self, "Choose a folder of images", target.text())
        if path:
            target.setText(path)

    def _browse_output(self, target: PathEdit) -> None:
        start = target.text() or str(default_model_path(self._task_combo.currentData()))
        path = save_file(self, "Save the model as", start, MODEL_FILTER)
        if path:
            target.setText(path)

    def _browse_checkpoint(self, target: PathEdit) -> None:
        start = target.text() or (str(Path(self._output.text()).with_suffix(".checkpoints")) if self._output.text()
                                  else str(Path.home()))
        path = open_file(self, "Resume from a training checkpoint", start, "Checkpoints (*.safetensors)")
        if path:
            target.setText(path)

    def config(self) -> TrainConfig:
        """The settings as a :class:`TrainConfig` (raises ValueError with a message if invalid); None = auto."""
        by_time = self._duration_combo.currentData() == "minutes"
        start = self._start_combo.currentData()
        warm = start not in ("auto", "scratch", None)
        kwargs: dict[str, Any] = dict(
            task=self._task_combo.currentData(), recipe=self._recipe_combo.currentData(),
            preset=None if warm or start == "auto" else self._preset_combo.currentData(),
            start_from=start if start != "auto" else None,
            minutes=self._minutes_spin.value() if by_time else None,
            steps=None if by_time else self._steps_spin.value(),
            patch_size=self._patch_spin.value() or None, batch_size=self._batch_spin.value() or None,
            lr=self._lr_spin.value() or None, lambda_l1=self._l1_spin.value() or None,
            val_fraction=self._val_spin.value() / 100, val_every=self._val_every_spin.value() or None,
            device=self._device_combo.currentData(),
            checkpoint_every=max(100, self._steps_spin.value() // 5) if not by_time else 500,
            spatial_dims=3 if self._dims_combo.currentData() == "3d" else None,
            z_context=self._context_spin.value() if self._dims_combo.currentData() == "2.5d" else 0,
        )
        if start == "auto" and self._preset_combo.currentIndex() > 0:  # a network size chosen: a new network
            kwargs["preset"], kwargs["start_from"] = self._preset_combo.currentData(), "scratch"
        kwargs.update(self._config_overrides)
        if kwargs.get("generator") and kwargs.get("start_from") is None:
            kwargs["start_from"] = "scratch"  # an architecture given (tests, experts): a new network
        return TrainConfig(**kwargs)

    def _source(self, config: TrainConfig) -> tuple[dict[str, Any], Any]:
        """(make_data keyword arguments, layer the data come from) for the chosen source; checks it."""
        kind = self._source_combo.currentData()
        if kind == "layers":
            a, b = self._input_combo.layer(), self._target_combo.layer()
            if a is None or b is None:
                raise ValueError("Choose the input and the target image layers (File › Open Sample › Pix2Pix "
                                 "has pairs), or train from clean images.")
            if a.name == b.name:  # names are unique in a layer list (napari hands plugins proxies: no `is`)
                raise ValueError(f"Input and target are the same layer (“{a.name}”): choose the paired target "
                                 "(e.g. the clean image), or train from clean images.")
            xa, ca = lyr.image_array(a)
            xb, cb = lyr.image_array(b)
            sa, sb = _spatial(xa.shape, ca), _spatial(xb.shape, cb)
            if sa != sb:
                raise ValueError(f"Input “{a.name}” {sa} and target “{b.name}” {sb} differ in shape: paired "
                                 "images must match pixel for pixel.")
            if config.task == "colorize" and cb is None:
                raise ValueError(f"A colorizer learns colour: the target “{b.name}” is grayscale. Choose an RGB "
                                 "target layer, or train from RGB clean images (the gray input is synthesized).")
            channel_axis = -1 if (ca is not None or cb is not None) else None
            return {"input": np.asarray(xa), "target": np.asarray(xb), "channel_axis": channel_axis}, a
        if kind == "clean":
            c = self._clean_combo.layer()
            if c is None:
                raise ValueError("Choose the layer of clean images to synthesize training pairs from.")
            if config.task == "translate":
                raise ValueError("Translate models need real pairs: choose input and target layers or folders.")
            xc, cc = lyr.image_array(c)
            if config.task == "colorize" and cc is None:
                raise ValueError(f"A colorizer learns colour from RGB images: “{c.name}” is grayscale.")
            return {"clean": np.asarray(xc), "channel_axis": cc}, c
        if kind == "folders":
            din, dtg = self._input_dir.text(), self._target_dir.text()
            if not din or not dtg:
                raise ValueError("Choose both an input folder and a target folder.")
            for d in (din, dtg):
                _check_folder(d)
            from ...engine.training.data import pair_folders

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
        if resume is None:
            model_path = unused_path(model_path)  # a new run never overwrites a saved model
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
        saved = checkpoint_config(meta)
        self._task_combo.setCurrentIndex(max(self._task_combo.findData(saved.task), 0))
        if saved.z_context:
            self._context_spin.setValue(saved.z_context)
        self._dims_combo.setCurrentIndex(self._dims_combo.findData(
            "3d" if saved.dims == 3 else "2.5d" if saved.z_context else "2d"))
        if saved.preset is not None:
            self._preset_combo.setCurrentIndex(max(self._preset_combo.findData(saved.preset), 0))
        self._recipe_combo.setCurrentIndex(max(self._recipe_combo.findData(saved.recipe), 0))
        self._patch_spin.setValue(saved.patch_size if isinstance(saved.patch_size, int) else 0)
        self._batch_spin.setValue(saved.batch_size or 0)
        self._lr_spin.setValue(saved.lr or 0.0)
        self._l1_spin.setValue(saved.lambda_l1 or 0.0)
        self._val_spin.setValue(100 * saved.val_fraction)
        step = int(meta.get("step", 0))
        if config.steps is not None and config.steps <= step:
            raise ValueError(f"The checkpoint is at step {step}; set “Train for” above {step} steps (or a number "
                             "of minutes) to train further.")
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
            self._clear_results(curves=resume is None)  # no last run's bar and curves beside a new problem
            self._status.error(str(e))
            return
        self._start(job)

    def _clear_results(self, curves: bool = True) -> None:
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._val_label.info("")
        if curves:
            self._loss_plot.clear()
            self._psnr_plot.clear()

    def _start(self, job: TrainJob) -> None:
        cfg = job.config
        self._job = job
        self._last_ui = self._last_pbar = 0.0
        self._preview_shown = False
        self._clear_results(curves=job.resume is None)  # a resumed run keeps its curves
        self._output.setText(str(job.model_path))
        verb = "Resuming" if job.resume else "Training"
        length = f"{cfg.steps} steps" if cfg.steps else f"{cfg.minutes:g} min"
        self._status.info(f"{verb} a {cfg.task} model ({length}) → {short_path(job.model_path)}…")
        self._progress_bar.setRange(0, cfg.steps or 0)  # busy until a time budget's steps are known
        self._prepare_preview(cfg, job.data)
        self._pbar = napari_progress(f"Train {cfg.task} model", total=cfg.steps or 0, on_cancel=self._request_stop)
        for b in (self._start_btn, self._resume_btn):
            b.setEnabled(False)
        self._stop_btn.setEnabled(True)
        self._runner.start(train_job, cfg, model_path=job.model_path, data=job.data, source=job.source,
                           resume=job.resume, stop=self._stop)

    def stop_job(self) -> None:
        """Stop the running training (it saves its model and checkpoint): Stop, closing the dock, quitting."""
        self._stop.set()

    def _request_stop(self) -> None:
        """Stop after the current step; the engine saves the model and a checkpoint."""
        self._ask_to_stop(self._runner, self._stop_btn, self._status, "Stopping after the current step; saving…")

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, StepUpdate):
            self._on_step(ev)
        elif isinstance(ev, ValidationUpdate):
            self._psnr_plot.add_point("model", ev.step, ev.psnr)
            self._psnr_plot.add_point("input", ev.step, ev.psnr_input)
            base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
            against = " against the second noisy image" if ev.target == "noisy" else ""
            self._val_label.info(f"held-out part at step {ev.step}: PSNR {ev.psnr:.2f} dB{base}{against}, "
                                 f"SSIM {ev.ssim:.3f}, uncertainty {ev.uncertainty:.4f}")
            self._show_preview(ev.preview)
            if ev.preview_uncertainty is not None:
                self._preview_uncertainty_layer(ev.preview_uncertainty)
        elif isinstance(ev, StatusUpdate):
            self._on_status(ev)
        elif isinstance(ev, CheckpointSaved):
            if ev.kind == "checkpoint":
                self._resume_path.setText(ev.path)

    def _on_step(self, ev: StepUpdate) -> None:
        for name, value in ev.losses.items():
            self._loss_plot.add_point(name, ev.step, value, redraw=False, label=LOSS_NAMES.get(name, name))
        now = time.perf_counter()
        final = bool(ev.total) and ev.step >= ev.total
        if not final and now - self._last_ui < UI_INTERVAL:  # keep the GUI thread free: a few updates/s
            return
        self._last_ui = now
        self._loss_plot.update()
        if self._progress_bar.maximum() != ev.total:
            self._progress_bar.setRange(0, ev.total)  # 0: busy (a time budget's warm-up: the steps are not known)
        self._progress_bar.setValue(ev.step)
        if not self._stop.is_set():
            if ev.total:
                self._status.info(f"step {ev.step}/{ev.total} · {ev.it_per_s:.1f} steps/s · "
                                  f"{_fmt_time(ev.eta)} left · {_fmt_time(ev.elapsed)} so far")
            else:
                self._status.info(f"step {ev.step} · measuring the speed to fit the time budget · "
                                  f"{ev.it_per_s:.1f} steps/s · {_fmt_time(ev.elapsed)} so far")
        if ev.total:
            self._advance_pbar(self._pbar, ev.step, ev.total, final, now)

    def _on_status(self, ev: StatusUpdate) -> None:
        """What "auto" and the recipe decided (shown in the auto fields), and a time budget's steps."""
        plan = ev.plan
        if plan is not None:
            for spin, value in ((self._patch_spin, plan.patch_size), (self._batch_spin, plan.batch_size),
                                (self._val_every_spin, plan.val_every)):
                spin.setSpecialValueText(f"auto ({value})" if value else "auto")
            self._lr_spin.setSpecialValueText(f"auto ({plan.lr:g})" if plan.lr else "auto")
            l1 = plan.losses.lambda_l1
            self._l1_spin.setSpecialValueText(f"auto ({l1:g})" if l1 else "auto")
            if plan.steps:
                self._progress_bar.setRange(0, plan.steps)
        if ev.message:
            self._status.info(ev.message[0].upper() + ev.message[1:] + "…")

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
        layer = self._viewer.add_image(img, name=PREVIEW_NAME, rgb=rgb, contrast_limits=(0, 1), scale=scale,
                                       translate=translate, colormap="gray" if not rgb else None)
        self._viewer.reset_view()  # the preview lies beside the images: show both
        return layer

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
                                           contrast_limits=limits, scale=scale, translate=translate,
                                           visible=False)  # shown when asked: it would tint the output panel
        if layers.index(layer) < layers.index(preview):  # the preview was remade on top: stay over it
            layers.move(layers.index(layer), len(layers))
        return layer

    def _prepare_preview(self, cfg: TrainConfig, data: Any) -> None:
        """Make the preview layer before training starts (adding a layer is the slowest GUI step)."""
        if data is None or cfg.val_fraction <= 0:
            return
        img_c, tgt_c = data.channels
        chans = max(img_c // (2 * cfg.z_context + 1), tgt_c, 3 if cfg.task == "colorize" else 1)
        size = patch_shape(cfg.patch_size or 64, cfg.dims)[-1]
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
            self._progress_bar.setValue(0)
            hint = (" Out of memory: use a smaller batch or patch size (Advanced), or the CPU."
                    if getattr(outcome.error, "out_of_memory", False) else "")
            self._status.error(f"Training failed: {outcome.error}.{hint}", failure=True)
        else:
            model = outcome.result
            status = (model.training_summary.get("status") if model is not None else None) or "stopped"
            state = "finished" if status == "finished" else "stopped"
            if model_path is not None and model_path.is_file():
                RECENT.add(model_path)  # the restoration widgets list it now
                from ..choices import SESSION

                SESSION.trained(model_path)
                steps = model.training_summary.get("steps_done") if model is not None else None
                done = f" after {steps} steps" if steps is not None else ""
                summary = model.training_summary if model is not None else {}
                best = summary.get("best_val_psnr")
                kept = (f" (the weights of step {summary['weights_of_step']}, best on the held-out part: "
                        f"{best:.2f} dB)" if isinstance(best, float) and best > -1e9
                        and summary.get("weights_of_step") not in (None, steps) else "")
                self._status.info(f"Model saved{done} ({status}){kept}: {model_path}. It is now listed in the "
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
    from ...engine.images.io import read_image

    first = list_images(Path(folder).expanduser())[0]
    shape = read_image(first).shape
    return len(shape) == 3 and shape[-1] in (3, 4)


def _check_folder(folder: str) -> None:
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise ValueError(f"The folder {folder} does not exist.")
    if not list_images(p):
        raise ValueError(f"The folder {folder} holds no TIFF/PNG/JPEG images.")

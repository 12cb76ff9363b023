"""The Train widget's settings: recipe, starting model, duration, dimensions, network, file, and "Advanced".

The Advanced fields are made from the engine's table of options
(:data:`napari_pix2pix.engine.training.config.OPTIONS`, the entries with a ``widget``): the
same options, defaults, help and ranges as the Python API and the command line. A field at 0
reads "auto" (decided from the data when the run starts, and shown then).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...engine.training.config import OPTIONS, Option, TrainConfig
from ...engine.training.recipes import DEFAULT_RECIPES, RECIPES
from ...engine.training.warmstart import compatible_tasks
from ..choices import RECENT, model_choices
from .common import PathEdit, Section, device_combo, open_file, save_file

PRESETS = {
    "unet_tiny": ("Tiny (2 M), CPU", "2 M parameters, fast on a CPU. Patches: multiples of 64 px"),
    "unet_small": ("Small (10 M)", "10 M parameters, CPU or GPU. Patches: multiples of 128 px"),
    "unet_128": ("U-Net 128 (42 M), GPU", "The paper's U-Net 128: 42 M parameters, for a GPU. Patches: multiples "
                 "of 128 px"),
    "unet_256": ("U-Net 256 (54 M), GPU", "The paper's U-Net 256: 54 M parameters, for a GPU. Patches: multiples "
                 "of 256 px"),
}
PRESETS_3D = {
    "unet3d_tiny": ("Tiny 3D (1.2 M)", "1.2 M parameters, CPU or GPU. Patches: multiples of 4 planes x 16 px"),
    "unet3d_small": ("Small 3D (7.3 M), GPU", "7.3 M parameters, for a GPU. Patches: multiples of 8 planes x 32 px"),
}
DIMS = (
    ("2d", "2D", "2D: a network for planes; a stack is restored plane by plane"),
    ("2.5d", "2.5D", "2.5D: a 2D network that also sees the neighbouring planes (as channels): cheap, uses Z"),
    ("3d", "3D", "3D: a 3D network: volumes are restored as volumes (best for isotropic-ish stacks; slower)"),
)
MODEL_FILTER = "Pix2Pix models (*.safetensors)"
DEFAULT_MINUTES = 5.0
AUTO_TIP = "\n“auto”: decided from the data when the run starts (shown then)."


def default_model_path(task: str) -> Path:
    """Where a new model is saved unless the user chooses: ``~/napari-pix2pix-models/<task>-<time>.safetensors``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path.home() / "napari-pix2pix-models" / f"{task}-{stamp}.safetensors"


def _spin(lo: int, hi: int, value: int, step: int = 1, suffix: str = "") -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setSingleStep(step)
    if suffix:
        s.setSuffix(suffix)
    return s


def option_field(opt: Option) -> QWidget:
    """The Advanced field of an option of the table: a spin box (0 = "auto" where the default is None) or a list."""
    spec = dict(opt.widget)
    if opt.cli == "choice":
        if opt.name == "device":
            return device_combo()
        combo = QComboBox()
        for choice in opt.choices:
            combo.addItem(str(choice), choice)
        combo.setToolTip(opt.help)
        return combo
    auto = opt.default is None
    decimals = spec.get("decimals")
    field: QSpinBox | QDoubleSpinBox
    if decimals is None:
        field = QSpinBox()
        field.setRange(0 if auto else 1, int(spec.get("max", 1_000_000)))
    else:
        field = QDoubleSpinBox()
        field.setDecimals(int(decimals))
        field.setRange(0.0, float(spec.get("max", 1e6)))
    field.setSingleStep(spec.get("step", 1))
    if spec.get("suffix"):
        field.setSuffix(spec["suffix"])
    if auto:
        field.setSpecialValueText("auto")
        field.setValue(0)
    else:
        field.setValue(opt.default * spec.get("scale", 1))
    field.setToolTip(opt.help[0].upper() + opt.help[1:] + (AUTO_TIP if auto else ""))
    return field


def field_value(opt: Option, field: QWidget) -> Any:
    """The option's value in `field` (None for "auto")."""
    if isinstance(field, QComboBox):
        return field.currentData()
    value = field.value()  # type: ignore[attr-defined]
    if opt.default is None and not value:
        return None
    value = value / opt.widget.get("scale", 1)
    return int(value) if isinstance(field, QSpinBox) else float(value)


class TrainingSettings(QWidget):
    """How to train: recipe, starting model, duration, dimensions, network size, file, and the Advanced options."""

    dims_changed = Signal(str)  # "2d", "2.5d" or "3d"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._task = "denoise"
        self._recipe_combo = QComboBox()
        self._recipe_combo.setToolTip("\n".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
        self._start_combo = QComboBox()
        self._start_combo.setToolTip("Scratch trains a new network; a trained model (a bundled one or a file of "
                                     "yours) starts from what it knows and usually needs far less time.\n"
                                     "Automatic: the bundled denoiser for single-channel denoise and translate runs, "
                                     "scratch otherwise.")
        self._duration_combo = QComboBox()
        self._duration_combo.addItem("min", "minutes")
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
        for key, label, tip in DIMS:
            self._dims_combo.addItem(label, key)
            self._dims_combo.setItemData(self._dims_combo.count() - 1, tip, 3)  # 3: ToolTipRole
        self._dims_combo.setToolTip("\n".join(tip for _, _, tip in DIMS))
        self._context_spin = _spin(1, 8, 1, 1, " each side")
        self._context_spin.setToolTip("2.5D: how many neighbouring planes above and below the network sees")
        self._context_spin.setEnabled(False)
        self._preset_combo = QComboBox()
        self._fill_presets("2d")
        self._preset_combo.setToolTip("The size of a new network (a warm start keeps the starting model's)")
        self._output = PathEdit(self._browse_output, "default: ~/napari-pix2pix-models/…")
        self._output.setToolTip("Where the model is saved. A new run never overwrites a model: it adds -2, -3, …")
        in_widget = sorted((o for o in OPTIONS.values() if o.widget), key=lambda o: o.widget["row"])
        self._fields: dict[str, Any] = {o.name: option_field(o) for o in in_widget}  # from the table of options
        self._patch_spin, self._batch_spin = self._fields["patch_size"], self._fields["batch_size"]
        self._lr_spin, self._l1_spin = self._fields["lr"], self._fields["lambda_l1"]
        self._val_spin, self._val_every_spin = self._fields["val_fraction"], self._fields["val_every"]
        self._device_combo = self._fields["device"]
        self._resume_path = PathEdit(self._browse_checkpoint, "a checkpoint.safetensors to continue from")
        self._lay_out()
        for combo, slot in {self._preset_combo: self._on_preset, self._dims_combo: self._on_dims,
                            self._start_combo: self._on_start_from,
                            self._duration_combo: self._duration_stack.setCurrentIndex}.items():
            combo.currentIndexChanged.connect(slot)
        self._context_spin.valueChanged.connect(self._refresh_starts)
        RECENT.changed.connect(self._refresh_starts)

    def _lay_out(self) -> None:
        duration = QHBoxLayout()
        duration.addWidget(self._duration_stack, 1)
        duration.addWidget(self._duration_combo)
        dims = QHBoxLayout()
        dims.addWidget(self._dims_combo, 1)
        dims.addWidget(self._context_spin)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.setContentsMargins(0, 0, 0, 0)
        for label, w in (("Recipe", self._recipe_combo), ("Start from", self._start_combo), ("Train for", duration),
                         ("Dimensions", dims), ("Network size", self._preset_combo), ("Save as", self._output)):
            form.addRow(label, w)
        adv = QWidget()
        adv_form = QFormLayout(adv)
        adv_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        adv_form.setContentsMargins(8, 0, 0, 0)
        for name, field in self._fields.items():
            adv_form.addRow(OPTIONS[name].widget["label"], field)
        adv_form.addRow("Resume from", self._resume_path)
        self._advanced = Section("Advanced", adv)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self._advanced)

    # ------------------------------------------------------------------ choices
    def set_task(self, task: str) -> None:
        """The recipes and starting models for `task`."""
        self._task = task
        current = self._recipe_combo.currentData()
        self._recipe_combo.blockSignals(True)
        self._recipe_combo.clear()
        self._recipe_combo.addItem(f"Default ({DEFAULT_RECIPES[task]})", None)
        for r in RECIPES.values():
            if r.name != "noise2noise" or task == "denoise":
                self._recipe_combo.addItem(r.name.capitalize(), r.name)
                self._recipe_combo.setItemData(self._recipe_combo.count() - 1, r.description, 3)
        self._recipe_combo.setCurrentIndex(max(self._recipe_combo.findData(current), 0))
        self._recipe_combo.blockSignals(False)
        self._refresh_starts()

    def set_duration(self, *, steps: int | None = None, minutes: float | None = None) -> None:
        """Train for `steps` steps, or for `minutes` (the steps are derived from the measured speed)."""
        self._duration_combo.setCurrentIndex(self._duration_combo.findData("steps" if steps else "minutes"))
        if steps:
            self._steps_spin.setValue(int(steps))
        else:
            self._minutes_spin.setValue(float(minutes or DEFAULT_MINUTES))

    def set_start_from(self, ref: str | None) -> None:
        """Start from "scratch", "auto", a bundled model's name or a model file (added to the choices)."""
        ref = "auto" if ref is None else str(ref)
        i = self._start_combo.findData(ref)
        if i < 0 and ref not in ("auto", "scratch"):
            RECENT.add(ref)  # refreshes the choices
            i = self._start_combo.findData(str(Path(ref).resolve()))
        if i < 0:
            raise ValueError(f"{ref} cannot start a {self._task} run")
        self._start_combo.setCurrentIndex(i)

    def _refresh_starts(self, *_: Any) -> None:
        """The models a run of this task can start from: automatic, scratch, bundled ones, the user's files."""
        try:
            current = self._start_combo.currentData()
        except RuntimeError:  # widget closed: stop listening
            RECENT.changed.disconnect(self._refresh_starts)
            return
        self._start_combo.blockSignals(True)
        self._start_combo.clear()
        self._start_combo.addItem("Automatic", "auto")
        self._start_combo.setItemData(0, "A bundled model where it fits, else a new network", 3)
        self._start_combo.addItem("Scratch (a new network)", "scratch")
        dims = self._dims_combo.currentData()
        want = (3 if dims == "3d" else 2, self._context_spin.value() if dims == "2.5d" else 0)
        for info in model_choices(None):
            same_dims = (info.spatial_dims, info.z_context) == want or (  # a 2D model starts 2.5D and 3D runs too
                dims in ("2.5d", "3d") and info.spatial_dims == 2 and info.z_context == 0)
            if compatible_tasks(info.task, self._task) and same_dims:
                label = f"{info.name} (bundled)" if info.bundled else f"{Path(info.ref).name} ({info.task})"
                self._start_combo.addItem(label, info.ref)
                self._start_combo.setItemData(self._start_combo.count() - 1, info.tooltip, 3)
        self._start_combo.setCurrentIndex(max(self._start_combo.findData(current), 0))
        self._start_combo.blockSignals(False)
        self._on_start_from()

    def _fill_presets(self, dims: str) -> None:
        self._preset_combo.blockSignals(True)
        self._preset_combo.clear()
        for name, (text, tip) in (PRESETS_3D if dims == "3d" else PRESETS).items():
            self._preset_combo.addItem(text, name)
            self._preset_combo.setItemData(self._preset_combo.count() - 1, f"{name}: {tip}", 3)
        self._preset_combo.blockSignals(False)

    def _on_dims(self, *_: Any) -> None:
        dims = self._dims_combo.currentData()
        self._context_spin.setEnabled(dims == "2.5d")
        self._fill_presets(dims)
        volume = dims == "3d"
        self._patch_spin.setEnabled(not volume)
        self._patch_spin.setToolTip("3D: automatic (16 planes of 64² px, fewer planes for short stacks)" if volume
                                    else OPTIONS["patch_size"].help)
        if volume:
            self._patch_spin.setValue(0)
        self._refresh_starts()
        self._on_preset()
        self.dims_changed.emit(str(dims))

    def dims(self) -> str:
        """The chosen dimensions: "2d", "2.5d" or "3d"."""
        return str(self._dims_combo.currentData())

    def _on_start_from(self, *_: Any) -> None:
        warm = self._start_combo.currentData() not in ("auto", "scratch", None)
        self._preset_combo.setEnabled(not warm)  # a warm start keeps the starting model's network

    def _on_preset(self, *_: Any) -> None:
        multiple = TrainConfig(preset=self._preset_combo.currentData()).generator_config(1, 1).multiple
        self._patch_spin.setSingleStep(max(multiple, 32))
        if self._patch_spin.value() % multiple:
            self._patch_spin.setValue(0)

    def _browse_output(self, target: PathEdit) -> None:
        start = target.text() or str(default_model_path(self._task))
        path = save_file(self, "Save the model as", start, MODEL_FILTER)
        if path:
            target.setText(path)

    def _browse_checkpoint(self, target: PathEdit) -> None:
        start = target.text() or (str(Path(self._output.text()).with_suffix(".checkpoints")) if self._output.text()
                                  else str(Path.home()))
        path = open_file(self, "Resume from a training checkpoint", start, "Checkpoints (*.safetensors)")
        if path:
            target.setText(path)

    # ------------------------------------------------------------------ reading and showing
    def options(self) -> dict[str, Any]:
        """The chosen options by name (None: "auto"); the run's checkpoint interval follows its length."""
        by_time = self._duration_combo.currentData() == "minutes"
        start = self._start_combo.currentData()
        warm = start not in ("auto", "scratch", None)
        dims = self._dims_combo.currentData()
        out: dict[str, Any] = {name: field_value(OPTIONS[name], f) for name, f in self._fields.items()}
        out.update(
            recipe=self._recipe_combo.currentData(),
            preset=None if warm or start == "auto" else self._preset_combo.currentData(),
            start_from=start if start != "auto" else None,
            minutes=self._minutes_spin.value() if by_time else None,
            steps=None if by_time else self._steps_spin.value(),
            checkpoint_every=max(100, self._steps_spin.value() // 5) if not by_time else 500,
            spatial_dims=3 if dims == "3d" else None,
            z_context=self._context_spin.value() if dims == "2.5d" else 0,
        )
        if start == "auto" and self._preset_combo.currentIndex() > 0:  # a network size chosen: a new network
            out["preset"], out["start_from"] = self._preset_combo.currentData(), "scratch"
        return out

    def model_path(self, task: str) -> str:
        """The file chosen for the model (the default when none is)."""
        return self._output.text() or str(default_model_path(task))

    def show_plan(self, plan: Any) -> None:
        """What "auto" and the recipe decided, in the auto fields."""
        for name, value in (("patch_size", plan.patch_size), ("batch_size", plan.batch_size),
                            ("val_every", plan.val_every)):
            self._fields[name].setSpecialValueText(f"auto ({value})" if value else "auto")  # type: ignore[attr-defined]
        self._lr_spin.setSpecialValueText(f"auto ({plan.lr:g})" if plan.lr else "auto")
        l1 = plan.losses.lambda_l1
        self._l1_spin.setSpecialValueText(f"auto ({l1:g})" if l1 else "auto")

    def show_checkpoint(self, saved: TrainConfig) -> None:
        """Show a checkpoint's settings (the run continues with them)."""
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

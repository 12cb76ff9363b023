"""The Export dialog: pick a model, a format and a destination; the export runs in a worker thread.

Opened from the restoration widgets (the model chooser's “Export…”) and from the Train
widget. It runs :func:`..jobs.export_job`, which writes the file and checks it against our
own prediction; the result (with the measured differences) is shown in the dialog and as a
napari notification.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...engine.formats.export import EXTRA
from ...engine.formats.modelfile import ModelFileError
from ..choices import RECENT, ModelInfo, model_choices, model_info
from ..jobs import export_job
from .common import Outcome, StatusLabel, WorkerRunner, open_file, save_file

FORMATS = {  # format: (label, suffix, what it is for)
    "bioimageio": ("bioimage.io package (.zip)", ".zip",
                   "For Fiji/deepImageJ, ilastik, QuPath, bioimageio.core; napari-pix2pix reads it back exactly."),
    "onnx": ("ONNX (.onnx)", ".onnx", "For ONNX Runtime and other ONNX tools (inputs/outputs in network units)."),
    "torchscript": ("TorchScript (.pt)", ".pt", "For PyTorch without napari-pix2pix (network units in and out)."),
}
MODEL_FILTER = "Pix2Pix models (*.safetensors *.zip);;All files (*)"
NEEDS = {"bioimageio": ("bioimageio.spec", "onnx"), "onnx": ("onnx", "onnxruntime")}  # what each format imports


def missing_extra(fmt: str) -> bool:
    """Whether a package the format needs is not installed (found without importing it)."""
    import importlib.util

    return any(importlib.util.find_spec(name.split(".")[0]) is None for name in NEEDS.get(fmt, ()))


def default_destination(info: ModelInfo, fmt: str) -> Path:
    """Beside the model file (bundled models: ``~/napari-pix2pix-models``), with the format's suffix."""
    suffix = FORMATS[fmt][1]
    if info.bundled:
        return Path.home() / "napari-pix2pix-models" / f"{info.name}{suffix}"
    p = Path(info.ref)
    stem = p.name.removesuffix(".zip").removesuffix(".safetensors") if p.is_file() else p.name
    candidate = p.with_name(stem + suffix)
    return candidate if candidate != p else p.with_name(stem + "-export" + suffix)


class ExportDialog(QDialog):
    """Export a model as a bioimage.io package, ONNX or TorchScript.

    Parameters
    ----------
    model_ref : str, optional
        The model to preselect (a bundled name or a file path, as :class:`ModelInfo.ref`).
    parent : QWidget, optional
        The widget that opened it.
    """

    export_finished = Signal(str)  # "finished" or "failed" (not `done`: that is QDialog.done)

    def __init__(self, model_ref: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export a Pix2Pix model")
        self._runner = WorkerRunner(self._on_progress, self._on_finished)  # an export checks no stop event
        self._started = 0.0
        self._dest_edited = False
        self.report: Any = None  # the last ExportReport

        self._model_combo = QComboBox()
        self._model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self._model_combo.setMinimumContentsLength(18)
        self._browse_model_btn = QPushButton("Choose file…")
        self._format_combo = QComboBox()
        for key, (label, _, tip) in FORMATS.items():
            self._format_combo.addItem(label, key)
            self._format_combo.setItemData(self._format_combo.count() - 1, tip, 3)  # 3: ToolTipRole
        self._format_note = QLabel()
        self._format_note.setWordWrap(True)
        self._format_note.setStyleSheet("color: gray;")
        self._dest = QLineEdit()
        self._dest_btn = QPushButton("Browse…")
        self._check_box = QCheckBox("Check the export against napari-pix2pix's own prediction")
        self._check_box.setChecked(True)
        self._export_btn = QPushButton("Export")
        self._close_btn = QPushButton("Close")
        self._progress_bar = QProgressBar()
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._status = StatusLabel()

        model_row = QHBoxLayout()
        model_row.addWidget(self._model_combo, 1)
        model_row.addWidget(self._browse_model_btn)
        dest_row = QHBoxLayout()
        dest_row.addWidget(self._dest, 1)
        dest_row.addWidget(self._dest_btn)
        form = QFormLayout()
        form.addRow("Model", model_row)
        form.addRow("Format", self._format_combo)
        form.addRow("", self._format_note)
        form.addRow("Save as", dest_row)
        form.addRow("", self._check_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self._export_btn, 1)
        buttons.addWidget(self._close_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self._progress_bar)
        layout.addWidget(self._status)

        self._refresh_models(model_ref)
        self._on_format()
        self._model_combo.currentIndexChanged.connect(self._suggest_destination)
        self._format_combo.currentIndexChanged.connect(self._on_format)
        self._dest.textEdited.connect(self._mark_edited)
        self._browse_model_btn.clicked.connect(self._browse_model)
        self._dest_btn.clicked.connect(self._browse_destination)
        self._export_btn.clicked.connect(self._run)
        self._close_btn.clicked.connect(self.close)

    # ------------------------------------------------------------------ choices
    def _refresh_models(self, ref: str | None = None) -> None:
        from ..choices import SESSION

        infos = model_choices(None)
        ref = ref or SESSION.newest([i.ref for i in infos])  # no model given: the one trained last, if any
        self._model_combo.clear()
        if infos and ref is None:  # nothing to suggest: the user chooses (no bundled model picked for them)
            self._model_combo.addItem("(choose a model)", None)
        for info in infos:
            self._model_combo.addItem(info.label, info)
            self._model_combo.setItemData(self._model_combo.count() - 1, info.tooltip, 3)
        if not infos:
            self._model_combo.addItem("(no model yet: choose a file)", None)
        refs = [i.ref for i in infos]
        if ref is not None and ref in refs:
            self._model_combo.setCurrentIndex(refs.index(ref))

    def set_model(self, path_or_ref: str | Path) -> bool:
        """Choose a model (a bundled name, or a model file / package, which is remembered)."""
        ref = str(path_or_ref)
        refs = [self._model_combo.itemData(k).ref for k in range(self._model_combo.count())
                if self._model_combo.itemData(k) is not None]
        if ref not in refs:
            try:
                info = model_info(ref)
            except (OSError, ModelFileError) as e:
                self._status.error(str(e))
                return False
            RECENT.add(ref)
            ref = info.ref
            self._refresh_models(ref)
        else:
            self._model_combo.setCurrentIndex(refs.index(ref))
        self._suggest_destination()
        return True

    def _browse_model(self) -> None:
        path = open_file(self, "Choose a model to export", str(Path.home()), MODEL_FILTER)
        if path:
            self.set_model(path)

    def _on_format(self, *_: Any) -> None:
        fmt = self._format_combo.currentData()
        needs = f" Needs {EXTRA}." if missing_extra(fmt) else ""
        self._format_note.setText(FORMATS[fmt][2] + needs)
        self._suggest_destination()

    def set_format(self, fmt: str) -> None:
        """Choose the format ("bioimageio", "onnx" or "torchscript")."""
        i = self._format_combo.findData(fmt)
        if i < 0:
            raise ValueError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
        self._format_combo.setCurrentIndex(i)

    def _mark_edited(self, *_: Any) -> None:
        self._dest_edited = True

    def _suggest_destination(self, *_: Any) -> None:
        info = self._model_combo.currentData()
        fmt = self._format_combo.currentData()
        if info is None or fmt is None:
            return
        if self._dest_edited and self._dest.text():  # keep the user's name, with the format's suffix
            self._dest.setText(str(Path(self._dest.text()).with_suffix(FORMATS[fmt][1])))
        else:
            self._dest.setText(str(default_destination(info, fmt)))

    def _browse_destination(self) -> None:
        fmt = self._format_combo.currentData()
        label, suffix, _ = FORMATS[fmt]
        path = save_file(self, "Export the model as", self._dest.text(), f"{label} (*{suffix})")
        if path:
            self._dest.setText(path if path.endswith(suffix) else path + suffix)
            self._dest_edited = True

    def set_destination(self, path: str | Path) -> None:
        """Set the file to write."""
        self._dest.setText(str(path))
        self._dest_edited = True

    # ------------------------------------------------------------------ running
    def _prepare(self) -> dict[str, Any]:
        info = self._model_combo.currentData()
        if info is None:
            raise ValueError("Choose a model to export (“Choose file…”, or train one with the Train widget).")
        if not info.bundled and not Path(info.ref).exists():
            raise ValueError(f"The model file {info.ref} no longer exists; choose another one.")
        text = self._dest.text().strip()
        if not text:
            raise ValueError("Choose where to save the export (“Browse…”).")
        dest = Path(text).expanduser()
        if dest.exists() and dest.is_dir():
            raise ValueError(f"{dest} is a folder; give a file name.")
        if dest.resolve() == Path(info.ref).resolve():
            raise ValueError("The export would overwrite the model itself; choose another file name.")
        return {"info": info, "dest": dest, "format": self._format_combo.currentData(),
                "check": self._check_box.isChecked()}

    def _run(self) -> None:
        if self._runner.running:
            return
        try:
            job = self._prepare()
        except (ValueError, OSError) as e:
            self._status.error(str(e))
            return
        self._started = time.perf_counter()
        self._status.info(f"Exporting {job['info'].name} as {FORMATS[job['format']][0]}…")
        self._progress_bar.setRange(0, 0)
        self._export_btn.setEnabled(False)
        self._runner.start(export_job, job["info"].ref, job["dest"], job["format"], check=job["check"])

    def _on_progress(self, p: Any) -> None:
        if p.message:
            self._status.info(f"Export: {p.message}…")

    def _on_finished(self, outcome: Outcome) -> None:
        self._export_btn.setEnabled(True)
        self._progress_bar.setRange(0, 1)
        if outcome.result is None:
            self._progress_bar.setValue(0)
            self._status.error(f"Export failed: {outcome.error or 'stopped'}", failure=outcome.error is not None)
            self.export_finished.emit("failed")
            return
        self.report = report = outcome.result
        self._progress_bar.setValue(1)
        checks = "; ".join(f"{k} max |Δ| {v:.1e}" for k, v in report.max_abs_diff.items())
        text = (f"Exported in {time.perf_counter() - self._started:.1f} s: {report.path}"
                + (f". Checked against napari-pix2pix's prediction: {checks}" if checks else ""))
        self._status.info(text)
        self.adjustSize()  # the result line (with the measured differences) shows whole
        try:
            from napari.utils.notifications import show_info

            show_info(text)
        except Exception:  # noqa: BLE001 - a notification is a nicety
            pass
        self.export_finished.emit("finished")

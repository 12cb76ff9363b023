"""The restoration widgets' model chooser: bundled models and the user's files for a task, with a note on each.

It lists the models a widget can use (:func:`..choices.model_choices`), keeps the choice when
the list changes, chooses a model just trained or opened elsewhere, and checks a file the user
picks (:meth:`ModelChooser.use_file`) before it is remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from ...engine.formats.modelfile import ModelFileError
from ..choices import RECENT, SESSION, ModelInfo, model_choices, model_info, short_path
from . import common

MODEL_FILTER = "Pix2Pix models (*.safetensors *.zip);;All files (*)"


class ModelChooser(QWidget):
    """A model for `task`: a list, "Choose file…" and "Export…", and a note on the chosen one.

    Parameters
    ----------
    task : str
        The task the widget does (its bundled model is listed first).
    choices : callable, optional
        The models to list (default: the task's, :func:`..choices.model_choices`).
    accepts : callable, optional
        Why a model cannot be used (None if it can); default: it must do `task`.
    empty_note : str, optional
        What the note says when there is no model to choose.
    """

    changed = Signal()  # the chosen model changed
    message = Signal(str, bool)  # (text, is_error): for the widget's status line

    def __init__(self, task: str, title: str, *, choices: Callable[[], list[ModelInfo]] | None = None,
                 accepts: Callable[[ModelInfo], str | None] | None = None, empty_note: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._task, self._title = task, title
        self._choices = choices or (lambda: model_choices(task))
        self._accepts = accepts or self._same_task
        self._empty_note = empty_note or (
            f"No pretrained {task} model is bundled with this version of napari-pix2pix. "
            "Click “File…” to use a .safetensors model file, or train one with "
            "Plugins › Pix2Pix › Train (its model appears here when it is saved).")
        self._export_dialog: Any = None
        self._model_combo = QComboBox()
        self._model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self._model_combo.setMinimumContentsLength(10)
        self._model_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._browse_btn = QPushButton("File…")
        self._browse_btn.setToolTip("Use a .safetensors model file (e.g. one written by the Train widget) or a "
                                    "bioimage.io package (.zip) exported by napari-pix2pix")
        self._export_btn = QPushButton("Export…")
        self._export_btn.setToolTip("Export a model as a bioimage.io package (Fiji/deepImageJ, ilastik, QuPath), "
                                    "ONNX or TorchScript")
        self._model_note = QLabel()
        self._model_note.setWordWrap(True)
        row = QHBoxLayout()  # the list gets the width; the buttons beside it stay small
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self._model_combo, 1)
        row.addWidget(self._browse_btn)
        row.addWidget(self._export_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self._model_note)
        self._browse_btn.clicked.connect(self._browse)
        self._export_btn.clicked.connect(self.open_export)
        self._model_combo.currentIndexChanged.connect(self._update_note)
        self._model_combo.currentIndexChanged.connect(lambda *_: self.changed.emit())
        RECENT.changed.connect(self.refresh)
        self.refresh()

    def _same_task(self, info: ModelInfo) -> str | None:
        if info.task != self._task:
            return (f"“{info.name}” does {info.task}; the {self._title} widget needs a {self._task} model "
                    "(the Translate widget applies any model)")
        return None

    def current(self) -> ModelInfo | None:
        """The chosen model (None: there is none)."""
        info = self._model_combo.currentData()
        return info if isinstance(info, ModelInfo) else None

    def choose_bundled(self, name: str) -> bool:
        """Choose the bundled model `name` if it is listed; returns whether it is the choice now."""
        for i in range(self._model_combo.count()):
            info = self._model_combo.itemData(i)
            if isinstance(info, ModelInfo) and info.bundled and info.ref == name:
                if i != self._model_combo.currentIndex():
                    self._model_combo.setCurrentIndex(i)
                return True
        return False

    def why_not(self, info: ModelInfo) -> str | None:
        """Why this widget cannot use `info` (None if it can)."""
        return self._accepts(info)

    def refresh(self) -> None:
        """Re-list bundled and remembered models, keeping the current choice if it is still there.

        A model file that was not listed before (just trained, or opened in another widget)
        becomes the choice.
        """
        try:
            current = self._model_combo.currentData()
        except RuntimeError:  # widget closed: stop listening
            RECENT.changed.disconnect(self.refresh)
            return
        ref = current.ref if isinstance(current, ModelInfo) else None
        listed = {self._model_combo.itemData(i).ref for i in range(self._model_combo.count())
                  if isinstance(self._model_combo.itemData(i), ModelInfo)}
        infos = self._choices()
        added = [i.ref for i in infos if not i.bundled and i.ref not in listed]
        if listed and added:  # a model just trained or opened elsewhere: choose it
            ref = added[0]
        elif not listed:  # a new widget: the model trained last in this session, if it does this task
            ref = SESSION.newest([i.ref for i in infos]) or ref
        self._model_combo.blockSignals(True)
        self._model_combo.clear()
        for info in infos:
            self._model_combo.addItem(info.label, info)
            self._model_combo.setItemData(self._model_combo.count() - 1, info.tooltip, 3)  # 3: ToolTipRole
        if not infos:
            self._model_combo.addItem("(no model yet: choose a file)", None)
        refs = [i.ref for i in infos]
        if ref in refs:
            self._model_combo.setCurrentIndex(refs.index(ref))
        self._model_combo.blockSignals(False)
        self._update_note()
        self.changed.emit()

    def _update_note(self, *_: Any) -> None:
        info = self.current()
        if info is None:
            self._model_note.setText(self._empty_note)
            self._model_note.setStyleSheet("color: #e0a040;")
        else:
            self._model_note.setText(info.description or ("bundled model" if info.bundled else short_path(info.ref)))
            self._model_note.setStyleSheet("color: gray;")

    def _browse(self) -> None:
        start = str(RECENT.paths()[0].parent) if RECENT.paths() else str(Path.home())
        path = common.open_file(self, f"Choose a {self._task} model file", start, MODEL_FILTER)
        if path:
            self.use_file(path)

    def use_file(self, path: str | Path) -> bool:
        """Check a model file, remember it and choose it; report problems through :attr:`message`."""
        try:
            info = model_info(path)
        except (OSError, ModelFileError) as e:
            self.message.emit(str(e), True)
            return False
        why = self._accepts(info)
        if why:
            self.message.emit(why, True)
            return False
        RECENT.add(path)  # refreshes every widget's list
        i = [self._model_combo.itemData(k).ref if self._model_combo.itemData(k) else None
             for k in range(self._model_combo.count())].index(info.ref)
        self._model_combo.setCurrentIndex(i)
        self.message.emit(f"Model: {info.name} ({info.task}, {info.preset})", False)
        return True

    def open_export(self) -> Any:
        """Open the Export dialog with the chosen model; return it."""
        from .export import ExportDialog

        info = self.current()
        if self._export_dialog is None:
            self._export_dialog = ExportDialog(info.ref if info is not None else None, parent=self)
        elif info is not None:
            self._export_dialog.set_model(info.ref)
        self._export_dialog.show()
        self._export_dialog.raise_()
        return self._export_dialog

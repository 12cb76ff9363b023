"""The Train widget's data: what to learn (the task) and from what (layers or folders, pairs or clean images).

:meth:`TrainingData.source` checks what can be checked cheaply on the GUI thread (a layer is
chosen, shapes agree, folders exist and pair up) and returns the engine's data keywords
with the layers' data as they are (not copied, not computed): the pairs are prepared in the
worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QStackedWidget, QVBoxLayout, QWidget

from ...engine.core.tasks import TASKS
from ...engine.images.io import list_images, read_image
from ...engine.training.data import pair_folders
from .. import layers as lyr
from .common import NO_LAYER, LayerCombo, PathEdit, open_folder

if TYPE_CHECKING:
    import napari

TASK_LABELS = {"denoise": "Denoise", "inpaint": "Inpaint", "colorize": "Colorize", "translate": "Translate"}
TASK_TIPS = {"denoise": "Denoise: noisy → clean", "inpaint": "Inpaint: fill masked regions",
             "colorize": "Colorize: gray → colour", "translate": "Translate: any image → image (e.g. label-free → "
             "stained, low-SNR → high-SNR)"}
SOURCES = (
    ("layers", "Layers: input → target", "Two image layers: the input and its target, pixel for pixel"),
    ("clean", "Layer: clean images", "A layer of clean images: the task's inputs are synthesized (noise, holes, "
              "gray)"),
    ("folders", "Folders: input → target", "Two folders of images paired by file name"),
    ("clean_dir", "Folder: clean images", "A folder of clean images: the task's inputs are synthesized"),
)
NO_TARGET = "none — learn from the noisy images"
TARGET_HINTS = ("clean", "target", "reference", "ground", "truth", "gt", "high", "sharp", "colour", "color")


class TrainingData(QWidget):
    """The task and the training data (layers or folders; real pairs or clean images)."""

    task_changed = Signal(str)
    layer_changed = Signal()  # the layer the data come from (input or clean images) may have changed

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        from napari.layers import Image

        super().__init__(parent)
        self._viewer = viewer
        self._task_combo = QComboBox()
        for t in TASKS:
            self._task_combo.addItem(TASK_LABELS[t], t)
            self._task_combo.setItemData(self._task_combo.count() - 1, TASK_TIPS[t], 3)  # 3: ToolTipRole
        self._task_combo.setToolTip("What the model learns to do:\n" + "\n".join(TASK_TIPS.values()))
        self._source_combo = QComboBox()
        for key, label, tip in SOURCES:
            self._source_combo.addItem(label, key)
            self._source_combo.setItemData(self._source_combo.count() - 1, tip, 3)
        self._source_combo.setToolTip("Real pairs (an input and its target), or clean images from which the "
                                      "task's inputs are synthesized (noise, holes, gray)")
        self._input_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._input_combo.setToolTip("The degraded images the model will be given (e.g. noisy)")
        self._target_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)", none=NO_TARGET)
        self._target_combo.setToolTip("What the model should make of them (e.g. clean), pixel for pixel.\n"
                                      f"“{NO_TARGET}”: a denoiser learns from the noisy input alone (the "
                                      "noise2self recipe: no clean image, no second acquisition needed)")
        self._clean_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._input_dir = PathEdit(self._browse_folder, "folder of input images")
        self._target_dir = PathEdit(self._browse_folder, "folder of targets (same names)")
        self._clean_dir = PathEdit(self._browse_folder, "folder of clean images")
        self._source_stack = QStackedWidget()
        pages: list[list[tuple[str, QWidget]]] = [
            [("Input", self._input_combo), ("Target", self._target_combo)],
            [("Clean", self._clean_combo)],
            [("Inputs", self._input_dir), ("Targets", self._target_dir)],
            [("Clean", self._clean_dir)],
        ]
        for rows in pages:
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
            for label, w in rows:
                form.addRow(label, w)
            self._source_stack.addWidget(page)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow("Task", self._task_combo)
        form.addRow("Data", self._source_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self._source_stack)
        self._source_combo.currentIndexChanged.connect(self._source_stack.setCurrentIndex)
        self._task_combo.currentIndexChanged.connect(self._on_task)
        self._input_combo.currentIndexChanged.connect(self.preselect_target)
        for combo in (self._input_combo, self._clean_combo):  # a sample's layer brings its task
            combo.currentIndexChanged.connect(lambda *_, c=combo: self._follow_sample(c))
        for box in (self._input_combo, self._clean_combo, self._source_combo):
            box.currentIndexChanged.connect(lambda *_: self.layer_changed.emit())
        self._follow_sample(self._input_combo)

    def task(self) -> str:
        """The chosen task."""
        return str(self._task_combo.currentData())

    def set_task(self, task: str) -> None:
        """Choose `task` (the sources follow)."""
        self._task_combo.setCurrentIndex(max(self._task_combo.findData(task), 0))

    def _on_task(self, *_: Any) -> None:
        task, source = self.task(), self._source_combo.currentData()
        if task == "inpaint" and source in ("layers", "folders"):  # masks are synthesized from clean images
            self._source_combo.setCurrentIndex(1 if source == "layers" else 3)
            self._prefer_sample(self._clean_combo, task, ("clean",))
        elif task == "translate" and source in ("clean", "clean_dir"):
            self._source_combo.setCurrentIndex(0 if source == "clean" else 2)
        self.task_changed.emit(task)

    def layer(self) -> Any:
        """The layer the data come from (the input, or the clean images), or None (folders, nothing chosen)."""
        kind = self._source_combo.currentData()
        try:
            return {"layers": self._input_combo, "clean": self._clean_combo}[kind].layer() \
                if kind in ("layers", "clean") else None
        except RuntimeError:  # the widget is gone
            return None

    def _follow_sample(self, combo: LayerCombo) -> None:
        """A layer of one of the plugin's samples chosen: its task (the Translate sample trains Translate)."""
        try:
            layer = combo.layer()
        except RuntimeError:
            return
        task = _sample_meta(layer).get("task")
        if task in TASKS and task != self.task():
            self.set_task(str(task))

    def _prefer_sample(self, combo: LayerCombo, task: str, roles: tuple[str, ...]) -> None:
        """Choose a layer of `task`'s sample with one of `roles` in `combo`, if one is open and none is chosen."""
        try:
            if _sample_meta(combo.layer()).get("role") in roles:
                return
            for i in range(combo.count()):
                name = combo.itemData(i)
                if name in self._viewer.layers:
                    meta = _sample_meta(self._viewer.layers[name])
                    if meta.get("task") == task and meta.get("role") in roles:
                        combo.set_layer(name)
                        return
        except RuntimeError:
            return

    def preselect_target(self, *_: Any) -> None:
        """A target other than the input: a layer whose name or sample role says so, else the next one."""
        try:
            a = self._input_combo.currentData()
            if a is None or self._target_combo.currentData() not in (a, None):  # ("none" is kept)
                return
            names = [self._target_combo.itemData(i) for i in range(self._target_combo.count())]
            others = [n for n in names if n is not None and n != a and n in self._viewer.layers]
        except RuntimeError:  # the widget is gone
            return
        if not others:
            return

        def score(name: str) -> int:
            layer = self._viewer.layers[name]
            role = _sample_meta(layer).get("role")
            return 2 * (role in ("clean", "target")) + any(h in name.lower() for h in TARGET_HINTS)

        self._target_combo.set_layer(max(others, key=score))

    def _browse_folder(self, target: PathEdit) -> None:
        path = open_folder(self, "Choose a folder of images", target.text())
        if path:
            target.setText(path)

    def source(self) -> tuple[dict[str, Any], Any]:
        """(the engine's data keywords, the layer the data come from or None); raises ValueError naming a problem.

        Layer data are handed on as they are (a numpy array is not copied, a dask array not
        computed): the worker prepares the pairs.
        """
        kind, task = self._source_combo.currentData(), self.task()
        if task == "inpaint" and kind in ("layers", "folders"):
            raise ValueError("Inpaint models are trained from clean images (a layer or a folder): the holes are "
                             "cut into them for each step.")
        if kind == "layers":
            return self._layer_pair(task)
        if kind == "clean":
            c = self._clean_combo.layer()
            if c is None:
                raise ValueError("Choose the layer of clean images to synthesize training pairs from.")
            if task == "translate":
                raise ValueError("Translate models need real pairs: choose input and target layers or folders.")
            xc, cc = lyr.image_array(c)
            if task == "colorize" and cc is None:
                raise ValueError(f"A colorizer learns colour from RGB images: “{c.name}” is grayscale.")
            return {"clean": xc, "channel_axis": cc}, c
        if kind == "folders":
            din, dtg = self._input_dir.text(), self._target_dir.text()
            if not din or not dtg:
                raise ValueError("Choose both an input folder and a target folder.")
            for d in (din, dtg):
                _check_folder(d)
            pair_folders(din, dtg)  # names every unpaired file
            rgb = _folder_is_rgb(din) or _folder_is_rgb(dtg)
            return {"input_dir": din, "target_dir": dtg, "channel_axis": -1 if rgb else None}, None
        dc = self._clean_dir.text()
        if not dc:
            raise ValueError("Choose the folder of clean images.")
        if task == "translate":
            raise ValueError("Translate models need real pairs: choose input and target layers or folders.")
        _check_folder(dc)
        return {"clean_dir": dc, "channel_axis": -1 if _folder_is_rgb(dc) else None}, None

    def _layer_pair(self, task: str) -> tuple[dict[str, Any], Any]:
        a, b = self._input_combo.layer(), self._target_combo.layer()
        if a is not None and self._target_combo.currentData() == NO_LAYER:  # noisy images alone
            if task != "denoise":
                raise ValueError(f"Only a denoiser learns from the images alone: a {task} model needs a target "
                                 "layer (what it should make of the input).")
            xa, ca = lyr.image_array(a)
            return {"input": xa, "channel_axis": ca}, a
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
        if task == "colorize" and cb is None:
            raise ValueError(f"A colorizer learns colour: the target “{b.name}” is grayscale. Choose an RGB "
                             "target layer, or train from RGB clean images (the gray input is synthesized).")
        channel_axis = -1 if (ca is not None or cb is not None) else None
        return {"input": xa, "target": xb, "channel_axis": channel_axis}, a


def _sample_meta(layer: Any) -> dict[str, Any]:
    """What the plugin's sample data say of a layer ({"task": ..., "role": ...}), or {}."""
    meta = (getattr(layer, "metadata", None) or {}).get("napari_pix2pix_sample") if layer is not None else None
    return meta if isinstance(meta, dict) else {}


def _spatial(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, ...]:
    """Shape without an RGB axis."""
    return tuple(shape[:-1]) if channel_axis is not None else tuple(shape)


def _folder_is_rgb(folder: str) -> bool:
    """Whether the folder's first image is RGB(A) (read channel-last)."""
    first = list_images(Path(folder).expanduser())[0]
    shape = read_image(first).shape
    return len(shape) == 3 and shape[-1] in (3, 4)


def _check_folder(folder: str) -> None:
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise ValueError(f"The folder {folder} does not exist.")
    if not list_images(p):
        raise ValueError(f"The folder {folder} holds no TIFF/PNG/JPEG images.")
